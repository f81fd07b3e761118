package stunturn

import (
	"net"
	"net/netip"
	"sync/atomic"
)

// builtinDenied is the peer deny-list of spec section 4: IANA special-purpose ranges that a relay
// must not reach on a client's behalf (this host, its LAN, cloud metadata, ...).
var builtinDenied = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
	"2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
)

// neverAllowed stay denied whatever allowed_peer_cidrs says: "this network" and the
// unspecified address reach the relay host itself.
var neverAllowed = mustPrefixes("0.0.0.0/8", "::/128")

func mustPrefixes(list ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(list))
	for i, s := range list {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// Reasons a peer is refused, as metric labels.
const (
	refusedDenied    = "denied_range"
	refusedIPv6      = "ipv6"
	refusedOwnPort   = "own_relay_port"
	refusedMalformed = "malformed"
)

// peerPolicy decides which peers a client may reach through a relay. It is checked when a
// permission or channel is created (by IP, as pion asks) and again on every packet in both
// directions (by IP and port), so nothing reaches a denied address even if pion let it through.
type peerPolicy struct {
	lists atomic.Pointer[peerLists] // replaced whole by a reload
	// own is this server's advertised relay address (public_ip): reachable, but only at the
	// ports icebox holds as relay sockets at that moment (relays), so a client can talk to
	// another client's relay and to nothing else on this host, not even another process's
	// socket inside the relay port range.
	own    []netip.Addr
	relays *portSet
}

// peerLists are the configured exceptions and the deny-list (built-in plus configured).
type peerLists struct {
	allowed, denied []netip.Prefix
}

func newPeerPolicy(c Config, relays *portSet, own ...netip.Addr) *peerPolicy {
	p := &peerPolicy{relays: relays}
	p.set(c)
	for _, a := range own {
		if a = a.Unmap(); a.Is4() && !a.IsUnspecified() {
			p.own = append(p.own, a)
		}
	}
	return p
}

// set takes turn.allowed_peer_cidrs and turn.denied_peer_cidrs from c.
func (p *peerPolicy) set(c Config) {
	l := &peerLists{denied: append(append([]netip.Prefix(nil), builtinDenied...), c.DeniedPeerCIDRs...)}
	for _, a := range c.AllowedPeerCIDRs {
		if a.Addr().Is4() { // relays are IPv4: an IPv6 exception could never be used
			l.allowed = append(l.allowed, a)
		}
	}
	p.lists.Store(l)
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// canonical turns a peer IP into the IPv4 address it stands for: IPv4 as is, and IPv4-mapped
// IPv6 (::ffff:a.b.c.d) as a.b.c.d. Anything else is IPv6, which an IPv4 relay cannot reach.
func canonical(ip netip.Addr) (netip.Addr, bool) {
	ip = ip.Unmap()
	return ip, ip.Is4()
}

// permit decides a CreatePermission or ChannelBind toward ip. The empty reason means allowed.
func (p *peerPolicy) permit(ip netip.Addr) string {
	a, ok := canonical(ip)
	l := p.lists.Load()
	switch {
	case !ok:
		return refusedIPv6
	case contains(neverAllowed, a):
		return refusedDenied
	case contains(l.allowed, a):
		return ""
	case p.isOwn(a):
		return "" // only to icebox's relay sockets: checked per packet
	case contains(l.denied, a):
		return refusedDenied
	}
	return ""
}

// packet decides one datagram to or from peer. The empty reason means it may pass.
func (p *peerPolicy) packet(peer netip.AddrPort) string {
	a, ok := canonical(peer.Addr())
	l := p.lists.Load()
	switch {
	case !ok:
		return refusedIPv6
	case contains(neverAllowed, a):
		return refusedDenied
	case contains(l.allowed, a):
		return ""
	case p.isOwn(a):
		if !p.relays.has(peer.Port()) {
			return refusedOwnPort
		}
		return ""
	case contains(l.denied, a):
		return refusedDenied
	}
	return ""
}

// portBound reports whether the verdict on peer depends on its port at the moment of each
// datagram: the server's own address, whose relay ports come and go. The fast path takes the
// verdict on any other peer once per channel binding.
func (p *peerPolicy) portBound(peer netip.AddrPort) bool {
	a, ok := canonical(peer.Addr())
	return ok && !contains(neverAllowed, a) && !contains(p.lists.Load().allowed, a) && p.isOwn(a)
}

func (p *peerPolicy) isOwn(a netip.Addr) bool {
	for _, o := range p.own {
		if o == a {
			return true
		}
	}
	return false
}

// addrPort converts what pion hands over (a *net.UDPAddr, or a *net.TCPAddr for a client over
// TCP or TLS) without allocating.
func addrPort(addr net.Addr) (netip.AddrPort, bool) {
	var ipb net.IP
	var port int
	switch a := addr.(type) {
	case *net.UDPAddr:
		ipb, port = a.IP, a.Port
	case *net.TCPAddr:
		ipb, port = a.IP, a.Port
	default:
		return netip.AddrPort{}, false
	}
	ip, ok := netip.AddrFromSlice(ipb)
	if !ok || port < 0 || port > 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, uint16(port)), true
}
