package signaling_test

import (
	"testing"

	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

// TestReload: a reload puts rate_limit (on connections already open), max_conns_per_ip (new
// connections) and max_room_size (new joins) in force without closing anything; an invalid
// section is refused and changes nothing.
func TestReload(t *testing.T) {
	s := start(t, serverOptions{})
	cfg := testConfig()
	a, _ := join(t, s, "r", nil)
	b, _ := join(t, s, "r", nil)
	c, _ := join(t, s, "r", nil)

	next := cfg
	next.RateLimit, next.MaxConnsPerIP, next.MaxRoomSize = 1, 3, 3
	if err := s.Reload(next); err != nil {
		t.Fatalf("reload: %v", err)
	}
	// rate_limit 1 (burst 2) on a's open connection: ten pings at once are not all answered.
	limited := 0
	for range 10 {
		if err := a.Ping(ctx(t)); isCode(err, "rate-limited") {
			limited++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if limited == 0 {
		t.Errorf("ten pings at once after rate_limit 1: none rate-limited")
	}
	// max_conns_per_ip 3: a fourth session from this address is refused, the three stay.
	if _, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{}); !isCode(err, "rate-limited") {
		t.Errorf("a fourth connection after max_conns_per_ip 3: got %v, want 429", err)
	}
	next.MaxConnsPerIP = 0
	if err := s.Reload(next); err != nil {
		t.Fatal(err)
	}
	d := dial(t, s, sigclient.Options{})
	// max_room_size 3: the fourth join is refused; then 2: the three in the room stay.
	if _, err := d.Join(ctx(t), "r", nil); !isCode(err, "room-full") {
		t.Errorf("a fourth join after max_room_size 3: got %v, want room-full", err)
	}
	next.MaxRoomSize, next.RateLimit = 2, 0
	if err := s.Reload(next); err != nil {
		t.Fatal(err)
	}
	if err := b.Signal(c.Welcome().Peer, map[string]any{"still": "here"}); err != nil {
		t.Fatal(err)
	}
	if m := expect(t, c, "signal"); m.From != b.Welcome().Peer {
		t.Errorf("signal after lowering max_room_size: from %q, want %q", m.From, b.Welcome().Peer)
	}
	for range 20 {
		if err := a.Ping(ctx(t)); err != nil {
			t.Fatalf("rate_limit 0 again: %v", err)
		}
	}

	bad := cfg
	bad.MaxRoomSize = 1
	if err := s.Reload(bad); err == nil {
		t.Errorf("max_room_size 1 reloaded without an error")
	}
	if _, err := d.Join(ctx(t), "r", nil); !isCode(err, "room-full") {
		t.Errorf("after a refused reload, max_room_size 2 stays: got %v, want room-full", err)
	}
}
