package stunturn

import (
	"net"
	"net/netip"
	"sync"
)

// listener is the state of one of the TURN listeners, one per transport (udp, tcp or tls):
// each runs its own pion server, so every callback knows which transport it serves. Here are
// pion's allocation events, from which icebox learns each allocation's state; auth.go has its
// socket wrapper's checks and the AuthHandler, quota.go the QuotaHandler.
type listener struct {
	name string
	s    *Server

	// fast is what the fast path knows of this transport's clients (fastpath.go); out is a
	// listener socket to send to UDP clients from (nil for TCP and TLS, whose connections
	// are their own way out).
	fast *fastPath
	out  *rawUDP

	mu      sync.Mutex
	pending map[string]*request    // authenticated requests pion is handling, by client address
	allocs  map[string]*allocState // live allocations by client address
	// retiring are allocations pion is still closing while a new one holds their client
	// address (their deletion is reported after the new one's creation).
	retiring map[string][]*allocState
	streams  map[string]*streamConn // tcp and tls: open connections by client address
}

func newListener(name string, s *Server) *listener {
	return &listener{name: name, s: s, fast: &fastPath{}, pending: map[string]*request{}, allocs: map[string]*allocState{},
		retiring: map[string][]*allocState{}, streams: map[string]*streamConn{}}
}

// allocState is what icebox knows of a live allocation: who holds it, its relay socket, and the
// permissions and channels pion gave it (learnt from pion's events), so that requests that
// would grow them past turn.max_permissions or turn.max_channels are refused before pion
// sees them.
type allocState struct {
	username, quotaUser string
	client              netip.AddrPort
	relay               *relayConn // nil if it could not be found (cannot happen)
	relayPort           int
	perms               map[netip.Addr]struct{}   // peer IPs with a permission
	channels            map[uint16]netip.AddrPort // bound channels and their peers
	channelOf           map[netip.AddrPort]uint16 // the same, by peer
	// closing: icebox answered a Refresh with lifetime 0, gave back the quota slot and closes
	// the relay socket; pion deletes the allocation on the relay's own goroutine.
	closing bool
}

// state is the allocation of client key whose relay is relayAddr (nil if there is none, or if
// the event is about an allocation pion is still closing); t.mu is held.
func (t *listener) state(key string, relayAddr net.Addr) *allocState {
	a := t.allocs[key]
	if a == nil {
		return nil
	}
	if p, ok := addrPort(relayAddr); !ok || int(p.Port()) != a.relayPort {
		return nil
	}
	return a
}

func (t *listener) onAllocationCreated(src, _ net.Addr, _, username, _ string, relayAddr net.Addr, _ int) {
	key := src.String()
	client, _ := addrPort(src)
	port := 0
	if p, ok := addrPort(relayAddr); ok {
		port = int(p.Port())
	}
	rc := t.s.relays.conn(port)
	t.mu.Lock()
	user := ""
	if r := t.pending[key]; r != nil && r.quotaUser != "" {
		r.allocated = true
		user = r.quotaUser
	}
	if user == "" {
		user = t.s.quota.key(username, src)
		t.s.quota.take(user)
	}
	if old := t.allocs[key]; old != nil {
		t.retiring[key] = append(t.retiring[key], old)
	}
	t.allocs[key] = &allocState{username: username, quotaUser: user, client: client, relay: rc, relayPort: port,
		perms: map[netip.Addr]struct{}{}, channels: map[uint16]netip.AddrPort{}, channelOf: map[netip.AddrPort]uint16{}}
	var out clientOut
	stream := false
	if sc := t.streams[key]; sc != nil {
		sc.setAllocated(true)
		out, stream = sc, true
	} else if t.out != nil {
		out = t.out
	}
	t.mu.Unlock()
	if rc != nil && out != nil {
		rc.route.Store(&route{client: client, out: out, stream: stream})
		t.fast.attach(client, rc)
	}
	t.s.metrics.allocations.WithLabelValues(t.name).Inc()
	t.s.metrics.created.WithLabelValues(t.name).Inc()
}

func (t *listener) onAllocationDeleted(src, _ net.Addr, _, _, _ string) {
	key := src.String()
	t.mu.Lock()
	var a *allocState
	if old := t.retiring[key]; len(old) > 0 {
		a = old[0]
		if t.retiring[key] = old[1:]; len(old) == 1 {
			delete(t.retiring, key)
		}
	} else if a = t.allocs[key]; a != nil {
		delete(t.allocs, key)
		if sc := t.streams[key]; sc != nil {
			sc.setAllocated(false)
		}
	}
	t.mu.Unlock()
	if a == nil {
		return
	}
	t.detach(a)
	if !a.closing { // a closing one gave its slot back already (control.go)
		t.s.quota.release(a.quotaUser)
		t.s.metrics.allocations.WithLabelValues(t.name).Dec()
	}
}

// detach takes allocation a off the fast path's client side.
func (t *listener) detach(a *allocState) {
	if a.relay != nil {
		t.fast.detach(a.client, a.relay)
		a.relay.route.Store(nil)
	}
}

func (t *listener) onPermissionCreated(src, _ net.Addr, _, _, _ string, relayAddr net.Addr, peer net.IP) {
	t.permission(src, relayAddr, peer, true)
}

func (t *listener) onPermissionDeleted(src, _ net.Addr, _, _, _ string, relayAddr net.Addr, peer net.IP) {
	t.permission(src, relayAddr, peer, false)
}

// permission records that pion granted (held) or removed a permission toward peer.
func (t *listener) permission(src, relayAddr net.Addr, peer net.IP, held bool) {
	ip, ok := netip.AddrFromSlice(peer)
	if !ok {
		return
	}
	ip = ip.Unmap()
	t.mu.Lock()
	a := t.state(src.String(), relayAddr)
	if a != nil {
		if held {
			a.perms[ip] = struct{}{}
		} else {
			delete(a.perms, ip)
		}
	}
	t.mu.Unlock()
	if a == nil || a.relay == nil {
		return
	}
	if held {
		a.relay.permit(ip)
	} else {
		a.relay.forbid(ip)
	}
}

// onChannelCreated records a channel pion has bound, and puts it on the fast path.
func (t *listener) onChannelCreated(src, _ net.Addr, _, _, _ string, relayAddr, peer net.Addr, channel uint16) {
	to, ok := addrPort(peer)
	if !ok {
		return
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	t.mu.Lock()
	a := t.state(src.String(), relayAddr)
	if a != nil {
		a.channels[channel] = to
		a.channelOf[to] = channel
	}
	t.mu.Unlock()
	if a == nil || a.relay == nil {
		return
	}
	b := &binding{client: a.client, channel: channel, peer: to, relay: a.relay}
	b.judge(t.s.policy, to)
	t.fast.add(b)
}

// onChannelDeleted forgets a channel and takes it off the fast path.
func (t *listener) onChannelDeleted(src, _ net.Addr, _, _, _ string, relayAddr, _ net.Addr, channel uint16) {
	t.mu.Lock()
	if a := t.state(src.String(), relayAddr); a != nil {
		if to, ok := a.channels[channel]; ok {
			delete(a.channels, channel)
			delete(a.channelOf, to)
		}
	}
	t.mu.Unlock()
	if client, ok := addrPort(src); ok {
		t.fast.remove(client, channel)
	}
}

// permissionHandler is pion's PermissionHandler, called for each peer of a CreatePermission
// or ChannelBind: the peer policy by IP, and turn.max_permissions. Both were checked for the
// whole request before pion saw it (control.go), which answers with the right error code;
// this is the backstop pion enforces with its own.
func (t *listener) permissionHandler(src net.Addr, peer net.IP) bool {
	ip, ok := netip.AddrFromSlice(peer)
	reason := refusedMalformed
	if ok {
		ip = ip.Unmap()
		reason = t.s.policy.permit(ip)
	}
	if limit := int(t.s.limits.maxPermissions.Load()); reason == "" && limit > 0 {
		t.mu.Lock()
		if a := t.allocs[src.String()]; a != nil {
			if _, has := a.perms[ip]; !has && len(a.perms) >= limit {
				reason = refusedMaxPermissions
			}
		}
		t.mu.Unlock()
	}
	if reason != "" {
		t.s.metrics.permissionDenied.WithLabelValues(reason).Inc()
		return false
	}
	return true
}
