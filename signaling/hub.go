package signaling

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/httpapi"
	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// Options is what New needs besides the signaling section.
type Options struct {
	// Bus holds rooms and delivers messages; nil means a LocalBus.
	Bus Bus
	// Sessions lets sessions move between nodes (resume on another node); nil: a session
	// lives and dies on this node. With a NodeBus, the same NodeBus.
	Sessions SessionStore
	// Auth checks the token of each connection (auth.mode).
	Auth *credentials.Authenticator
	// Access is the http section's origin policy and trusted proxies (nil: same-origin only,
	// no proxies).
	Access *httpapi.Access
	// ICE returns the iceServers and ttl of the welcome, for the connection's identity:
	// the same as /ice-config would give it.
	ICE func(credentials.Identity) ([]credentials.ICEServer, int64)
	// MintLimit, when set, is asked before each welcome (which carries a fresh TURN
	// credential): false refuses the connection with 429, retryAfter as its Retry-After.
	MintLimit func(httpapi.Client) (ok bool, retryAfter time.Duration)
	// Clock runs grace periods and pings (nil: the system clock).
	Clock    Clock
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Hub is the signaling service of one node: it speaks the protocol with the WebSocket
// connections of this node and keeps their sessions; rooms and delivery are the Bus's.
type Hub struct {
	cfg    Config
	bus    Bus
	store  SessionStore // nil: sessions live and die on this node
	auth   *credentials.Authenticator
	access *httpapi.Access
	// limits are the keys a reload changes: rate_limit, max_conns_per_ip, max_room_size
	// (h.cfg keeps the values of the start for the others).
	limits  atomic.Pointer[limits]
	ice     func(credentials.Identity) ([]credentials.ICEServer, int64)
	mint    func(httpapi.Client) (bool, time.Duration)
	clock   Clock
	log     *slog.Logger
	metrics *metrics

	refusals *httpapi.RefusalLog // forbidden origins and rejected tokens, throttled
	upgrader websocket.Upgrader
	poller   *poller  // watches idle connections' sockets; nil: each has a reader goroutine
	workers  *workers // read what the poller woke; flush mailboxes

	// life is the hub's lifetime: every bus call's context derives from it, with a timeout.
	life context.Context
	stop context.CancelFunc

	queued    atomic.Int64 // bytes in every mailbox (max_queued_bytes_total)
	reclaimed atomic.Bool  // a reclaim is running

	mu       sync.Mutex
	sessions map[string]*session // by peer id
	tokens   map[string]*session // by resume token
	conns    map[*conn]struct{}
	// clients counts, per client, the sessions (connected or waiting for a resume) and the
	// connections being opened: signaling.max_conns_per_ip.
	clients  map[httpapi.Client]int
	draining bool
	closed   bool
	done     chan struct{}
}

// busTimeout bounds one call of the bus.
const busTimeout = 5 * time.Second

// New builds the hub; serve it at /ws with ServeHTTP.
func New(cfg Config, o Options) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Bus == nil {
		o.Bus = NewLocalBus()
	}
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Hub{
		cfg: cfg, bus: o.Bus, store: o.Sessions, auth: o.Auth, access: o.Access, ice: o.ICE,
		mint: o.MintLimit, clock: o.Clock, log: o.Logger,
		sessions: map[string]*session{}, tokens: map[string]*session{},
		conns: map[*conn]struct{}{}, clients: map[httpapi.Client]int{}, done: make(chan struct{}),
	}
	if h.access == nil {
		h.access = httpapi.NewAccess(httpapi.Origins{}, nil)
	}
	h.limits.Store(limitsOf(cfg))
	h.refusals = httpapi.NewRefusalLog(o.Logger, "signaling: refused")
	h.life, h.stop = context.WithCancel(context.Background())
	if h.store != nil {
		h.store.bind(h.giveAway)
	}
	h.metrics = newMetrics(o.Registry, h)
	h.workers = newWorkers()
	if p, err := newPoller(); err == nil {
		h.poller = p
	} else {
		h.log.Debug("signaling: every connection reads with a goroutine of its own", "reason", err)
	}
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout:  10 * time.Second,
		ReadBufferSize:    0, // the buffer the hijack hands over (poll.go)
		WriteBufferSize:   1024,
		WriteBufferPool:   &sync.Pool{},                             // idle connections hold no write buffer
		EnableCompression: false,                                    // no permessage-deflate: memory and CPU per connection
		CheckOrigin:       func(*http.Request) bool { return true }, // checked before, with a JSON 403
	}
	return h, nil
}

// limits are the signaling keys a configuration reload changes in place.
type limits struct {
	rateLimit     float64 // rate_limit: for every connection, from the next message on
	maxConnsPerIP int     // max_conns_per_ip: for new connections
	maxRoomSize   int     // max_room_size: for new joins
}

func limitsOf(c Config) *limits {
	return &limits{rateLimit: c.RateLimit, maxConnsPerIP: c.MaxConnsPerIP, maxRoomSize: c.MaxRoomSize}
}

// Reload puts the keys of c that change in place in force: rate_limit (every connection's
// limit, from its next message on), max_conns_per_ip (new connections; a client above a
// lowered limit keeps its sessions) and max_room_size (new joins; fuller rooms keep their
// peers). The other keys keep the values the hub started with: they need a restart (the
// caller tells the operator which).
func (h *Hub) Reload(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	l := limitsOf(c)
	h.mu.Lock()
	h.limits.Store(l)
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.setRate(l.rateLimit)
	}
	return nil
}

// busContext is the context of one bus call.
func (h *Hub) busContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(h.life, busTimeout)
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
// within ctx. Sessions stay where a SessionStore can hand them to another node.
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

	bye := encode(protocol.Bye{Type: protocol.TypeBye, Reason: protocol.ReasonShutdown})
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
	var err error
	select {
	case <-finished:
	case <-ctx.Done():
		for _, c := range conns {
			_ = c.ws.NetConn().Close() // a client that does not take its bye in time
		}
		<-finished
		err = ctx.Err()
	}
	if h.poller != nil {
		h.poller.close()
	}
	h.workers.close()
	h.stop()
	return err
}

// randomID is an unguessable identifier of n random bytes.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// deliver puts a frame into s's mailbox; a client that reads too slowly loses its session,
// and past the node's total the slowest readers are cut.
func (h *Hub) deliver(s *session, f []byte) {
	switch s.push(f) {
	case full:
		go h.end(s, "mailbox_full")
	case pushed:
		if limit := h.cfg.MaxQueuedBytesTotal; limit > 0 && h.queued.Load() > int64(limit) {
			h.reclaim()
		}
	}
}

// reply sends a frame to s itself.
func (h *Hub) reply(s *session, f []byte) { h.deliver(s, f) }

// reclaim brings the node's queued bytes back under max_queued_bytes_total: first every
// mailbox forgets what it only kept for a replay, then the sessions with the most unsent
// bytes (the slowest readers) are ended, most first.
func (h *Hub) reclaim() {
	if !h.reclaimed.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer h.reclaimed.Store(false)
		limit := int64(h.cfg.MaxQueuedBytesTotal)
		h.mu.Lock()
		all := make([]*session, 0, len(h.sessions))
		for _, s := range h.sessions {
			all = append(all, s)
		}
		h.mu.Unlock()
		for _, s := range all {
			s.trim()
		}
		for h.queued.Load() > limit {
			var worst *session
			most := 0
			for _, s := range all {
				if q := s.queued(); q > most {
					worst, most = s, q
				}
			}
			if worst == nil {
				return
			}
			h.end(worst, "memory")
		}
	}()
}

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
// stays for resume_grace (holding its client's slot) unless another connection already took
// it over.
func (h *Hub) dropped(c *conn) {
	h.metrics.drops.WithLabelValues(c.dropReason).Inc()
	h.mu.Lock()
	delete(h.conns, c)
	closed := h.closed
	h.mu.Unlock()

	s := c.s
	s.mu.Lock()
	if s.conn != c || s.ended || closed {
		s.mu.Unlock()
		return
	}
	s.conn = nil
	s.grace = h.clock.AfterFunc(h.cfg.ResumeGrace, func() { h.expire(s) })
	token := s.token
	s.mu.Unlock()
	if h.store != nil {
		ctx, cancel := h.busContext()
		h.store.dropped(ctx, token, h.cfg.ResumeGrace)
		cancel()
	}
}

// expire ends a session whose grace passed without a resume: "left" when its client had
// left its room before its connection ended, else "grace_expired".
func (h *Hub) expire(s *session) {
	s.mu.Lock()
	waiting := s.conn == nil && !s.ended
	reason := "grace_expired"
	if s.left {
		reason = "left"
	}
	s.mu.Unlock()
	if waiting {
		h.end(s, reason)
	}
}

// end ends a session: it leaves its room (the others get peer-left "disconnected"), its token
// stops working, its client's slot is free, and its connection, if any, is closed.
func (h *Hub) end(s *session, reason string) {
	s.op.Lock() // after the message in progress
	defer s.op.Unlock()
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
	s.room = ""
	s.empty()
	s.mu.Unlock()

	h.mu.Lock()
	delete(h.sessions, s.peer)
	if h.tokens[token] == s {
		delete(h.tokens, token)
	}
	h.release(s.client)
	h.mu.Unlock()
	ctx, cancel := h.busContext()
	defer cancel()
	if room != "" {
		// A failed leave is the bus's to finish (and count); a log line per session would
		// flood the log during an outage.
		_ = h.bus.Leave(ctx, room, s.peer, protocol.ReasonDisconnected)
	}
	h.bus.Detach(s.peer)
	if h.store != nil {
		h.store.forget(ctx, token)
	}
	if c != nil {
		switch reason {
		case "mailbox_full", "memory": // a slow reader
			c.close(websocket.ClosePolicyViolation, "too slow: send queue full", nil, reason)
		default:
			c.close(protocol.CloseReplaced, "session ended", nil, reason)
		}
	}
	h.metrics.sessionsEnded.WithLabelValues(reason).Inc()
}

// release gives back a slot of client; h.mu is held.
func (h *Hub) release(c httpapi.Client) {
	if h.clients[c]--; h.clients[c] <= 0 {
		delete(h.clients, c)
	}
}

// giveAway hands the session token resumes to another node, where its client reconnected:
// it ends here without a word to its room, and its connection, if it still looks open, is
// closed as replaced.
func (h *Hub) giveAway(token, user string) (*handover, bool) {
	h.mu.Lock()
	s := h.tokens[token]
	if s == nil {
		h.mu.Unlock()
		return nil, false
	}
	s.mu.Lock()
	owner := s.id.User
	s.mu.Unlock()
	if owner != user {
		h.mu.Unlock()
		return nil, false
	}
	delete(h.tokens, token)
	delete(h.sessions, s.peer)
	h.release(s.client)
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
	ho := &handover{Peer: s.peer, Room: s.room, Meta: s.meta, Left: s.left, NextSeq: s.nextSeq, Written: s.written}
	for _, f := range s.queue {
		ho.Frames = append(ho.Frames, handoverFrame{Seq: f.seq, Data: f.data})
	}
	c := s.conn
	s.room = ""
	s.empty()
	s.mu.Unlock()
	s.op.Unlock()

	if c != nil {
		c.close(protocol.CloseReplaced, "resumed on another node", nil, "moved")
	}
	h.metrics.sessionsEnded.WithLabelValues("moved").Inc()
	return ho, true
}
