package stunturn

import (
	"crypto/md5" //nolint:gosec // the TURN long-term credential key is MD5 by RFC 5389
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"

	"github.com/icebox-rtc/icebox/credentials"
)

// Auth failure reasons, as metric labels.
const (
	authBadHMAC       = "bad_hmac"
	authExpired       = "expired"
	authTooLong       = "ttl_too_long"
	authMalformed     = "malformed_username"
	authWrongUsername = "wrong_username"
)

// pion/turn v4 asks its AuthHandler for one key per (username, realm, source) and checks the
// MESSAGE-INTEGRITY itself, and it cannot tell an Allocate from a Refresh. icebox verifies TURN
// REST credentials against every configured secret, refuses expired usernames for new
// allocations only, and counts allocations per user. So a wrapper around every listener socket
// looks at each authenticated request before pion does, finds the secret whose key verifies
// it, and leaves the outcome here as a request keyed by the source address; the AuthHandler and
// QuotaHandler pion calls next, in the same goroutine, read it back. The request is finished
// when the response goes out or the next datagram is read from that socket, so at most one
// request per socket or connection is ever held, and an unauthenticated one leaves nothing.

// request is one authenticated TURN request on its way through pion.
type request struct {
	src      string // source address, the key in transport.pending
	username string
	expires  time.Time
	key      []byte // the long-term key that verified it; nil when none did
	reason   string // why key is nil

	// Set under transport.mu.
	quotaUser string // a turn.user_quota slot is reserved for this user
	allocated bool   // the Allocate created an allocation, which now owns the slot
}

// allocation is what icebox remembers of a live allocation, keyed by its client address.
type allocation struct {
	username, quotaUser string
}

// transport is the state of one of the TURN listeners (udp, tcp or tls): each runs its own
// pion server, so every callback knows which transport it serves.
type transport struct {
	name string
	s    *Server

	// fast holds the bound channels of UDP clients (fastpath.go); out is a listener socket
	// to send them ChannelData from. Both nil for TCP and TLS.
	fast *bindings
	out  *rawUDP

	mu      sync.Mutex
	pending map[string]*request
	allocs  map[string]allocation
	streams map[string]*streamConn // tcp and tls: open connections by client address
}

func newTransport(name string, s *Server) *transport {
	return &transport{name: name, s: s, pending: map[string]*request{}, allocs: map[string]allocation{},
		streams: map[string]*streamConn{}}
}

// verdict is what the socket wrapper does with a datagram.
type verdict int

const (
	pass  verdict = iota // hand it to pion
	reply                // answer it here (the reply is returned), pion never sees it
)

// isSTUN reports whether b starts like a STUN message (not ChannelData or garbage).
func isSTUN(b []byte) bool {
	return len(b) >= stunHeaderSize && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == magicCookie
}

const (
	stunHeaderSize = 20
	magicCookie    = 0x2112A442 // RFC 5389; unexported by pion/stun
)

// isResponse reports whether b is a STUN success or error response.
func isResponse(b []byte) bool {
	return isSTUN(b) && b[0]&0x01 != 0 // C1, the class's high bit: 0b10 success, 0b11 error
}

// inspect looks at one datagram from src before pion does. For an authenticated TURN request
// it records a request (returned, to be finished after pion answered); during a drain it
// answers new Allocates itself with 508.
func (t *transport) inspect(src net.Addr, b []byte) (verdict, *request, []byte) {
	if !isSTUN(b) {
		return pass, nil, nil
	}
	var mt stun.MessageType
	mt.ReadValue(binary.BigEndian.Uint16(b[0:2]))
	if mt.Class != stun.ClassRequest {
		return pass, nil, nil
	}
	switch mt.Method {
	case stun.MethodAllocate:
		if t.s.draining.Load() {
			t.s.metrics.allocateRefused.WithLabelValues(refusedDraining).Inc()
			return reply, nil, drainingResponse(b)
		}
	case stun.MethodRefresh, stun.MethodCreatePermission, stun.MethodChannelBind:
	default:
		return pass, nil, nil // Binding needs no credentials
	}

	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return pass, nil, nil // pion answers: 400, or 401 with a nonce, and keeps nothing
	}
	var username stun.Username
	var realm stun.Realm
	if username.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return pass, nil, nil
	}
	r := &request{src: src.String(), username: username.String()}
	if exp, _, err := credentials.ParseUsername(r.username); err != nil {
		r.reason = authMalformed
	} else {
		r.expires = exp
		t.s.secrets.Passwords(r.username, func(password string) bool {
			key := longTermKey(r.username, realm.String(), password)
			if stun.MessageIntegrity(key).Check(m) == nil {
				r.key = key
				return false
			}
			return true
		})
		if r.key == nil {
			r.reason = authBadHMAC
		}
	}
	t.mu.Lock()
	t.pending[r.src] = r
	t.mu.Unlock()
	return pass, r, nil
}

// longTermKey is the RFC 5389 long-term credential key MD5(username ":" realm ":" password).
func longTermKey(username, realm, password string) []byte {
	h := md5.New() //nolint:gosec // mandated by RFC 5389
	h.Write([]byte(username + ":" + realm + ":" + password))
	return h.Sum(nil)
}

// drainingResponse is a 508 error response to the Allocate request b: this node takes no new
// allocations, the client tries its other servers.
func drainingResponse(b []byte) []byte {
	var id [stun.TransactionIDSize]byte
	copy(id[:], b[8:20])
	m, err := stun.Build(stun.NewTransactionIDSetter(id),
		stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeInsufficientCapacity, Reason: []byte("Server Draining")})
	if err != nil {
		return nil
	}
	return m.Raw
}

// finish ends r: a quota slot reserved by an Allocate that created nothing is given back.
func (t *transport) finish(r *request) {
	t.mu.Lock()
	if t.pending[r.src] == r {
		delete(t.pending, r.src)
	}
	release := r.quotaUser != "" && !r.allocated
	user := r.quotaUser
	r.quotaUser = ""
	t.mu.Unlock()
	if release {
		t.s.quota.release(user)
	}
}

// authHandler is pion's AuthHandler for this transport.
func (t *transport) authHandler(username, _ string, src net.Addr) ([]byte, bool) {
	key := src.String()
	t.mu.Lock()
	r := t.pending[key]
	held, has := t.allocs[key]
	t.mu.Unlock()

	fail := func(reason string) ([]byte, bool) {
		t.s.metrics.authFailures.WithLabelValues(reason).Inc()
		return nil, false
	}
	switch now := time.Now(); {
	case r == nil || r.username != username:
		return fail(authBadHMAC)
	case r.key == nil:
		return fail(r.reason)
	case r.expires.Sub(now) > t.s.maxTTL:
		return fail(authTooLong)
	case has && held.username != username:
		return fail(authWrongUsername) // requests on an allocation use its credentials
	case !r.expires.After(now) && !has:
		return fail(authExpired) // an expired username only keeps an existing allocation going
	}
	return r.key, true
}

// quotaHandler is pion's QuotaHandler: it reserves a turn.user_quota slot for the Allocate.
func (t *transport) quotaHandler(username, _ string, src net.Addr) bool {
	user := credentials.QuotaUser(username)
	if !t.s.quota.reserve(user) {
		t.s.metrics.allocateRefused.WithLabelValues(refusedUserQuota).Inc()
		return false
	}
	t.mu.Lock()
	if r := t.pending[src.String()]; r != nil && r.username == username {
		r.quotaUser = user
		t.mu.Unlock()
		return true
	}
	t.mu.Unlock()
	t.s.quota.release(user) // nothing to hang the slot on; onAllocationCreated counts it
	return true
}

func (t *transport) onAllocationCreated(src, _ net.Addr, _, username, _ string, _ net.Addr, _ int) {
	key := src.String()
	t.mu.Lock()
	user := ""
	if r := t.pending[key]; r != nil && r.quotaUser != "" {
		r.allocated = true
		user = r.quotaUser
	}
	if user == "" {
		user = credentials.QuotaUser(username)
		t.s.quota.take(user)
	}
	t.allocs[key] = allocation{username: username, quotaUser: user}
	if sc := t.streams[key]; sc != nil {
		sc.allocated.Store(true)
	}
	t.mu.Unlock()
	t.s.metrics.allocations.WithLabelValues(t.name).Inc()
	t.s.metrics.created.WithLabelValues(t.name).Inc()
}

func (t *transport) onAllocationDeleted(src, _ net.Addr, _, _, _ string) {
	key := src.String()
	t.mu.Lock()
	a, ok := t.allocs[key]
	delete(t.allocs, key)
	if sc := t.streams[key]; sc != nil {
		sc.allocated.Store(false)
	}
	t.mu.Unlock()
	if ok {
		t.s.quota.release(a.quotaUser)
		t.s.metrics.allocations.WithLabelValues(t.name).Dec()
	}
}

// onChannelCreated puts a channel pion has bound on the fast path (UDP clients).
func (t *transport) onChannelCreated(src, _ net.Addr, _, _, _ string, relayAddr, peer net.Addr, channel uint16) {
	if t.fast == nil || t.out == nil {
		return
	}
	client, ok1 := addrPort(src)
	to, ok2 := addrPort(peer)
	relayed, ok3 := addrPort(relayAddr)
	if !ok1 || !ok2 || !ok3 {
		return
	}
	rc := t.s.relays.conn(int(relayed.Port()))
	if rc == nil {
		return
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	t.fast.add(&binding{client: client, channel: channel, peer: to, relay: rc, out: t.out,
		allowed: t.s.policy.packet(to) == ""})
}

// onChannelDeleted takes a channel off the fast path.
func (t *transport) onChannelDeleted(src, _ net.Addr, _, _, _ string, _, _ net.Addr, channel uint16) {
	if t.fast == nil {
		return
	}
	if client, ok := addrPort(src); ok {
		t.fast.remove(client, channel)
	}
}

// permissionHandler is pion's PermissionHandler: the peer policy by IP.
func (t *transport) permissionHandler(_ net.Addr, peer net.IP) bool {
	ip, ok := netipFromIP(peer)
	reason := refusedMalformed
	if ok {
		reason = t.s.policy.permit(ip)
	}
	if reason != "" {
		t.s.metrics.permissionDenied.WithLabelValues(reason).Inc()
		return false
	}
	return true
}

func netipFromIP(ip net.IP) (netip.Addr, bool) { return netip.AddrFromSlice(ip) }

// quotas counts allocations per credential user for turn.user_quota.
type quotas struct {
	limit int // 0: unlimited
	mu    sync.Mutex
	n     map[string]int
}

func (q *quotas) reserve(user string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.limit > 0 && q.n[user] >= q.limit {
		return false
	}
	q.n[user]++
	return true
}

func (q *quotas) take(user string) {
	q.mu.Lock()
	q.n[user]++
	q.mu.Unlock()
}

func (q *quotas) release(user string) {
	q.mu.Lock()
	if q.n[user]--; q.n[user] <= 0 {
		delete(q.n, user)
	}
	q.mu.Unlock()
}
