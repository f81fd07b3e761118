package stunturn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
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
	c.AllowedPeerCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
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

// benchPath is a fast path with one allocation of client on relay, whose route is out.
func benchPath(relay *relayConn, out clientOut, client netip.AddrPort) *fastPath {
	f := &fastPath{}
	relay.route.Store(&route{client: client, out: out})
	f.attach(client, relay)
	return f
}

// BenchmarkForwardToPeer is the client-to-peer fast path for ChannelData: the lookup of the
// bound channel and the raw sendto of an audio-sized payload.
func BenchmarkForwardToPeer(b *testing.B) {
	relay, out, sink := benchSockets(b)
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	f := benchPath(relay, out, client)
	bd := &binding{client: client, channel: 0x4000, peer: sink, relay: relay}
	bd.judge(relay.policy, sink)
	f.add(bd)
	pkt := make([]byte, 4+172)
	binary.BigEndian.PutUint16(pkt[0:2], 0x4000)
	binary.BigEndian.PutUint16(pkt[2:4], 172)
	b.ReportAllocs()
	b.SetBytes(172)
	for b.Loop() {
		if !f.fromClient(pkt, client) {
			b.Fatal("not forwarded")
		}
	}
}

// BenchmarkSendIndication is the client-to-peer fast path for a Send indication (Firefox's
// way): parsing it, the permission, and the sendto.
func BenchmarkSendIndication(b *testing.B) {
	relay, out, sink := benchSockets(b)
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	f := benchPath(relay, out, client)
	relay.permit(sink.Addr())
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		xorPeer{stun.XORMappedAddress{IP: sink.Addr().AsSlice(), Port: int(sink.Port())}},
		stun.RawAttribute{Type: stun.AttrData, Value: make([]byte, 172)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(172)
	for b.Loop() {
		if !f.fromClient(m.Raw, client) {
			b.Fatal("not forwarded")
		}
	}
}

// xorPeer is an XOR-PEER-ADDRESS setter.
type xorPeer struct{ a stun.XORMappedAddress }

func (p xorPeer) AddTo(m *stun.Message) error { return p.a.AddToAs(m, stun.AttrXORPeerAddress) }

// BenchmarkForwardToClient is the peer-to-client fast path for a bound channel: the peer's
// channel and the raw sendto of the ChannelData.
func BenchmarkForwardToClient(b *testing.B) {
	relay, out, sink := benchSockets(b)
	peer := netip.MustParseAddrPort("127.0.0.1:40001")
	f := benchPath(relay, out, sink)
	bd := &binding{client: sink, channel: 0x4000, peer: peer, relay: relay}
	bd.judge(relay.policy, peer)
	f.add(bd)
	buf := make([]byte, relayHeadroom+172+relayTailroom)
	b.ReportAllocs()
	b.SetBytes(172)
	for b.Loop() {
		if !relay.forwardToClient(buf, 172, peer) {
			b.Fatal("not forwarded")
		}
	}
}

// BenchmarkDataIndication is the peer-to-client fast path for a permitted peer without a
// channel: the Data indication written in front of the datagram, and its sendto.
func BenchmarkDataIndication(b *testing.B) {
	relay, out, sink := benchSockets(b)
	peer := netip.MustParseAddrPort("127.0.0.1:40001")
	benchPath(relay, out, sink)
	relay.permit(peer.Addr())
	buf := make([]byte, relayHeadroom+172+relayTailroom)
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
