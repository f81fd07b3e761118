package signaling

import "time"

// Clock is where signaling reads time and starts timers: grace periods, pings, fences,
// heartbeats, forwarding windows, the outage summary. Tests pass a clock they move by hand,
// so timer-driven behaviour is tested without sleeping.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer of a Clock.
type Timer interface {
	// Stop prevents the call if it has not happened yet; it reports whether it did.
	Stop() bool
	// Reset makes the timer fire d from now.
	Reset(d time.Duration) bool
}

// RealClock is the system clock.
type RealClock struct{}

// Now implements Clock.
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc implements Clock.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// every calls f every d on clock until stop is closed, each call after the previous one
// ended: the loops of the bus (heartbeat, reap) without a ticker.
func every(clock Clock, d time.Duration, stop <-chan struct{}, f func()) {
	tick := make(chan struct{}, 1)
	t := clock.AfterFunc(d, func() { tick <- struct{}{} })
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick:
		}
		f()
		t.Reset(d)
	}
}
