package stunturn_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/stunturn/turnclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// deniedSamples has an address of every built-in deny-list range and the forms of loopback
// and cloud metadata that slip past naive checks. None of them ever receives a packet: the
// test only asks for permissions, which must be refused before anything could be sent.
var deniedSamples = []struct {
	addr string
	ipv6 bool // send in the IPv6 family even when IPv4-mapped
}{
	{"0.0.0.0", false}, {"0.1.2.3", false}, {"10.1.2.3", false}, {"100.64.0.1", false},
	{"127.0.0.1", false}, {"127.1.2.3", false}, {"169.254.169.254", false}, {"172.16.0.1", false},
	{"172.31.255.255", false}, {"192.0.0.9", false}, {"192.0.2.1", false}, {"192.88.99.1", false},
	{"192.168.1.1", false}, {"198.18.0.1", false}, {"198.19.255.1", false}, {"198.51.100.1", false},
	{"203.0.113.1", false}, {"224.0.0.251", false}, {"239.255.255.250", false}, {"240.0.0.1", false},
	{"255.255.255.255", false},
	{"::ffff:127.0.0.1", true}, {"::ffff:10.0.0.1", true}, {"::ffff:169.254.169.254", true},
	{"::", true}, {"::1", true}, {"64:ff9b::7f00:1", true}, {"64:ff9b:1::1", true}, {"100::1", true},
	{"2001::1", true}, {"2001:db8::1", true}, {"2002:7f00:1::", true}, {"fc00::1", true},
	{"fd00:ec2::254", true}, {"fe80::1", true}, {"ff02::1", true},
	{"2600::1", true}, // any IPv6 peer: relays are IPv4
}

// relayRangeAvoiding returns a relay port range of 1000 ports that does not contain port.
func relayRangeAvoiding(port int) (int, int) {
	if port >= 61000 && port <= 61999 {
		return 62000, 62999
	}
	return 61000, 61999
}

func TestDenyList(t *testing.T) {
	// A sink on loopback, the one denied address a test may watch: nothing may reach it.
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	sinkAddr := sink.LocalAddr().(*net.UDPAddr).AddrPort()

	cfg := turntest.Config() // the default peer policy
	cfg.RelayPortMin, cfg.RelayPortMax = relayRangeAvoiding(int(sinkAddr.Port()))
	// As on a real server, the advertised relay address is not loopback (nothing is sent to
	// it: it only makes 127.0.0.1 an ordinary denied address).
	srv := turntest.Start(t, turntest.Options{Config: &cfg, PublicIP: netip.MustParseAddr("192.0.2.200")})

	for _, tr := range []string{"udp", "tcp"} {
		t.Run(tr, func(t *testing.T) {
			c := turntest.Dial(t, tr, srv.Addr(tr), nil)
			cred := srv.Credential("mallory", time.Hour)
			if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
				t.Fatal(err)
			}
			for i, s := range deniedSamples {
				p := turnclient.PeerAddress{Addr: netip.AddrPortFrom(netip.MustParseAddr(s.addr), 9), IPv6: s.ipv6}
				if err := c.CreatePermission(p); !isErrorResponse(err) {
					t.Fatalf("CreatePermission to %s: got %v, want an error response", s.addr, err)
				}
				if err := c.ChannelBind(uint16(0x4000+i), p); !isErrorResponse(err) {
					t.Fatalf("ChannelBind to %s: got %v, want an error response", s.addr, err)
				}
			}
			// Data toward the refused peers goes nowhere either.
			_ = c.Send(sinkAddr, []byte("leak?"))
			_ = c.SendChannel(0x4000, []byte("leak?"))
		})
	}
	if got, want := metric(t, srv.Registry, "icebox_turn_permissions_denied_total", "reason", "denied_range")+
		metric(t, srv.Registry, "icebox_turn_permissions_denied_total", "reason", "ipv6"), float64(2*2*len(deniedSamples)); got != want {
		t.Errorf("permissions denied: got %v, want %v", got, want)
	}
	if got := metric(t, srv.Registry, "icebox_turn_relayed_packets_total", "direction", "to_peer"); got != 0 {
		t.Errorf("packets written by relay sockets: got %v, want 0", got)
	}
	assertNothingArrives(t, sink)
}

// TestOwnRelayAddress: a client may reach another client's relay on this server, but no other
// port of the server's relay address.
func TestOwnRelayAddress(t *testing.T) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	sinkAddr := sink.LocalAddr().(*net.UDPAddr).AddrPort()

	cfg := turntest.Config() // public_ip 127.0.0.1, default policy: 127/8 denied
	cfg.RelayPortMin, cfg.RelayPortMax = relayRangeAvoiding(int(sinkAddr.Port()))
	srv := turntest.Start(t, turntest.Options{Config: &cfg})

	a := turntest.Dial(t, "udp", srv.UDP, nil)
	b := turntest.Dial(t, "tcp", srv.TCP, nil)
	credA, credB := srv.Credential("a", time.Hour), srv.Credential("b", time.Hour)
	relayA, err := a.Allocate(credA.Username, credA.Password)
	if err != nil {
		t.Fatal(err)
	}
	relayB, err := b.Allocate(credB.Username, credB.Password)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreatePermission(turnclient.PeerAddress{Addr: relayB}); err != nil {
		t.Fatalf("permission to another relay of this server: %v", err)
	}
	if err := b.CreatePermission(turnclient.PeerAddress{Addr: relayA}); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(relayB, []byte("relay to relay")); err != nil {
		t.Fatal(err)
	}
	if d := recvPayload(t, b, "relay to relay"); d.Peer != relayA {
		t.Errorf("got it from %v, want from %v", d.Peer, relayA)
	}
	if err := b.ChannelBind(0x4abc, turnclient.PeerAddress{Addr: relayA}); err != nil {
		t.Fatal(err)
	}
	if err := b.SendChannel(0x4abc, []byte("and back")); err != nil {
		t.Fatal(err)
	}
	recvPayload(t, a, "and back")

	// The permission is per IP, so it covers the sink's port too; the relay drops the packet,
	// sent as a Send indication and over a channel (the fast path).
	before := metric(t, srv.Registry, "icebox_turn_peer_packets_dropped_total", "direction", "to_peer")
	if err := a.Send(sinkAddr, []byte("to another port of this host")); err != nil {
		t.Fatal(err)
	}
	if err := a.ChannelBind(0x4def, turnclient.PeerAddress{Addr: sinkAddr}); err != nil {
		t.Fatalf("binding a channel to the server's own address: %v", err)
	}
	if err := a.SendChannel(0x4def, []byte("over a channel")); err != nil {
		t.Fatal(err)
	}
	if got := waitMetric(t, srv.Registry, "icebox_turn_peer_packets_dropped_total", "direction", "to_peer", before+2); got != before+2 {
		t.Errorf("packets dropped toward the server's own address: got %v, want %v", got, before+2)
	}
	assertNothingArrives(t, sink)
}

// TestAllowedPeerCIDRs: an exception opens every port of the range, but never 0.0.0.0/8.
func TestAllowedPeerCIDRs(t *testing.T) {
	cfg := turntest.Config()
	cfg.AllowedPeerCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("0.0.0.0/0")}
	srv := turntest.Start(t, turntest.Options{Config: &cfg})
	echo, _ := turntest.Echo(t)
	c := turntest.Dial(t, "udp", srv.UDP, nil)
	cred := srv.Credential("lab", time.Hour)
	if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
		t.Fatal(err)
	}
	if err := c.CreatePermission(peer(echo)); err != nil {
		t.Fatalf("permission to an allowed loopback peer: %v", err)
	}
	if err := c.Send(echo.AddrPort(), []byte("lab")); err != nil {
		t.Fatal(err)
	}
	recvPayload(t, c, "lab")
	for _, never := range []string{"0.0.0.0", "0.1.2.3", "::ffff:0.0.0.0"} {
		p := turnclient.PeerAddress{Addr: netip.AddrPortFrom(netip.MustParseAddr(never), 9), IPv6: never[0] == ':'}
		if err := c.CreatePermission(p); !isErrorResponse(err) {
			t.Errorf("permission to %s: got %v, want an error response", never, err)
		}
	}
}

// assertNothingArrives checks that no datagram reaches conn within a short wait.
func assertNothingArrives(t *testing.T, conn *net.UDPConn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 1500)
	if n, from, err := conn.ReadFromUDP(buf); err == nil {
		t.Errorf("a denied address received %q from %v", buf[:n], from)
	}
}

// TestOwnRelayAddressForeignSocket: another process's socket on the server's relay address,
// at a port inside the relay range, receives nothing through a relay (Send indications and
// ChannelData, from UDP and TCP clients) and cannot send into one, while icebox's own relay
// ports still reach each other.
func TestOwnRelayAddressForeignSocket(t *testing.T) {
	foreign, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	foreignAddr := foreign.LocalAddr().(*net.UDPAddr).AddrPort()

	cfg := turntest.Config() // public_ip 127.0.0.1, default policy: the own address by port only
	fp := int(foreignAddr.Port())
	cfg.RelayPortMin, cfg.RelayPortMax = max(fp-20, 1024), min(fp+20, 65535) // the foreign port is inside
	srv := turntest.Start(t, turntest.Options{Config: &cfg, NoTLS: true})

	b := turntest.Dial(t, "udp", srv.UDP, nil)
	credB := srv.Credential("b", time.Hour)
	relayB, err := b.Allocate(credB.Username, credB.Password)
	if err != nil {
		t.Fatal(err)
	}
	for i, tr := range []string{"udp", "tcp"} {
		t.Run(tr, func(t *testing.T) {
			a := turntest.Dial(t, tr, srv.Addr(tr), nil)
			credA := srv.Credential("a-"+tr, time.Hour)
			relayA, err := a.Allocate(credA.Username, credA.Password)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.CreatePermission(turnclient.PeerAddress{Addr: relayA}); err != nil {
				t.Fatal(err)
			}
			// The permission is per IP: it covers the foreign socket's port too.
			if err := a.CreatePermission(turnclient.PeerAddress{Addr: relayB}); err != nil {
				t.Fatal(err)
			}
			channel := uint16(0x4100 + i)
			if err := a.ChannelBind(channel, turnclient.PeerAddress{Addr: foreignAddr}); err != nil {
				t.Fatalf("binding a channel to the server's own address: %v", err)
			}
			before := metric(t, srv.Registry, "icebox_turn_peer_packets_dropped_total", "direction", "to_peer")
			_ = a.Send(foreignAddr, []byte("send indication to a foreign socket"))
			_ = a.SendChannel(channel, []byte("channel data to a foreign socket"))
			// A marker behind them on the same path: once it arrived, they were handled.
			if err := a.Send(relayB, []byte("marker "+tr)); err != nil {
				t.Fatal(err)
			}
			recvPayload(t, b, "marker "+tr)
			if got := metric(t, srv.Registry, "icebox_turn_peer_packets_dropped_total", "direction", "to_peer"); got != before+2 {
				t.Errorf("datagrams dropped toward the foreign socket: got %v, want %v", got-before, 2)
			}
			// What was sent is in its buffer already: the read returns at once if anything came.
			_ = foreign.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			buf := make([]byte, 1500)
			if n, _, err := foreign.ReadFromUDP(buf); err == nil {
				t.Errorf("the foreign socket received %q", buf[:n])
			}

			// The other way: the foreign socket sends to A's relay, then B does.
			beforeFrom := metric(t, srv.Registry, "icebox_turn_peer_packets_dropped_total", "direction", "from_peer")
			if _, err := foreign.WriteToUDP([]byte("from a foreign socket"), net.UDPAddrFromAddrPort(relayA)); err != nil {
				t.Fatal(err)
			}
			if err := b.Send(relayA, []byte("relay to relay "+tr)); err != nil {
				t.Fatal(err)
			}
			if d := recvPayload(t, a, "relay to relay "+tr); d.Peer.IsValid() && d.Peer != relayB {
				t.Errorf("got it from %v, want from %v", d.Peer, relayB)
			}
			if got := metric(t, srv.Registry, "icebox_turn_peer_packets_dropped_total", "direction", "from_peer"); got != beforeFrom+1 {
				t.Errorf("datagrams dropped from the foreign socket: got %v, want 1", got-beforeFrom)
			}
		})
	}
}
