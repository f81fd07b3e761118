package signaling

import (
	"errors"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// handle runs one valid message of s; a returned error is answered to the client.
func (h *Hub) handle(s *session, m protocol.Message) *protocolError {
	// One message of a session at a time, even while a resumed connection replaces another.
	s.op.Lock()
	defer s.op.Unlock()
	ctx, cancel := h.busContext()
	defer cancel()
	s.mu.Lock()
	room, id := s.room, s.id
	s.mu.Unlock()
	switch m.Type {
	case protocol.TypePing:
		h.reply(s, encode(protocol.Reply{Type: protocol.TypePong, Re: m.ID}))
	case protocol.TypeJoin:
		switch {
		case room != "":
			return protoErr(protocol.CodeAlreadyJoined, "already in room %q; leave first", room)
		case !allows(id, m.Room):
			return protoErr(protocol.CodeForbidden, "this token only allows room %q", id.Room)
		}
		h.mu.Lock()
		draining := h.draining
		h.mu.Unlock()
		if draining {
			return protoErr(protocol.CodeUnavailable, "this node is shutting down; reconnect to join")
		}
		joined := func(before []protocol.Member) {
			s.mu.Lock()
			s.room, s.meta, s.left = m.Room, m.Meta, false
			s.mu.Unlock()
			h.reply(s, encode(protocol.Joined{Type: protocol.TypeJoined, Room: m.Room, Peers: before, Re: m.ID}))
		}
		size := h.limits.Load().maxRoomSize
		_, err := h.bus.Join(ctx, m.Room, protocol.Member{Peer: s.peer, Meta: m.Meta}, size, joined)
		if errors.Is(err, ErrRoomFull) {
			return protoErr(protocol.CodeRoomFull, "room %q has %d peers, the most it takes", m.Room, size)
		}
		if err != nil {
			return h.unavailable(err)
		}
	case protocol.TypeSignal:
		if room == "" {
			return protoErr(protocol.CodeNotJoined, "join a room first")
		}
		in, err := h.bus.Contains(ctx, room, m.To)
		if err != nil {
			return h.unavailable(err)
		}
		if m.To == s.peer || !in {
			return protoErr(protocol.CodeUnknownPeer, "no peer %q in room %q", truncate(m.To, 64), room)
		}
		if err := h.bus.Send(ctx, room, []string{m.To}, relayFrame(protocol.TypeSignal, s.peer, m.Data)); err != nil {
			return h.unavailable(err)
		}
	case protocol.TypeBroadcast:
		if room == "" {
			return protoErr(protocol.CodeNotJoined, "join a room first")
		}
		members, err := h.bus.Members(ctx, room)
		if err != nil {
			return h.unavailable(err)
		}
		if err := h.bus.Send(ctx, room, peerIDs(others(members, s.peer)), relayFrame(protocol.TypeBroadcast, s.peer, m.Data)); err != nil {
			return h.unavailable(err)
		}
	case protocol.TypeLeave:
		if room == "" {
			return protoErr(protocol.CodeNotJoined, "not in a room")
		}
		s.mu.Lock()
		s.room, s.meta, s.left = "", nil, true
		s.mu.Unlock()
		// A failed leave is the bus's to finish once it can, and to tell the room then.
		_ = h.bus.Leave(ctx, room, s.peer, protocol.ReasonLeft)
		// After the leave: what the room told the peer before comes before left.
		h.reply(s, encode(protocol.Reply{Type: protocol.TypeLeft, Re: m.ID}))
	}
	return nil
}

// unavailable is the answer while the bus cannot be reached. It is not logged: the bus logs
// its outage and a summary of what failed, and the metrics count every answer.
func (h *Hub) unavailable(err error) *protocolError {
	h.log.Debug("signaling: bus unavailable", "err", err)
	return protoErr(protocol.CodeUnavailable, "rooms are unavailable right now; try again")
}
