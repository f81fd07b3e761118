package stunturn

import (
	"net"
	"net/netip"
	"testing"
)

func TestPeerPolicy(t *testing.T) {
	c := DefaultConfig()
	c.RelayPortMin, c.RelayPortMax = 50000, 50999
	c.AllowedPeerCIDRs = mustPrefixes("10.9.0.0/16", "0.0.0.0/8", "fd00::/8")
	c.DeniedPeerCIDRs = mustPrefixes("198.51.100.0/24", "8.8.8.0/24")
	held := &portSet{}
	held.add(50500)
	held.add(40000) // outside the configured range: what counts is that icebox holds it
	p := newPeerPolicy(c, held, netip.MustParseAddr("203.0.113.10"))
	for _, tc := range []struct {
		peer   string
		permit string // reason for a permission (IP only)
		packet string // reason for a datagram to/from peer
	}{
		{"93.184.216.34:443", "", ""},
		{"[::ffff:93.184.216.34]:443", "", ""},
		{"10.1.2.3:5000", refusedDenied, refusedDenied},
		{"10.9.8.7:5000", "", ""},                      // allowed_peer_cidrs carves it out
		{"[::ffff:10.9.8.7]:5000", "", ""},             // in its IPv4-mapped form too
		{"0.0.0.0:5000", refusedDenied, refusedDenied}, // never allowed
		{"0.3.3.3:5000", refusedDenied, refusedDenied},
		{"8.8.8.8:53", refusedDenied, refusedDenied}, // denied_peer_cidrs
		{"127.0.0.1:50000", refusedDenied, refusedDenied},
		{"203.0.113.10:50500", "", ""},             // own relay address, a port icebox holds
		{"203.0.113.10:40000", "", ""},             // held, even if outside the range today
		{"203.0.113.10:50501", "", refusedOwnPort}, // in the relay range, but not icebox's
		{"203.0.113.10:22", "", refusedOwnPort},    // own relay address, any other port
		{"203.0.113.10:51000", "", refusedOwnPort},
		{"[::ffff:203.0.113.10]:22", "", refusedOwnPort},
		{"203.0.113.11:50500", refusedDenied, refusedDenied}, // the rest of its range stays denied
		{"[::1]:50000", refusedIPv6, refusedIPv6},
		{"[fd00::1]:50000", refusedIPv6, refusedIPv6}, // an IPv6 exception cannot be used by an IPv4 relay
		{"[2002:7f00:1::]:50000", refusedIPv6, refusedIPv6},
		{"[64:ff9b::7f00:1]:50000", refusedIPv6, refusedIPv6},
		{"[2600::1]:443", refusedIPv6, refusedIPv6},
	} {
		ap := netip.MustParseAddrPort(tc.peer)
		if got := p.permit(ap.Addr()); got != tc.permit {
			t.Errorf("permit(%s): got %q, want %q", ap.Addr(), got, tc.permit)
		}
		if got := p.packet(ap); got != tc.packet {
			t.Errorf("packet(%s): got %q, want %q", ap, got, tc.packet)
		}
	}
}

// TestRelayConnDropsDenied: a relay socket writes nothing toward a denied address and reports
// success to pion (an error would be logged per packet), and counts the drop.
func TestRelayConnDropsDenied(t *testing.T) {
	c := DefaultConfig()
	c.RelayAddress = "127.0.0.1"
	c.AllowedPeerCIDRs = mustPrefixes("127.0.0.2/32")
	a, _, _ := testRelays(c, "192.0.2.200")
	pc, _, err := a.AllocatePacketConn("udp4", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, to := range []string{"10.0.0.1:9", "169.254.169.254:80", "127.0.0.1:9", "[::ffff:127.0.0.1]:9", "[::1]:9", "0.0.0.0:9"} {
		n, err := pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
		if n != 1 || err != nil {
			t.Errorf("WriteTo %s: got %d, %v; want a silent drop", to, n, err)
		}
	}
	st := &pc.(*relayConn).stats.toPeer
	if got := st.packets.Load(); got != 0 {
		t.Errorf("packets written: got %v, want 0", got)
	}
	if got := st.dropped.Load(); got != 6 {
		t.Errorf("packets dropped: got %v, want 6", got)
	}
	if _, err := pc.WriteTo([]byte("x"), &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 9}); err != nil {
		t.Errorf("WriteTo a non-UDP address: %v", err)
	}
}

func TestRelayAllocatorReleasesPorts(t *testing.T) {
	c := DefaultConfig()
	c.RelayAddress = "127.0.0.1"
	c.TotalQuota = 1
	a, _, _ := testRelays(c, "127.0.0.1")
	pc, addr, err := a.AllocatePacketConn("udp4", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := addr.(*net.UDPAddr); !got.IP.Equal(net.IPv4(127, 0, 0, 1)) || got.Port < 49152 {
		t.Errorf("relayed address %v: want the public IP and a relay port", got)
	}
	if _, _, err := a.AllocatePacketConn("udp4", 0); err != ErrTotalQuota {
		t.Errorf("second allocation: got %v, want ErrTotalQuota", err)
	}
	pc.Close()
	pc.Close() // twice: released once
	pc2, _, err := a.AllocatePacketConn("udp4", 0)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	pc2.Close()
	if _, _, err := a.AllocateConn("tcp4", 0); err == nil {
		t.Errorf("AllocateConn: want an error, TCP relays are not offered")
	}
}

// TestPeerPolicyReloadDenied: a reload adding a range to turn.denied_peer_cidrs turns a
// verdict the fast path took when the channel was bound (or the permission made) into a refusal
// for every datagram from then on; removing it lets the peer through again. (Judged without
// sending: the peer is a public address, which tests never send to.)
func TestPeerPolicyReloadDenied(t *testing.T) {
	c := DefaultConfig()
	p := newPeerPolicy(c, &portSet{}, netip.MustParseAddr("203.0.113.10"))
	peer := netip.MustParseAddrPort("93.184.216.34:5000")
	var v peerVerdict
	v.judge(p, peer)
	if !v.pass(p, peer) || p.packet(peer) != "" {
		t.Fatalf("93.184.216.34 before the reload: refused")
	}
	c.DeniedPeerCIDRs = mustPrefixes("93.184.216.0/24")
	p.set(c)
	v.judge(p, peer) // what Server.Reload does for every binding and permission
	if v.pass(p, peer) || p.packet(peer) != refusedDenied || p.permit(peer.Addr()) != refusedDenied {
		t.Errorf("93.184.216.34 after denied_peer_cidrs 93.184.216.0/24: still passes")
	}
	c.DeniedPeerCIDRs = nil
	p.set(c)
	v.judge(p, peer)
	if !v.pass(p, peer) {
		t.Errorf("93.184.216.34 after the range was removed again: refused")
	}
}
