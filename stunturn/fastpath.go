package stunturn

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
)

// The fast path relays the data of established allocations on the sockets icebox owns,
// without handing each packet to pion (which decodes every packet into fresh structures, scans
// its channel list, takes several locks and formats debug logs per packet):
//
//   client -> peer: ChannelData of a bound channel, and a Send indication to a peer with a
//                   permission, arriving on a UDP listener socket (its read loop) or a TCP or
//                   TLS connection (its reader), are written to the peer from the allocation's
//                   relay socket;
//   peer -> client: the relay socket's read loop sends a datagram from the peer of a bound
//                   channel to the client as ChannelData, and one from a peer with a permission
//                   but no channel as a Data indication, on the listener socket (UDP clients)
//                   or the connection (TCP and TLS clients).
//
// pion still does everything else: every request, and whatever the fast path does not take (a
// Send indication without a permission, a datagram from a peer without one, malformed data).
// It tells icebox which allocations, permissions and channels exist (its EventHandler, called
// after its own checks). The peer policy's verdict on a channel's peer or a permission's IP is
// taken when it is created and again on a reload, and per datagram for the server's own address
// (whose relay ports come and go).

// clientOut is how a relay reaches its client: a UDP listener socket, or the client's TCP or
// TLS connection.
type clientOut interface {
	send(b []byte, to netip.AddrPort) error
}

// route is where the relay of an allocation sends to its client.
type route struct {
	client netip.AddrPort // as the listener sees it
	out    clientOut
	stream bool // TCP or TLS: ChannelData is padded to a multiple of 4 bytes
}

// peerVerdict is the peer policy's verdict on a channel's peer or a permission's IP: allowed, and
// own (the server's own address, judged again per datagram).
type peerVerdict struct {
	allowed, own atomic.Bool
}

func (v *peerVerdict) judge(p *peerPolicy, peer netip.AddrPort) {
	v.allowed.Store(p.permit(peer.Addr()) == "")
	v.own.Store(p.portBound(peer))
}

// pass reports whether a datagram to or from peer may go.
func (v *peerVerdict) pass(p *peerPolicy, peer netip.AddrPort) bool {
	return v.allowed.Load() && (!v.own.Load() || p.packet(peer) == "")
}

// binding is one bound channel.
type binding struct {
	client  netip.AddrPort
	channel uint16
	peer    netip.AddrPort // canonical (IPv4)
	relay   *relayConn
	peerVerdict
}

type channelKey struct {
	client  netip.AddrPort
	channel uint16
}

// fastPath is what the client side of one transport knows: its bound channels, and its
// allocations by client, for Send indications.
type fastPath struct {
	channels  sync.Map // channelKey -> *binding
	nchannels atomic.Int64
	relays    sync.Map // netip.AddrPort -> *relayConn
}

// add records a channel pion has just bound.
func (f *fastPath) add(b *binding) {
	if _, loaded := f.channels.Swap(channelKey{b.client, b.channel}, b); !loaded {
		f.nchannels.Add(1)
	}
	b.relay.addPeer(b)
}

// remove forgets a channel pion has removed (expired, or its allocation ended).
func (f *fastPath) remove(client netip.AddrPort, channel uint16) {
	v, loaded := f.channels.LoadAndDelete(channelKey{client, channel})
	if !loaded {
		return
	}
	f.nchannels.Add(-1)
	b := v.(*binding)
	b.relay.removePeer(b)
}

// attach and detach route a client's Send indications to its allocation's relay.
func (f *fastPath) attach(client netip.AddrPort, rc *relayConn) { f.relays.Store(client, rc) }

func (f *fastPath) detach(client netip.AddrPort, rc *relayConn) {
	f.relays.CompareAndDelete(client, rc)
}

// rejudge takes the verdicts of every bound channel again, after the policy changed.
func (f *fastPath) rejudge(p *peerPolicy) {
	f.channels.Range(func(_, v any) bool {
		b := v.(*binding)
		b.judge(p, b.peer)
		return true
	})
}

// fromClient relays b, a datagram or stream frame from client, if it is ChannelData of a bound
// channel or a Send indication to a permitted peer, and reports whether it took it (false:
// pion handles it).
func (f *fastPath) fromClient(b []byte, client netip.AddrPort) bool {
	if len(b) >= 4 && b[0]&0xC0 == 0x40 {
		return f.channelData(b, client)
	}
	return f.sendIndication(b, client)
}

func (f *fastPath) channelData(b []byte, client netip.AddrPort) bool {
	if f.nchannels.Load() == 0 {
		return false
	}
	v, ok := f.channels.Load(channelKey{client, binary.BigEndian.Uint16(b[0:2])})
	if !ok {
		return false
	}
	bd := v.(*binding)
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if 4+n > len(b) {
		return true // malformed: dropped, as pion would
	}
	bd.relay.toPeer(b[4:4+n], bd.peer, &bd.peerVerdict)
	return true
}

func (f *fastPath) sendIndication(b []byte, client netip.AddrPort) bool {
	peer, data, ok := parseSendIndication(b)
	if !ok {
		return false
	}
	v, ok := f.relays.Load(client)
	if !ok {
		return false
	}
	rc := v.(*relayConn)
	perm := rc.permission(peer.Addr())
	if perm == nil {
		return false // pion's: no permission, dropped there
	}
	rc.toPeer(data, peer, perm)
	return true
}

// toPeer sends data to peer from the relay socket, if the verdict lets it and the allocation
// has not ended (its socket may close a moment after its deletion was answered).
func (c *relayConn) toPeer(data []byte, peer netip.AddrPort, v *peerVerdict) {
	if c.closed.Load() {
		return
	}
	if !v.pass(c.policy, peer) {
		c.stats.toPeer.dropped.Add(1)
		return
	}
	if err := c.raw.sendto(data, peer); err == nil {
		c.stats.toPeer.relayed(len(data))
	}
}

// STUN message types of the indications the fast path reads and writes.
const (
	typeSendIndication = 0x0016
	typeDataIndication = 0x0017
	attrXORPeerAddress = 0x0012
	attrData           = 0x0013
)

// parseSendIndication finds the peer and the data of a Send indication (the first of each, as
// pion takes them), without allocating; ok is false for anything else, or a malformed one.
func parseSendIndication(b []byte) (peer netip.AddrPort, data []byte, ok bool) {
	if len(b) < stunHeaderSize || binary.BigEndian.Uint16(b[0:2]) != typeSendIndication ||
		binary.BigEndian.Uint32(b[4:8]) != magicCookie {
		return peer, nil, false
	}
	size := stunHeaderSize + int(binary.BigEndian.Uint16(b[2:4]))
	if size > len(b) {
		return peer, nil, false
	}
	var havePeer, haveData bool
	for p := stunHeaderSize; p+4 <= size; {
		typ, l := binary.BigEndian.Uint16(b[p:p+2]), int(binary.BigEndian.Uint16(b[p+2:p+4]))
		v, end := p+4, p+4+l
		if end > size {
			return peer, nil, false
		}
		switch {
		case typ == attrXORPeerAddress && !havePeer:
			if peer, ok = xorPeerAddress(b[v:end], b[8:20]); !ok {
				return peer, nil, false
			}
			havePeer = true
		case typ == attrData && !haveData:
			data, haveData = b[v:end], true
		}
		p = end + (4-l%4)%4
	}
	return peer, data, havePeer && haveData
}

// xorPeerAddress decodes an XOR-PEER-ADDRESS value; an IPv4-mapped IPv6 address becomes IPv4.
func xorPeerAddress(v, txid []byte) (netip.AddrPort, bool) {
	if len(v) < 4 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ uint16(magicCookie>>16)
	switch {
	case v[1] == 0x01 && len(v) == 8:
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(v[4:8])^magicCookie)
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case v[1] == 0x02 && len(v) == 20:
		var a [16]byte
		binary.BigEndian.PutUint32(a[0:4], binary.BigEndian.Uint32(v[4:8])^magicCookie)
		for i := range 12 {
			a[4+i] = v[8+i] ^ txid[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// addPeer and removePeer keep the relay socket's channels by peer: O(1) each, whatever the
// number of channels (an attacker may bind thousands when turn.max_channels is 0).
func (c *relayConn) addPeer(b *binding) {
	if _, loaded := c.peers.Swap(b.peer, b); !loaded {
		c.npeers.Add(1)
	}
}

func (c *relayConn) removePeer(b *binding) {
	if c.peers.CompareAndDelete(b.peer, b) {
		c.npeers.Add(-1)
	}
}

// permit and forbid keep the relay socket's permitted peer IPs, as pion grants and expires
// them, each with the policy's verdict.
func (c *relayConn) permit(ip netip.Addr) {
	v := &peerVerdict{}
	v.judge(c.policy, netip.AddrPortFrom(ip, 0))
	if _, loaded := c.perms.LoadOrStore(ip, v); !loaded {
		c.nperms.Add(1)
	}
}

func (c *relayConn) forbid(ip netip.Addr) {
	if _, loaded := c.perms.LoadAndDelete(ip); loaded {
		c.nperms.Add(-1)
	}
}

// permission is the verdict on ip if it has a permission, else nil.
func (c *relayConn) permission(ip netip.Addr) *peerVerdict {
	if c.nperms.Load() == 0 {
		return nil
	}
	v, ok := c.perms.Load(ip)
	if !ok {
		return nil
	}
	return v.(*peerVerdict)
}

// rejudgePermissions takes the verdicts of the relay's permissions again.
func (c *relayConn) rejudgePermissions() {
	c.perms.Range(func(ip, v any) bool {
		v.(*peerVerdict).judge(c.policy, netip.AddrPortFrom(ip.(netip.Addr), 0))
		return true
	})
}

// Room in front of each datagram a relay socket reads, for what the fast path puts before it:
// a Data indication's header (20 bytes), XOR-PEER-ADDRESS (12) and DATA's header (4); a
// ChannelData header takes the last 4 of them.
const (
	relayHeadroom = stunHeaderSize + 12 + 4
	relayTailroom = 4 // padding to a multiple of 4 (streams, indications)
)

// forwardToClient sends the datagram buf[relayHeadroom:relayHeadroom+n] from peer to the
// client: as ChannelData for a bound channel, as a Data indication for a permitted peer. It
// reports whether it took the datagram (false: pion handles it).
func (c *relayConn) forwardToClient(buf []byte, n int, from netip.AddrPort) bool {
	r := c.route.Load()
	if r == nil {
		return false
	}
	if c.npeers.Load() > 0 {
		if v, ok := c.peers.Load(from); ok {
			b := v.(*binding)
			if !b.pass(c.policy, from) {
				c.stats.fromPeer.dropped.Add(1) // another process on this host, inside the relay range
				return true
			}
			msg := buf[relayHeadroom-4 : relayHeadroom+n]
			binary.BigEndian.PutUint16(msg[0:2], b.channel)
			binary.BigEndian.PutUint16(msg[2:4], uint16(n))
			if r.stream {
				msg = pad(buf, relayHeadroom-4, 4+n)
			}
			c.deliver(r, msg, n)
			return true
		}
	}
	perm := c.permission(from.Addr())
	if perm == nil {
		return false
	}
	if !perm.pass(c.policy, from) {
		c.stats.fromPeer.dropped.Add(1)
		return true
	}
	c.deliver(r, c.dataIndication(buf, n, from), n)
	return true
}

func (c *relayConn) deliver(r *route, msg []byte, n int) {
	if err := r.out.send(msg, r.client); err == nil {
		c.stats.fromPeer.relayed(n)
	}
}

// pad zeroes the padding after the size bytes at buf[start:] up to a multiple of 4, and returns
// the padded message.
func pad(buf []byte, start, size int) []byte {
	padded := (size + 3) &^ 3
	clear(buf[start+size : start+padded])
	return buf[start : start+padded]
}

// dataIndication writes a Data indication around the n bytes from peer at buf[relayHeadroom:]
// (an IPv4 peer: relays are IPv4) and returns it. Its transaction ID only tells indications
// apart (RFC 8489: an indication's is not checked).
func (c *relayConn) dataIndication(buf []byte, n int, peer netip.AddrPort) []byte {
	msg := pad(buf, 0, relayHeadroom+n)
	binary.BigEndian.PutUint16(msg[0:2], typeDataIndication)
	binary.BigEndian.PutUint16(msg[2:4], uint16(len(msg)-stunHeaderSize))
	binary.BigEndian.PutUint32(msg[4:8], magicCookie)
	binary.BigEndian.PutUint64(msg[8:16], c.txid.Add(1))
	binary.BigEndian.PutUint32(msg[16:20], c.txSalt)
	a := msg[stunHeaderSize:]
	binary.BigEndian.PutUint16(a[0:2], attrXORPeerAddress)
	binary.BigEndian.PutUint16(a[2:4], 8)
	a[4], a[5] = 0, 0x01 // IPv4
	binary.BigEndian.PutUint16(a[6:8], peer.Port()^uint16(magicCookie>>16))
	ip := peer.Addr().As4()
	binary.BigEndian.PutUint32(a[8:12], binary.BigEndian.Uint32(ip[:])^magicCookie)
	binary.BigEndian.PutUint16(a[12:14], attrData)
	binary.BigEndian.PutUint16(a[14:16], uint16(n))
	return msg
}

// newTxSalt is the fixed part of a relay's Data indication transaction IDs.
func newTxSalt() uint32 { return rand.Uint32() } //nolint:gosec // tells indications apart, not a secret
