package signaling

import (
	"context"
	"sync/atomic"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/httpapi"
	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// opening is a connection on its way to a session: who it is, and what it asks to resume.
type opening struct {
	c        *conn
	id       credentials.Identity
	client   httpapi.Client
	reserved bool   // admission took a slot of client for it
	resume   string // the token presented ("" for none)
	last     uint64 // the last seq the client has, when hasLast
	hasLast  bool
}

// open starts the session of a new connection: the one its token resumes on this node
// (resumeLocal), else the one another node hands over (adopt), else a fresh one (openFresh).
// It writes nothing; the welcome is returned.
func (h *Hub) open(o opening) (*session, []byte, error) {
	if o.resume != "" {
		if s, ok := h.resumeLocal(o); ok {
			return s, h.welcome(s, o.id, true), nil
		}
		if h.store != nil {
			if s, ok := h.adopt(o); ok {
				return s, h.welcome(s, o.id, true), nil
			}
		}
		h.metrics.resumes.WithLabelValues("unknown_token").Inc()
	}
	s, err := h.openFresh(o)
	if err != nil {
		return nil, nil, err
	}
	return s, h.welcome(s, o.id, false), nil
}

// openFresh is a new session with a new peer id.
func (h *Hub) openFresh(o opening) (*session, error) {
	token := randomID(32)
	s := newSession(randomID(12), token, o.id, h.cfg.MaxQueuedBytes, &h.queued)
	s.conn = o.c
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	h.sessions[s.peer] = s
	h.tokens[token] = s
	h.take(s, o)
	h.mu.Unlock()
	h.bus.Attach(s.peer, func(f []byte) { h.deliver(s, f) })
	h.register(s, token)
	return s, nil
}

// take makes s hold a slot of o's client (admission's, or a new one); h.mu is held.
func (h *Hub) take(s *session, o opening) {
	s.client = o.client
	if !o.reserved {
		h.clients[o.client]++
	}
}

// register tells the session store that token resumes s.
func (h *Hub) register(s *session, token string) {
	if h.store == nil {
		return
	}
	ctx, cancel := h.busContext()
	defer cancel()
	h.store.register(ctx, token, s.peer, s.id.User)
}

// resumeLocal resumes a session of this node: same user, and a room the presenting token
// allows. Its claims apply from now on. A resume while the old socket still looks open
// replaces it, silently for the room.
func (h *Hub) resumeLocal(o opening) (*session, bool) {
	h.mu.Lock()
	s := h.tokens[o.resume]
	if s == nil {
		h.mu.Unlock()
		return nil, false
	}
	s.mu.Lock()
	user, room := s.id.User, s.room
	s.mu.Unlock()
	if user != o.id.User {
		h.mu.Unlock()
		return nil, false // a token is no way into another user's session
	}
	if !allows(o.id, room) {
		h.mu.Unlock()
		// The new token keeps the user out of the session's room: it ends, and the client
		// starts afresh.
		h.end(s, "forbidden")
		return nil, false
	}
	if h.closed {
		h.mu.Unlock()
		return nil, false
	}
	delete(h.tokens, o.resume) // single use
	token := randomID(32)
	h.tokens[token] = s
	if s.client != o.client {
		h.release(s.client)
		h.take(s, o)
	} else if o.reserved {
		h.release(o.client) // the session already holds the client's slot
	}
	h.mu.Unlock()

	s.mu.Lock()
	s.id, s.token = o.id, token
	old := s.conn
	if s.grace != nil {
		s.grace.Stop()
		s.grace = nil
	}
	s.rewind(o.last, o.hasLast)
	s.conn = o.c
	s.mu.Unlock()
	if old != nil {
		old.close(protocol.CloseReplaced, "replaced by a resumed connection", nil, "replaced")
	}
	if h.store != nil {
		ctx, cancel := h.busContext()
		h.store.forget(ctx, o.resume)
		cancel()
	}
	h.register(s, token)
	h.metrics.resumes.WithLabelValues("resumed").Inc()
	return s, true
}

// adopt resumes a session another node holds: that node hands it over with its mailbox (or,
// if it died, this node takes its peer id and room).
func (h *Hub) adopt(o opening) (*session, bool) {
	ctx, cancel := context.WithTimeout(h.life, handoverTimeout+busTimeout)
	defer cancel()
	ho, err := h.store.take(ctx, o.resume, o.id.User)
	if err != nil || ho == nil {
		return nil, false // counted by the store
	}
	token := randomID(32)
	s := sessionFrom(ho, token, o.id, o.last, o.hasLast, h.cfg.MaxQueuedBytes, &h.queued)
	h.mu.Lock()
	h.sessions[s.peer] = s
	h.tokens[token] = s
	h.take(s, o)
	closed := h.closed
	h.mu.Unlock()
	h.bus.Attach(s.peer, func(f []byte) { h.deliver(s, f) })
	h.store.moved(ctx, ho)
	if closed || !allows(o.id, ho.Room) {
		// Shutting down, or the new token keeps the user out of the session's room: the
		// session ends here (its room hears it), and the client starts afresh.
		reason := "forbidden"
		if closed {
			reason = "shutdown"
		}
		h.end(s, reason)
		return nil, false
	}
	s.mu.Lock()
	s.conn = o.c
	s.mu.Unlock()
	h.register(s, token)
	h.metrics.resumes.WithLabelValues("resumed").Inc()
	return s, true
}

// allows reports whether a token with claims id may be in room ("": no room).
func allows(id credentials.Identity, room string) bool {
	return id.Room == "" || room == "" || room == id.Room
}

// welcome is the first message of a connection; a resumed one says where the session is.
func (h *Hub) welcome(s *session, id credentials.Identity, resumed bool) []byte {
	s.mu.Lock()
	token, room := s.token, s.room
	s.mu.Unlock()
	servers, ttl := h.ice(id)
	w := protocol.Welcome{Type: protocol.TypeWelcome, Peer: s.peer, Resume: token, ICEServers: iceServers(servers), TTL: ttl}
	if resumed {
		peers := []protocol.Member{}
		if room != "" {
			ctx, cancel := h.busContext()
			members, err := h.bus.Members(ctx, room)
			cancel()
			if err == nil {
				peers = others(members, s.peer)
			}
		}
		w.Resumed, w.Room, w.Peers = true, room, &peers
	}
	return encode(w)
}

// iceServers are the welcome's iceServers: what /ice-config would give.
func iceServers(list []credentials.ICEServer) []protocol.ICEServer {
	out := make([]protocol.ICEServer, len(list))
	for i, s := range list {
		out[i] = protocol.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential}
	}
	return out
}

// sessionFrom is a session handed over by another node, for a client that has every frame
// up to last (when hasLast).
func sessionFrom(ho *handover, token string, id credentials.Identity, last uint64, hasLast bool, budget int, total *atomic.Int64) *session {
	s := newSession(ho.Peer, token, id, budget, total)
	s.room, s.meta, s.left = ho.Room, ho.Meta, ho.Left
	if ho.Adopted {
		// The mailbox died with its node: go on after what the client has, so that its
		// dedupe by seq keeps working.
		if hasLast {
			s.nextSeq = last + 1
		}
		s.written = s.nextSeq - 1
	} else {
		s.nextSeq, s.written = ho.NextSeq, ho.Written
		for _, f := range ho.Frames {
			s.queue = append(s.queue, frame{seq: f.Seq, data: f.Data})
			s.bytes += len(f.Data)
			if f.Seq > s.written {
				s.unsent += len(f.Data)
			}
		}
		total.Add(int64(s.bytes))
	}
	s.rewind(last, hasLast)
	return s
}
