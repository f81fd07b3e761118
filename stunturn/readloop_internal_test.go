//go:build linux

package stunturn

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestReadLoopGrows: a read loop holds no buffer until a datagram is there (the burst below is
// sent before the first read: found, not waited for), starts with one and grows its batch once
// reads fill it, and every datagram comes out whole and in order, with its sender, across the
// growth; the ones handle keeps are handed over, the others stay in the loop.
func TestReadLoopGrows(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := newRawUDP(conn)
	if err != nil {
		t.Fatal(err)
	}
	var skipped []string
	l := newReadLoop(raw, 1, 4, 4, relayMTU, func(b []byte, n int, _ netip.AddrPort) bool {
		if string(b[4:4+n]) == "skip" {
			skipped = append(skipped, "skip")
			return false
		}
		return true
	})
	if len(l.msgs) != 0 {
		t.Fatalf("starts with %d buffers, want none", len(l.msgs))
	}
	sender, err := net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	const total = 41 // the last one is kept, so every skipped one before it is read
	for i := range total {
		msg := fmt.Sprintf("datagram %02d", i)
		if i%5 == 4 {
			msg = "skip"
		}
		if _, err := sender.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	from := sender.LocalAddr().(*net.UDPAddr).AddrPort()
	for i := range total {
		if i%5 == 4 {
			continue
		}
		b, src, err := l.next()
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("datagram %02d", i); string(b) != want || src != from {
			t.Fatalf("got %q from %v, want %q from %v", b, src, want, from)
		}
	}
	if len(skipped) != 8 {
		t.Errorf("handle skipped %d datagrams, want 8", len(skipped))
	}
	if len(l.msgs) != 4 {
		t.Errorf("after a burst the batch is %d, want 4", len(l.msgs))
	}
}

// TestReadLoopWakesUp: a datagram that arrives while the loop still hands out an earlier batch
// is read, not left in the socket until the next one comes (each next resets the poller's
// readiness, so the loop must not trust an earlier "the socket was empty").
func TestReadLoopWakesUp(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := newRawUDP(conn)
	if err != nil {
		t.Fatal(err)
	}
	l := newReadLoop(raw, 4, 4, 0, relayMTU, func([]byte, int, netip.AddrPort) bool { return true })
	sender, err := net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	send := func(s string) {
		if _, err := sender.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	next := func(want string) {
		t.Helper()
		got := make(chan string, 1)
		go func() {
			b, _, err := l.next()
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(b)
		}()
		select {
		case s := <-got:
			if s != want {
				t.Fatalf("got %q, want %q", s, want)
			}
		case <-time.After(10 * time.Second):
			_ = conn.Close() // ends the read
			t.Fatalf("%q stayed in the socket: the loop did not wake up", want)
		}
	}
	send("one")
	send("two")
	next("one") // reads both, hands out the first
	send("three")
	next("two")
	next("three")
}
