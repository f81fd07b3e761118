package httpapi

import (
	"net/netip"
	"testing"
	"time"
)

func TestRateLimiter(t *testing.T) {
	l := NewRateLimiter(2) // burst 4
	now := time.Unix(1_800_000_000, 0)
	a := ClientOf(netip.MustParseAddr("198.51.100.1"))
	for i := range 4 {
		if ok, _ := l.Allow(a, now); !ok {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	ok, wait := l.Allow(a, now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("beyond the burst: got %v, wait %v; want refused with a wait of at most 1/rate", ok, wait)
	}
	if ok, _ := l.Allow(a, now.Add(wait)); !ok {
		t.Errorf("after the wait: refused")
	}
	// IPv6 clients share a bucket per /64.
	b1, b2 := ClientOf(netip.MustParseAddr("2001:db8:1:2::1")), ClientOf(netip.MustParseAddr("2001:db8:1:2:ffff::9"))
	for range 4 {
		l.Allow(b1, now)
	}
	if ok, _ := l.Allow(b2, now); ok {
		t.Errorf("another address of the same /64 got a fresh bucket")
	}
	// Idle clients are forgotten.
	l.Allow(ClientOf(netip.MustParseAddr("198.51.100.2")), now.Add(2*sweepEvery))
	if n := len(l.clients); n != 1 {
		t.Errorf("clients after a sweep: got %d, want 1", n)
	}
	var off *RateLimiter = NewRateLimiter(0)
	if off != nil {
		t.Errorf("rate 0: want no limiter")
	} else if ok, _ := off.Allow(a, now); !ok {
		t.Errorf("rate 0 refused a request")
	}
}
