package stunturn

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
)

// The fast path forwards ChannelData of bound channels over UDP on the sockets icebox owns,
// without handing each datagram to pion: pion decodes every packet into fresh structures, takes
// several locks and formats debug logs per packet. pion still does everything else, and tells
// icebox which channels exist (EventHandler OnChannelCreated/OnChannelDeleted, called after its
// own permission checks); icebox checks the peer policy once per binding (the peer address and
// port of a channel never change) and forwards:
//
//   client -> peer: the listener socket's ReadFrom finds (client, channel) and writes the data
//                   to the peer from the allocation's relay socket;
//   peer -> client: the relay socket's ReadFrom finds the peer's channel and writes ChannelData
//                   to the client from the listener socket.
//
// Anything else (no channel, Send/Data indications, control messages, TCP and TLS clients)
// takes pion's path as before.

// binding is one bound channel of a UDP client.
type binding struct {
	client  netip.AddrPort // the client's address, as the listener sees it
	channel uint16
	peer    netip.AddrPort // canonical (IPv4)
	relay   *relayConn
	out     *rawUDP // a listener socket: what the client's packets arrive on
	// The peer policy's verdict on peer, taken when the channel is bound and again when the
	// policy is reloaded; own: peer is the server's own address, so the verdict is taken per
	// datagram (its ports come and go).
	allowed, own atomic.Bool
}

// judge takes the policy's verdict on b's peer.
func (b *binding) judge(p *peerPolicy) *binding {
	b.allowed.Store(p.packet(b.peer) == "")
	b.own.Store(p.portBound(b.peer))
	return b
}

// rejudge takes the verdicts of every bound channel again, after the policy changed.
func (bs *bindings) rejudge(p *peerPolicy) {
	bs.byClient.Range(func(_, v any) bool {
		v.(*binding).judge(p)
		return true
	})
}

type bindingKey struct {
	client  netip.AddrPort
	channel uint16
}

// bindings are the bound channels of the UDP transport, for the listener sockets' fast path.
type bindings struct {
	byClient sync.Map // bindingKey -> *binding
	count    atomic.Int64
}

// add records a channel pion has just bound.
func (bs *bindings) add(b *binding) {
	if _, loaded := bs.byClient.Swap(bindingKey{b.client, b.channel}, b); !loaded {
		bs.count.Add(1)
	}
	b.relay.addPeer(b)
}

// remove forgets a channel pion has removed (expired, or its allocation ended).
func (bs *bindings) remove(client netip.AddrPort, channel uint16) {
	v, loaded := bs.byClient.LoadAndDelete(bindingKey{client, channel})
	if !loaded {
		return
	}
	bs.count.Add(-1)
	b := v.(*binding)
	b.relay.removePeer(b)
}

func (bs *bindings) lookup(client netip.AddrPort, channel uint16) *binding {
	if bs.count.Load() == 0 {
		return nil
	}
	v, ok := bs.byClient.Load(bindingKey{client, channel})
	if !ok {
		return nil
	}
	return v.(*binding)
}

// forwardToPeer sends the ChannelData datagram b from client, if it is for a bound channel,
// and reports whether it did (false: pion handles it).
func (bs *bindings) forwardToPeer(b []byte, client netip.AddrPort) bool {
	if len(b) < 4 || b[0]&0xC0 != 0x40 {
		return false
	}
	bd := bs.lookup(client, binary.BigEndian.Uint16(b[0:2]))
	if bd == nil {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if 4+n > len(b) {
		return true // malformed: dropped, as pion would
	}
	if !bd.allowed.Load() || (bd.own.Load() && bd.relay.policy.packet(bd.peer) != "") {
		bd.relay.stats.toPeer.dropped.Add(1)
		return true
	}
	if err := bd.relay.raw.sendto(b[4:4+n], bd.peer); err == nil {
		bd.relay.stats.toPeer.relayed(n)
	}
	return true
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

// forwardToClient sends the datagram buf[4:4+n] from peer to the client of its bound channel as
// ChannelData, writing the header into buf[0:4], and reports whether it did.
func (c *relayConn) forwardToClient(buf []byte, n int, from netip.AddrPort) bool {
	if c.npeers.Load() == 0 {
		return false
	}
	v, ok := c.peers.Load(from)
	if !ok {
		return false
	}
	b := v.(*binding)
	if b.own.Load() && c.policy.packet(from) != "" {
		c.stats.fromPeer.dropped.Add(1) // another process on this host, inside the relay range
		return true
	}
	binary.BigEndian.PutUint16(buf[0:2], b.channel)
	binary.BigEndian.PutUint16(buf[2:4], uint16(n))
	if err := b.out.sendto(buf[:4+n], b.client); err == nil {
		c.stats.fromPeer.relayed(n)
	}
	return true
}
