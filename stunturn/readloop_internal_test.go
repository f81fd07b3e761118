package stunturn

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// TestReadLoopGrows: a read loop that starts with one buffer grows its batch once reads fill
// it, and every datagram comes out whole and in order, with its sender, across the growth;
// the ones handle keeps are handed over, the others stay in the loop.
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
	if len(l.msgs) != 1 {
		t.Fatalf("starts with %d buffers, want 1", len(l.msgs))
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
