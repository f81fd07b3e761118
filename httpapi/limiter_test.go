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
	for _, off := range []*RateLimiter{NewRateLimiter(0), nil} {
		for range 10 {
			if ok, _ := off.Allow(a, now); !ok {
				t.Fatalf("rate 0 refused a request")
			}
		}
	}
}

// TestRateLimiterSetRate: a reload's new rate applies to clients already seen, turning the
// limit off lets everyone through, and turning it on again limits from a full burst.
func TestRateLimiterSetRate(t *testing.T) {
	l := NewRateLimiter(1) // burst 2
	a := ClientOf(netip.MustParseAddr("198.51.100.1"))
	now := time.Unix(1000, 0)
	take := func() (n int) {
		for range 100 {
			if ok, _ := l.Allow(a, now); ok {
				n++
			}
		}
		return n
	}
	if n := take(); n != 2 {
		t.Fatalf("rate 1: %d passed at once, want the burst of 2", n)
	}
	l.SetRate(10) // burst 20: the bucket refills at the new rate
	now = now.Add(time.Second)
	if n := take(); n != 10 {
		t.Errorf("a second after raising to 10/s: %d passed, want 10", n)
	}
	l.SetRate(0)
	if n := take(); n != 100 {
		t.Errorf("limit off: %d of 100 passed", n)
	}
	l.SetRate(1)
	if n := take(); n != 2 {
		t.Errorf("limit on again: %d passed at once, want the burst of 2", n)
	}
}
