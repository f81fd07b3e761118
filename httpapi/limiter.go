package httpapi

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimiter is a per-client rate limit (http.rate_limit: a rate, burst twice that). Idle
// clients are swept as new ones arrive, so memory follows the clients of the last minute. A
// rate of 0, or a nil *RateLimiter, allows everything.
type RateLimiter struct {
	mu        sync.Mutex
	rate      rate.Limit // 0: no limit
	burst     int
	clients   map[Client]*bucket
	lastSweep time.Time
	last      time.Time // the latest time Allow was given
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// sweepEvery is how often idle clients are forgotten; an idle bucket is full again long
// before (burst/rate is 2 seconds).
const sweepEvery = time.Minute

// NewRateLimiter limits every client to perSecond requests (burst twice that); 0 is no limit.
func NewRateLimiter(perSecond float64) *RateLimiter {
	l := &RateLimiter{clients: map[Client]*bucket{}}
	l.SetRate(perSecond)
	return l
}

// SetRate changes the limit (a configuration reload): every client's bucket takes the new
// rate and burst from now on, keeping what it has used.
func (l *RateLimiter) SetRate(perSecond float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if perSecond <= 0 {
		l.rate, l.burst = 0, 0
		clear(l.clients)
		return
	}
	l.rate, l.burst = rate.Limit(perSecond), max(int(2*perSecond), 1)
	for _, b := range l.clients {
		b.lim.SetLimitAt(l.last, l.rate)
		b.lim.SetBurstAt(l.last, l.burst)
	}
}

// Allow takes one request of c at now; when refused, retryAfter says when one would pass.
func (l *RateLimiter) Allow(c Client, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate == 0 {
		return true, 0
	}
	l.last = now
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
