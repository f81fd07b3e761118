package credentials

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is the per-client-IP rate limit of http.rate_limit (burst twice the rate). IPv6
// clients are limited per /64, which one subscriber typically holds whole. Idle entries are
// swept as new clients arrive, so memory follows the clients of the last minute.
type limiter struct {
	rate  rate.Limit
	burst int

	mu        sync.Mutex
	clients   map[netip.Addr]*client
	lastSweep time.Time
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

// sweepEvery is how often idle clients are forgotten; an idle limiter is full again long
// before (burst/rate is 2 seconds).
const sweepEvery = time.Minute

func newLimiter(perSecond float64) *limiter {
	if perSecond <= 0 {
		return nil // off
	}
	burst := max(int(2*perSecond), 1)
	return &limiter{rate: rate.Limit(perSecond), burst: burst, clients: map[netip.Addr]*client{}}
}

// allow takes one request of ip; when refused, retryAfter says when one would pass.
func (l *limiter) allow(ip netip.Addr, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	if ip.Is6() {
		ip = netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery {
		for a, c := range l.clients {
			if now.Sub(c.seen) >= sweepEvery {
				delete(l.clients, a)
			}
		}
		l.lastSweep = now
	}
	c := l.clients[ip]
	if c == nil {
		c = &client{lim: rate.NewLimiter(l.rate, l.burst)}
		l.clients[ip] = c
	}
	c.seen = now
	r := c.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
