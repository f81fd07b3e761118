package stunturn

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/pion/stun/v3"
)

// Requests icebox answers itself. pion/turn v4 keeps no bound on the permissions and channels
// of an allocation, accepts any channel number, refuses denied peers with an error response
// without ERROR-CODE (CreatePermission) or with 401 (ChannelBind), keeps the permissions it
// added before a refused peer of the same request, and tears down a deleted allocation on the
// listener's read loop (its channel list is scanned once per channel: quadratic). So before
// pion sees an authenticated CreatePermission, ChannelBind or Refresh on an allocation, icebox
// checks it as a whole:
//
//   - malformed peer addresses or channel numbers (outside 0x4000-0x4FFF, RFC 8656): 400;
//   - a peer the policy denies: 403 (Forbidden);
//   - more permissions than turn.max_permissions or channels than turn.max_channels: 508
//     (Insufficient Capacity);
//
// and nothing of a refused request is kept. A Refresh with lifetime 0 is answered here, and
// the allocation's relay socket is closed: pion then deletes the allocation on that relay's
// own goroutine, never on a listener's. Everything else goes on to pion, whose own handlers
// still enforce the peer policy as a backstop (permissionHandler).

// Label values of icebox_turn_permissions_denied_total besides the peer policy's.
const (
	refusedMaxPermissions = "max_permissions"
	refusedMaxChannels    = "max_channels"
	refusedBadRequest     = "bad_request"
)

// Valid channel numbers (RFC 8656, section 12).
const (
	minChannel = 0x4000
	maxChannel = 0x4FFF
)

// control answers r (the request m) here when it must; an empty answer hands the request on
// to pion. Requests that pion would refuse for their credentials are handed on.
func (t *listener) control(r *request, m *stun.Message) answer {
	switch m.Type.Method {
	case stun.MethodCreatePermission, stun.MethodChannelBind, stun.MethodRefresh:
	default:
		return answer{}
	}
	t.mu.Lock()
	a := t.allocs[r.src]
	if a == nil || t.refusal(r, a, t.s.now()) != "" {
		t.mu.Unlock()
		return answer{}
	}
	if m.Type.Method == stun.MethodRefresh {
		return t.refresh(r, m, a) // unlocks
	}
	code, reason := t.admit(m, a)
	t.mu.Unlock()
	if code == 0 {
		return answer{}
	}
	t.s.metrics.permissionDenied.WithLabelValues(reason).Inc()
	return answer{b: respond(m, stun.ClassErrorResponse, r.key, &stun.ErrorCodeAttribute{Code: code})}
}

// admit decides a CreatePermission or ChannelBind on allocation a: 0 lets pion do it, else the
// error code and the metric's reason. t.mu is held.
func (t *listener) admit(m *stun.Message, a *allocState) (stun.ErrorCode, string) {
	peers, err := peerAddresses(m)
	if err != nil || len(peers) == 0 {
		return stun.CodeBadRequest, refusedBadRequest
	}
	var number uint16
	if m.Type.Method == stun.MethodChannelBind {
		if number, err = channelNumber(m); err != nil || number < minChannel || number > maxChannel || len(peers) != 1 {
			return stun.CodeBadRequest, refusedBadRequest
		}
	}
	for _, p := range peers {
		if reason := t.s.policy.permit(p.Addr()); reason != "" {
			return stun.CodeForbidden, reason
		}
	}
	newPerms := 0
	seen := make(map[netip.Addr]struct{}, len(peers))
	for _, p := range peers {
		ip := p.Addr().Unmap()
		if _, has := a.perms[ip]; has {
			continue
		}
		if _, dup := seen[ip]; !dup {
			seen[ip] = struct{}{}
			newPerms++
		}
	}
	if m.Type.Method == stun.MethodChannelBind {
		peer := netip.AddrPortFrom(peers[0].Addr().Unmap(), peers[0].Port())
		_, bound := a.channels[number]
		_, peerBound := a.channelOf[peer]
		// A refresh, or a number or peer bound to something else (pion answers 400).
		if limit := int(t.s.limits.maxChannels.Load()); !bound && !peerBound && limit > 0 && len(a.channels) >= limit {
			return stun.CodeInsufficientCapacity, refusedMaxChannels
		}
	}
	if limit := int(t.s.limits.maxPermissions.Load()); newPerms > 0 && limit > 0 && len(a.perms)+newPerms > limit {
		return stun.CodeInsufficientCapacity, refusedMaxPermissions
	}
	return 0, ""
}

// refresh answers a Refresh with lifetime 0 (a deletion) on allocation a; once the answer is
// sent, it closes the relay socket so that pion deletes the allocation on the relay's
// goroutine. Any other Refresh goes on to pion. t.mu is held, and released here.
func (t *listener) refresh(r *request, m *stun.Message, a *allocState) answer {
	v, err := m.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 || binary.BigEndian.Uint32(v) != 0 {
		t.mu.Unlock()
		return answer{}
	}
	first := !a.closing
	a.closing = true
	rc, user := a.relay, a.quotaUser
	t.mu.Unlock()
	ans := answer{b: respond(m, stun.ClassSuccessResponse, r.key, stun.RawAttribute{Type: stun.AttrLifetime, Length: 4, Value: []byte{0, 0, 0, 0}})}
	if first {
		// Gone for the client from here, before the answer: its quota slot, the gauge, the
		// fast path, its relay port. The socket closes after the answer, on a goroutine of its
		// own: the close waits for the relay's reader, which then runs pion's teardown.
		t.detach(a)
		t.s.quota.release(user)
		t.s.metrics.allocations.WithLabelValues(t.name).Dec()
		if rc != nil && rc.retire() {
			ans.then = func() { go func() { _ = rc.raw.close() }() }
		}
	}
	return ans
}

// respond builds the response of class to request m, signed with key.
func respond(m *stun.Message, class stun.MessageClass, key []byte, attrs ...stun.Setter) []byte {
	setters := append([]stun.Setter{stun.NewTransactionIDSetter(m.TransactionID), stun.NewType(m.Type.Method, class)}, attrs...)
	out, err := stun.Build(append(setters, stun.MessageIntegrity(key), stun.Fingerprint)...)
	if err != nil {
		return nil
	}
	return out.Raw
}

var errBadChannelNumber = errors.New("CHANNEL-NUMBER is not 4 bytes")

// channelNumber is the request's CHANNEL-NUMBER.
func channelNumber(m *stun.Message) (uint16, error) {
	v, err := m.Get(stun.AttrChannelNumber)
	if err != nil {
		return 0, err
	}
	if len(v) != 4 {
		return 0, errBadChannelNumber
	}
	return binary.BigEndian.Uint16(v), nil
}

// peerAddresses decodes every XOR-PEER-ADDRESS of m, as pion does, one by one.
func peerAddresses(m *stun.Message) ([]netip.AddrPort, error) {
	var peers []netip.AddrPort
	for _, attr := range m.Attributes {
		if attr.Type != stun.AttrXORPeerAddress {
			continue
		}
		one := &stun.Message{TransactionID: m.TransactionID}
		one.Add(stun.AttrXORPeerAddress, attr.Value)
		var a stun.XORMappedAddress
		if err := a.GetFromAs(one, stun.AttrXORPeerAddress); err != nil {
			return nil, err
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.Port < 0 || a.Port > 65535 {
			return nil, errBadPeerAddress
		}
		peers = append(peers, netip.AddrPortFrom(ip, uint16(a.Port)))
	}
	return peers, nil
}

var errBadPeerAddress = errors.New("malformed XOR-PEER-ADDRESS")
