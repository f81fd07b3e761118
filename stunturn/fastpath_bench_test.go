package stunturn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

// benchSockets is a relay socket, a listener socket and a sink that reads nothing (the kernel
// drops what does not fit), all on loopback.
func benchSockets(b *testing.B) (*relayConn, *rawUDP, netip.AddrPort) {
	b.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	sink := listen()
	c := DefaultConfig()
	c.RelayAddress = "127.0.0.1"
	c.AllowedPeerCIDRs = []string{"127.0.0.1/32"}
	a, _, _ := testRelays(c, "127.0.0.1")
	pc, _, err := a.AllocatePacketConn("udp4", 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close() })
	out, err := newRawUDP(listen())
	if err != nil {
		b.Fatal(err)
	}
	return pc.(*relayConn), out, sink.LocalAddr().(*net.UDPAddr).AddrPort()
}

// BenchmarkForwardToPeer is the client-to-peer fast path: the lookup of the bound channel and
// the raw sendto of an audio-sized payload.
func BenchmarkForwardToPeer(b *testing.B) {
	relay, out, sink := benchSockets(b)
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	var bs bindings
	bs.add((&binding{client: client, channel: 0x4000, peer: sink, relay: relay, out: out}).judge(relay.policy))
	pkt := make([]byte, 4+172)
	binary.BigEndian.PutUint16(pkt[0:2], 0x4000)
	binary.BigEndian.PutUint16(pkt[2:4], 172)
	b.ReportAllocs()
	b.SetBytes(172)
	for b.Loop() {
		if !bs.forwardToPeer(pkt, client) {
			b.Fatal("not forwarded")
		}
	}
}

// BenchmarkForwardToClient is the peer-to-client fast path: the peer's channel and the raw
// sendto of the ChannelData.
func BenchmarkForwardToClient(b *testing.B) {
	relay, out, sink := benchSockets(b)
	peer := netip.MustParseAddrPort("127.0.0.1:40001")
	var bs bindings
	bs.add((&binding{client: sink, channel: 0x4000, peer: peer, relay: relay, out: out}).judge(relay.policy))
	buf := make([]byte, 4+172)
	b.ReportAllocs()
	b.SetBytes(172)
	for b.Loop() {
		if !relay.forwardToClient(buf, 172, peer) {
			b.Fatal("not forwarded")
		}
	}
}

// BenchmarkPeerPolicy is the per-packet policy check of the slow path.
func BenchmarkPeerPolicy(b *testing.B) {
	p := newPeerPolicy(DefaultConfig(), &portSet{}, netip.MustParseAddr("203.0.113.10"))
	peer := netip.MustParseAddrPort("93.184.216.34:443")
	b.ReportAllocs()
	for b.Loop() {
		if p.packet(peer) != "" {
			b.Fatal("refused")
		}
	}
}
