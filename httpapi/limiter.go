package httpapi

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimiter is a per-client rate limit (http.rate_limit: a rate, burst twice that). Idle
// clients are swept as new ones arrive, so memory follows the clients of the last minute. A
// nil *RateLimiter allows everything.
type RateLimiter struct {
	rate  rate.Limit
	burst int

	mu        sync.Mutex
	clients   map[Client]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// sweepEvery is how often idle clients are forgotten; an idle bucket is full again long
// before (burst/rate is 2 seconds).
const sweepEvery = time.Minute

// NewRateLimiter limits every client to perSecond requests (burst twice that); 0 is no limit
// (nil).
func NewRateLimiter(perSecond float64) *RateLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &RateLimiter{rate: rate.Limit(perSecond), burst: max(int(2*perSecond), 1), clients: map[Client]*bucket{}}
}

// Allow takes one request of c at now; when refused, retryAfter says when one would pass.
func (l *RateLimiter) Allow(c Client, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery {
		for k, b := range l.clients {
			if now.Sub(b.seen) >= sweepEvery {
				delete(l.clients, k)
			}
		}
		l.lastSweep = now
	}
	b := l.clients[c]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.clients[c] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
