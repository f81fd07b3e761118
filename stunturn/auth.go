package stunturn

import (
	"crypto/md5" //nolint:gosec // the TURN long-term credential key is MD5 by RFC 5389
	"encoding/binary"
	"net"
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

// answer is a response icebox sends itself, and what to do once it is sent.
type answer struct {
	b    []byte
	then func()
}

func (a answer) done() {
	if a.then != nil {
		a.then()
	}
}

// inspect looks at one datagram from src before pion does. For an authenticated TURN request
// it records a request (returned, to be finished after pion answered), or answers it here
// (control.go); during a drain it answers new Allocates itself with 508.
func (t *listener) inspect(src net.Addr, b []byte) (verdict, *request, answer) {
	if !isSTUN(b) {
		return pass, nil, answer{}
	}
	var mt stun.MessageType
	mt.ReadValue(binary.BigEndian.Uint16(b[0:2]))
	if mt.Class != stun.ClassRequest {
		return pass, nil, answer{}
	}
	switch mt.Method {
	case stun.MethodAllocate:
		if t.s.draining.Load() {
			t.s.metrics.allocateRefused.WithLabelValues(refusedDraining).Inc()
			return reply, nil, answer{b: drainingResponse(b)}
		}
	case stun.MethodRefresh, stun.MethodCreatePermission, stun.MethodChannelBind:
	default:
		return pass, nil, answer{} // Binding needs no credentials
	}

	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return pass, nil, answer{} // pion answers: 400, or 401 with a nonce, and keeps nothing
	}
	var username stun.Username
	var realm stun.Realm
	if username.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return pass, nil, answer{}
	}
	r := &request{src: src.String(), username: username.String()}
	r.verify(t.s.secrets, realm.String(), m)
	if ans := t.control(r, m); ans.b != nil {
		return reply, nil, ans // answered here; pion never sees it
	}
	t.mu.Lock()
	t.pending[r.src] = r
	t.mu.Unlock()
	return pass, r, answer{}
}

// verify finds the secret whose key verifies m, or says why none does.
func (r *request) verify(secrets *credentials.Secrets, realm string, m *stun.Message) {
	if exp, _, err := credentials.ParseUsername(r.username); err != nil {
		r.reason = authMalformed
	} else {
		r.expires = exp
		secrets.Passwords(r.username, func(password string) bool {
			key := longTermKey(r.username, realm, password)
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
func (t *listener) finish(r *request) {
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
func (t *listener) authHandler(username, _ string, src net.Addr) ([]byte, bool) {
	key := src.String()
	t.mu.Lock()
	r := t.pending[key]
	held := t.allocs[key]
	t.mu.Unlock()

	reason := authBadHMAC
	if r != nil && r.username == username {
		reason = t.refusal(r, held, t.s.now())
	}
	if reason != "" {
		t.s.metrics.authFailures.WithLabelValues(reason).Inc()
		return nil, false
	}
	return r.key, true
}

// refusal is why r may not act on held (the allocation of its client address, nil when there
// is none), or "" when it may.
func (t *listener) refusal(r *request, held *allocState, now time.Time) string {
	switch {
	case r.key == nil:
		return r.reason
	case r.expires.Sub(now) > time.Duration(t.s.limits.maxTTL.Load()):
		return authTooLong
	case held != nil && held.username != r.username:
		return authWrongUsername // requests on an allocation use its credentials
	case !r.expires.After(now) && held == nil:
		return authExpired // an expired username only keeps an existing allocation going
	}
	return ""
}
