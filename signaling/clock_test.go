package signaling

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// FakeClock is a Clock that moves only when the test says: timers fire, each on its own
// goroutine as with time.AfterFunc, when Advance passes their time.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed (and replaced) when a timer starts
}

type fakeTimer struct {
	c      *FakeClock
	at     time.Time
	d      time.Duration
	f      func()
	active bool
}

// NewFakeClock starts at a fixed time.
func NewFakeClock() *FakeClock {
	return &FakeClock{now: time.Unix(1_800_000_000, 0), changed: make(chan struct{})}
}

// started tells waiters that a timer started; c.mu is held.
func (c *FakeClock) started() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Now implements Clock.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements Clock.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), d: d, f: f, active: true}
	c.timers = append(c.timers, t)
	c.started()
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.at, t.d, t.active = t.c.now.Add(d), d, true
	if !slices.Contains(t.c.timers, t) {
		t.c.timers = append(t.c.timers, t)
	}
	t.c.started()
	return was
}

// Advance moves the clock by d and fires every timer whose time came, in time order.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.active && !t.at.After(c.now):
			t.active = false
			due = append(due, t)
		case t.active:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	slices.SortFunc(due, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		go t.f()
	}
}

// pending is the number of running timers that were set for d, and a channel closed when
// the next one starts.
func (c *FakeClock) pending(d time.Duration) (int, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.active && t.d == d {
			n++
		}
	}
	return n, c.changed
}

// WaitPending waits until n timers set for d are running (the code under test reached the
// point where it starts them), or fails the test after 10 s.
func (c *FakeClock) WaitPending(t testing.TB, d time.Duration, n int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		got, changed := c.pending(d)
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %d timers of %v (%d running)", n, d, got)
		}
	}
}
