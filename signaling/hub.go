package signaling

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/credentials"
)

// Options is what New needs besides the signaling section.
type Options struct {
	// Bus holds rooms and delivers messages; nil means a LocalBus.
	Bus Bus
	// Auth checks the token of each connection (auth.mode).
	Auth *credentials.Authenticator
	// Origins and Proxies are the http section's origin policy and trusted proxies.
	Origins credentials.Origins
	Proxies credentials.Proxies
	// ICE returns the iceServers and ttl of the welcome, for the connection's identity:
	// the same as /ice-config would give it.
	ICE func(credentials.Identity) ([]credentials.ICEServer, int64)
	// MintLimit, when set, is asked before each welcome (which carries a fresh TURN
	// credential): false refuses the connection with 429, retryAfter as its Retry-After.
	MintLimit func(netip.Addr) (ok bool, retryAfter time.Duration)
	Logger    *slog.Logger
	Registry  prometheus.Registerer
}

// Hub is the signaling service of one node: it speaks the protocol with the WebSocket
// connections of this node and keeps their sessions; rooms and delivery are the Bus's.
type Hub struct {
	cfg     Config
	bus     Bus
	store   sessionStore // nil: sessions live and die on this node
	auth    *credentials.Authenticator
	origins credentials.Origins
	proxies credentials.Proxies
	ice     func(credentials.Identity) ([]credentials.ICEServer, int64)
	mint    func(netip.Addr) (bool, time.Duration)
	log     *slog.Logger
	metrics *metrics

	refusals *credentials.RefusalLog // forbidden origins and rejected tokens, throttled
	upgrader websocket.Upgrader

	mu       sync.Mutex
	sessions map[string]*session // by peer id
	tokens   map[string]*session // by resume token
	conns    map[*conn]struct{}
	perIP    map[netip.Addr]int
	draining bool
	closed   bool
	done     chan struct{}
}

// New builds the hub; serve it at /ws with ServeHTTP.
func New(cfg Config, o Options) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Bus == nil {
		o.Bus = NewLocalBus()
	}
	h := &Hub{
		cfg: cfg, bus: o.Bus, auth: o.Auth, origins: o.Origins, proxies: o.Proxies, ice: o.ICE, mint: o.MintLimit, log: o.Logger,
		sessions: map[string]*session{}, tokens: map[string]*session{},
		conns: map[*conn]struct{}{}, perIP: map[netip.Addr]int{}, done: make(chan struct{}),
		refusals: credentials.NewRefusalLog(o.Logger, "signaling: refused"),
	}
	if st, ok := o.Bus.(sessionStore); ok {
		h.store = st
		st.bind(h.giveAway, h.peerGone)
	}
	h.metrics = newMetrics(o.Registry, h)
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout:  10 * time.Second,
		ReadBufferSize:    1024,
		WriteBufferSize:   1024,
		WriteBufferPool:   &sync.Pool{},                             // idle connections hold no write buffer
		EnableCompression: false,                                    // no permessage-deflate: memory and CPU per connection
		CheckOrigin:       func(*http.Request) bool { return true }, // checked before, with a JSON 403
	}
	return h, nil
}

// Serve blocks until Shutdown; the connections run on their own goroutines.
func (h *Hub) Serve() error {
	<-h.done
	return nil
}

// Drain refuses new joins (unavailable) and new sessions from now on; rooms go on.
func (h *Hub) Drain() {
	h.mu.Lock()
	h.draining = true
	h.mu.Unlock()
}

// Shutdown sends bye to every connection and closes it with 1012, and waits for them to end
// within ctx.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	for _, s := range h.sessions {
		s.mu.Lock()
		if s.grace != nil {
			s.grace.Stop()
		}
		s.ended = true
		s.mu.Unlock()
	}
	close(h.done)
	h.mu.Unlock()

	bye := encode(byeMsg{Type: TypeBye, Reason: ReasonShutdown})
	for _, c := range conns {
		c.close(websocket.CloseServiceRestart, "server shutting down", bye, "shutdown")
	}
	finished := make(chan struct{})
	go func() {
		for _, c := range conns {
			c.done.Wait()
		}
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		for _, c := range conns {
			_ = c.ws.NetConn().Close() // a client that does not take its bye in time
		}
		<-finished
		return ctx.Err()
	}
}

// randomID is an unguessable identifier of n random bytes.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// open starts the session of a new connection: a fresh one, or the one resumeToken names if
// it is alive and belongs to the same user. It writes nothing; the welcome is returned.
func (h *Hub) open(c *conn, id credentials.Identity, resumeToken string, last uint64, hasLast bool) (*session, []byte, error) {
	// A token this node does not know may be another node's: that node hands the session
	// over (or, if it died, this node adopts its peer id and room).
	var moved *handover
	if resumeToken != "" && h.store != nil {
		h.mu.Lock()
		_, here := h.tokens[resumeToken]
		h.mu.Unlock()
		if !here {
			ctx, cancel := context.WithTimeout(context.Background(), handoverTimeout+2*time.Second)
			ho, err := h.store.take(ctx, resumeToken, id.User)
			cancel()
			if err != nil {
				h.log.Warn("signaling: resume on another node", "err", err)
			}
			moved = ho
		}
	}

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, nil, ErrClosed
	}
	s := h.tokens[resumeToken]
	if s != nil && s.id.User != id.User {
		s = nil // a token is no way into another user's session
	}
	if s != nil {
		delete(h.tokens, resumeToken) // single use
	}
	token := randomID(32)
	resumed := s != nil
	switch {
	case !resumed && moved != nil:
		s = sessionFrom(moved, token, id, last, hasLast)
		h.sessions[s.peer] = s
		resumed = true
	case !resumed:
		s = newSession(randomID(12), token, id)
		h.sessions[s.peer] = s
	}
	h.tokens[token] = s
	h.mu.Unlock()

	var old *conn
	s.mu.Lock()
	if resumed {
		s.token = token
		old = s.conn
		if s.grace != nil {
			s.grace.Stop()
			s.grace = nil
		}
		s.rewind(last, hasLast)
	}
	s.conn = c
	room := s.room
	s.mu.Unlock()

	if old != nil {
		// The old socket still looked open: this resume replaces it, silently for the room.
		old.close(CloseReplaced, "replaced by a resumed connection", nil, "replaced")
	}
	if !resumed || moved != nil {
		h.bus.Attach(s.peer, func(f []byte) { h.deliver(s, f) })
	}
	if moved != nil {
		h.store.moved(context.Background(), moved)
	}
	if h.store != nil {
		if resumeToken != "" && moved == nil && resumed {
			h.store.forget(resumeToken)
		}
		h.store.register(token, s.peer, id.User)
	}
	servers, ttl := h.ice(id)
	w := welcomeMsg{Type: TypeWelcome, Peer: s.peer, Resume: token, ICEServers: servers, TTL: ttl}
	if resumed {
		peers := []Member{}
		if room != "" {
			members, err := h.bus.Members(context.Background(), room)
			if err != nil {
				return nil, nil, err
			}
			peers = others(members, s.peer)
		}
		w.Resumed, w.Room, w.Peers = true, room, &peers
		h.metrics.resumes.WithLabelValues("resumed").Inc()
	} else if resumeToken != "" {
		h.metrics.resumes.WithLabelValues("unknown_token").Inc()
	}
	return s, encode(w), nil
}

func others(members []Member, self string) []Member {
	return slices.DeleteFunc(members, func(m Member) bool { return m.Peer == self })
}

// deliver puts a frame into s's mailbox; a full mailbox ends the session.
func (h *Hub) deliver(s *session, f []byte) {
	if !s.push(f) {
		go h.end(s, "mailbox_full")
	}
}

// reply sends a frame to s itself.
func (h *Hub) reply(s *session, f []byte) { h.deliver(s, f) }

// acked records a pong of c acknowledging every frame up to seq.
func (h *Hub) acked(c *conn, seq uint64) {
	c.s.mu.Lock()
	current := c.s.conn == c
	c.s.mu.Unlock()
	if current {
		c.s.ack(seq)
	}
}

// dropped is called once c's reader and writer have ended, by a drop or a close: the session
// stays for resume_grace unless another connection already took it over.
func (h *Hub) dropped(c *conn) {
	h.metrics.drops.WithLabelValues(c.dropReason).Inc()
	h.mu.Lock()
	delete(h.conns, c)
	if h.perIP[c.ip]--; h.perIP[c.ip] <= 0 {
		delete(h.perIP, c.ip)
	}
	closed := h.closed
	h.mu.Unlock()

	s := c.s
	s.mu.Lock()
	if s.conn != c || s.ended || closed {
		s.mu.Unlock()
		return
	}
	s.conn = nil
	grace := h.cfg.ResumeGrace
	s.grace = time.AfterFunc(grace, func() { h.expire(s) })
	token := s.token
	s.mu.Unlock()
	if h.store != nil {
		h.store.dropped(token)
	}
}

// expire ends a session whose grace passed without a resume.
func (h *Hub) expire(s *session) {
	s.mu.Lock()
	waiting := s.conn == nil && !s.ended
	s.mu.Unlock()
	if waiting {
		h.end(s, "grace_expired")
	}
}

// end ends a session: it leaves its room (the others get peer-left "disconnected"), its token
// stops working, and its connection, if any, is closed.
func (h *Hub) end(s *session, reason string) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if s.grace != nil {
		s.grace.Stop()
	}
	room, token, c := s.room, s.token, s.conn
	s.room, s.queue = "", nil
	s.mu.Unlock()

	h.mu.Lock()
	delete(h.sessions, s.peer)
	if h.tokens[token] == s {
		delete(h.tokens, token)
	}
	h.mu.Unlock()
	h.bus.Detach(s.peer)
	if h.store != nil {
		h.store.forget(token)
	}
	if c != nil { // the mailbox overflowed while it was connected: a slow reader
		c.close(websocket.ClosePolicyViolation, "too slow: send queue full", nil, reason)
	}
	h.metrics.sessionsEnded.WithLabelValues(reason).Inc()
	if room != "" {
		h.leaveRoom(s.peer, room, ReasonDisconnected)
	}
}

// giveAway hands the session token resumes to another node, where its client reconnected:
// it ends here without a word to its room, and its connection, if it still looks open, is
// closed as replaced.
func (h *Hub) giveAway(token, user string) (*handover, bool) {
	h.mu.Lock()
	s := h.tokens[token]
	if s == nil || s.id.User != user {
		h.mu.Unlock()
		return nil, false
	}
	delete(h.tokens, token)
	delete(h.sessions, s.peer)
	closed := h.closed // shutting down: every session is ended, and may still move on
	h.mu.Unlock()

	s.op.Lock() // no message of the session half handled
	// From now on the bus passes frames for the peer on to the other node; those already in
	// the mailbox go with the session.
	h.bus.Detach(s.peer)
	s.mu.Lock()
	if s.ended && !closed {
		s.mu.Unlock()
		s.op.Unlock()
		return nil, false
	}
	s.ended = true
	if s.grace != nil {
		s.grace.Stop()
	}
	ho := &handover{Peer: s.peer, Room: s.room, Meta: s.meta, NextSeq: s.nextSeq, Written: s.written}
	for _, f := range s.queue {
		ho.Frames = append(ho.Frames, handoverFrame{Seq: f.seq, Data: f.data})
	}
	c := s.conn
	s.room, s.queue = "", nil
	s.mu.Unlock()
	s.op.Unlock()

	if c != nil {
		c.close(CloseReplaced, "resumed on another node", nil, "moved")
	}
	h.metrics.sessionsEnded.WithLabelValues("moved").Inc()
	return ho, true
}

// sessionFrom is a session handed over by another node, for a client that has every frame
// up to last (when hasLast).
func sessionFrom(ho *handover, token string, id credentials.Identity, last uint64, hasLast bool) *session {
	s := newSession(ho.Peer, token, id)
	s.room, s.meta = ho.Room, ho.Meta
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
		}
	}
	return s // open rewinds it to what the client has
}

// peerGone tells room that peer, whose node died, is gone.
func (h *Hub) peerGone(room, peer string) {
	ctx := context.Background()
	members, err := h.bus.Members(ctx, room)
	if err != nil {
		h.log.Warn("signaling: members", "err", err)
		return
	}
	f := encode(peerLeftMsg{Type: TypePeerLeft, Room: room, Peer: peer, Reason: ReasonDisconnected})
	if err := h.bus.Send(ctx, room, peerIDs(others(members, peer)), f); err != nil {
		h.log.Warn("signaling: send", "err", err)
	}
}

// leaveRoom takes peer out of room and tells the others why.
func (h *Hub) leaveRoom(peer, room, reason string) {
	ctx := context.Background()
	if err := h.bus.Leave(ctx, room, peer); err != nil {
		// The bus finishes the leave, and tells the room, when it can.
		h.log.Warn("signaling: leave", "err", err)
		return
	}
	members, err := h.bus.Members(ctx, room)
	if err != nil {
		h.log.Warn("signaling: members", "err", err)
		return
	}
	f := encode(peerLeftMsg{Type: TypePeerLeft, Room: room, Peer: peer, Reason: reason})
	if err := h.bus.Send(ctx, room, peerIDs(others(members, peer)), f); err != nil {
		h.log.Warn("signaling: send", "err", err)
	}
}

func peerIDs(ms []Member) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.Peer
	}
	return ids
}

// handle runs one valid message of s; a returned error is answered to the client.
func (h *Hub) handle(s *session, m inbound) *protocolError {
	// One message of a session at a time, even while a resumed connection replaces another.
	s.op.Lock()
	defer s.op.Unlock()
	ctx := context.Background()
	s.mu.Lock()
	room := s.room
	s.mu.Unlock()
	switch m.Type {
	case TypePing:
		h.reply(s, encode(replyMsg{Type: TypePong, Re: m.ID}))
	case TypeJoin:
		return h.join(ctx, s, room, m)
	case TypeSignal:
		if room == "" {
			return protoErr(CodeNotJoined, "join a room first")
		}
		in, err := h.bus.Contains(ctx, room, m.To)
		if err != nil {
			return h.unavailable(err)
		}
		if m.To == s.peer || !in {
			return protoErr(CodeUnknownPeer, "no peer %q in room %q", truncate(m.To, 64), room)
		}
		if err := h.bus.Send(ctx, room, []string{m.To}, relayFrame(TypeSignal, s.peer, m.Data)); err != nil {
			return h.unavailable(err)
		}
	case TypeBroadcast:
		if room == "" {
			return protoErr(CodeNotJoined, "join a room first")
		}
		members, err := h.bus.Members(ctx, room)
		if err != nil {
			return h.unavailable(err)
		}
		if err := h.bus.Send(ctx, room, peerIDs(others(members, s.peer)), relayFrame(TypeBroadcast, s.peer, m.Data)); err != nil {
			return h.unavailable(err)
		}
	case TypeLeave:
		if room == "" {
			return protoErr(CodeNotJoined, "not in a room")
		}
		s.mu.Lock()
		s.room, s.meta = "", nil
		s.mu.Unlock()
		h.reply(s, encode(replyMsg{Type: TypeLeft, Re: m.ID}))
		h.leaveRoom(s.peer, room, ReasonLeft)
	}
	return nil
}

func (h *Hub) join(ctx context.Context, s *session, room string, m inbound) *protocolError {
	switch {
	case room != "":
		return protoErr(CodeAlreadyJoined, "already in room %q; leave first", room)
	case s.id.Room != "" && s.id.Room != m.Room:
		return protoErr(CodeForbidden, "this token only allows room %q", s.id.Room)
	}
	h.mu.Lock()
	draining := h.draining
	h.mu.Unlock()
	if draining {
		return protoErr(CodeUnavailable, "this node is shutting down; reconnect to join")
	}
	peersBefore, err := h.bus.Join(ctx, m.Room, Member{Peer: s.peer, Meta: m.Meta}, h.cfg.MaxRoomSize)
	if errors.Is(err, ErrRoomFull) {
		return protoErr(CodeRoomFull, "room %q has %d peers, the most it takes", m.Room, h.cfg.MaxRoomSize)
	}
	if err != nil {
		return h.unavailable(err)
	}
	s.mu.Lock()
	s.room, s.meta = m.Room, m.Meta
	s.mu.Unlock()
	h.reply(s, encode(joinedMsg{Type: TypeJoined, Room: m.Room, Peers: peersBefore, Re: m.ID}))
	f := encode(peerJoinedMsg{Type: TypePeerJoined, Room: m.Room, Peer: s.peer, Meta: m.Meta})
	if err := h.bus.Send(ctx, m.Room, peerIDs(peersBefore), f); err != nil {
		h.log.Warn("signaling: send", "err", err)
	}
	return nil
}

func (h *Hub) unavailable(err error) *protocolError {
	h.log.Warn("signaling: bus unavailable", "err", err)
	return protoErr(CodeUnavailable, "rooms are unavailable right now; try again")
}
