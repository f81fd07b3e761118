package signaling

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// handovers move sessions between nodes, as a state machine per peer, driven by the node
// channel's messages and never run on the receive loop (which only hands them over).
//
// On the node the client reconnected to (the taker):
//
//	take:  the peer's frames are held (until the hub attaches the session) and fenced; the
//	       holder is asked ('t'). Its answer ('h') is the session with its mailbox, or
//	       nothing. No answer within handoverTimeout, or a holder without a heartbeat:
//	       adopted (the peer keeps its id and room; the mailbox died with its node).
//	moved: the room routes the peer here from now; the old node is told ('m'); the fence
//	       stays up until the old node says it passed on its last frame ('e'), or for
//	       fenceTimeout (it died meanwhile).
//
// On the node that held the session (the giver):
//
//	't':   a peer that just arrived here itself goes on only once its fence is down (the
//	       request waits, deferred); otherwise its frames are passed on to the taker from the
//	       moment the hub detaches it, the hub gives the session away, and 'h' answers.
//	'm':   its own marker ('k') goes out on its own channel, behind every frame routed to it
//	       before the move (those in its channel, and those its own Sends in flight were
//	       left to pass on); when the marker comes back, the taker gets 'e'.
type handovers struct {
	b *NodeBus

	mu       sync.Mutex
	give     func(token, user string) (*handover, bool)
	waits    map[string]chan *handover // requests in flight, by id
	fences   map[string]Timer          // fence timeouts of peers that moved here
	deferred map[string][]takeMsg      // requests for fenced peers
}

// handoverTimeout bounds the wait for a live node to give a session away.
const handoverTimeout = 3 * time.Second

// fenceTimeout bounds how long frames for a peer that just moved here wait for the last ones
// its old node passes on (that node died meanwhile). Shorter than handoverTimeout: a request
// deferred behind a fence is answered in time.
const fenceTimeout = 1500 * time.Millisecond

type takeMsg struct {
	ID    string `json:"id"`
	Token string `json:"token"`
	User  string `json:"user"`
	From  string `json:"from"`
}

type handoverMsg struct {
	ID      string    `json:"id"`
	Session *handover `json:"session,omitempty"`
}

func newHandovers(b *NodeBus) *handovers {
	return &handovers{b: b, waits: map[string]chan *handover{}, fences: map[string]Timer{}, deferred: map[string][]takeMsg{}}
}

// take gets the session token names (of user) from the node holding it; nil, nil: none has it.
func (hs *handovers) take(ctx context.Context, token, user string) (*handover, error) {
	b := hs.b
	rec, ok, err := b.br.getSession(ctx, token)
	if err != nil {
		return nil, b.failed("session", err)
	}
	if !ok || rec.user != user || rec.node == b.node {
		return nil, nil // another user's token; or ours, and the hub no longer knows it
	}
	b.deliv.hold(rec.peer)
	var h *handover
	defer func() {
		if h == nil {
			b.deliv.unhold(rec.peer)
		}
	}()
	ago, known, err := b.br.sinceBeat(ctx, rec.node)
	if err != nil {
		return nil, b.failed("session", err)
	}
	if known && ago < b.presence {
		// The node is alive: it gives the session away, mailbox and all.
		var answered bool
		h, answered, err = hs.ask(ctx, rec.node, takeMsg{Token: token, User: user, From: b.node})
		switch {
		case err != nil:
			return nil, err
		case answered && h == nil:
			b.metrics.handovers.WithLabelValues("unknown").Inc()
			return nil, nil
		case h != nil:
			h.From = rec.node
			b.metrics.handovers.WithLabelValues("handed_over").Inc()
			hs.spent(ctx, token)
			return h, nil
		}
		// No answer: the node died since its last heartbeat. Should it still answer later,
		// it gives the session to nobody and passes its frames on here.
		b.metrics.handovers.WithLabelValues("timeout").Inc()
	}
	// The node is dead: its mailbox is lost, but the peer keeps its id and room.
	room, meta, inRoom, err := b.br.move(ctx, rec.peer, b.node)
	if err != nil {
		return nil, b.failed("move", err)
	}
	h = &handover{Peer: rec.peer, From: rec.node, Adopted: true}
	if inRoom {
		h.Room, h.Meta = room, meta
	}
	b.metrics.handovers.WithLabelValues("adopted").Inc()
	hs.spent(ctx, token)
	return h, nil
}

// spent deletes a token whose session moved here.
func (hs *handovers) spent(ctx context.Context, token string) {
	if err := hs.b.br.delSession(ctx, token); err != nil {
		_ = hs.b.failed("session", err) // counted; the token expires
	}
}

// ask sends t to node and waits for its answer; answered false: none came in time.
func (hs *handovers) ask(ctx context.Context, node string, t takeMsg) (h *handover, answered bool, err error) {
	b := hs.b
	id, reply, done := hs.await()
	defer done()
	t.ID = id
	msg, _ := json.Marshal(t)
	if err := b.br.publish(ctx, node, append([]byte{kindTake}, msg...)); err != nil {
		return nil, false, b.failed("publish", err)
	}
	b.metrics.published.Inc()
	timeout := make(chan struct{})
	timer := b.clock.AfterFunc(handoverTimeout, func() { close(timeout) })
	defer timer.Stop()
	select {
	case h = <-reply:
		return h, true, nil
	case <-timeout:
		return nil, false, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// moved makes the session of h live here: the room routes its peer here, and the fence
// stays up until the old node passed on its last frame.
func (hs *handovers) moved(ctx context.Context, h *handover) {
	b := hs.b
	if h.Room != "" {
		if ms, err := b.Members(ctx, h.Room); err == nil {
			b.view.arrived(h.Room, h.Peer, h.Meta, ms)
		}
	}
	if h.Adopted || h.Room == "" { // nothing comes through the old node
		hs.release(h.Peer)
		return
	}
	if _, _, _, err := b.br.move(ctx, h.Peer, b.node); err != nil {
		_ = b.failed("move", err)
		hs.release(h.Peer)
		return
	}
	if err := b.br.publish(ctx, h.From, []byte(string(kindMoved)+h.Peer+"|"+b.node)); err != nil {
		_ = b.failed("publish", err)
		hs.release(h.Peer)
		return
	}
	b.metrics.published.Inc()
	hs.mu.Lock()
	if b.deliv.fenced(h.Peer) {
		hs.fences[h.Peer] = b.clock.AfterFunc(fenceTimeout, func() { hs.release(h.Peer) })
	}
	hs.mu.Unlock()
}

// release takes peer's fence down: what it kept is delivered, and requests for the peer that
// waited behind it go on.
func (hs *handovers) release(peer string) {
	hs.b.deliv.release(peer)
	hs.mu.Lock()
	if t := hs.fences[peer]; t != nil {
		t.Stop()
		delete(hs.fences, peer)
	}
	takes := hs.deferred[peer]
	delete(hs.deferred, peer)
	hs.mu.Unlock()
	for _, t := range takes {
		hs.b.spawn(func() { hs.answerTake(t) })
	}
}

// answerTake answers another node's request for a session of this node (on its own
// goroutine: the hub may have to wait for the session's message in progress).
func (hs *handovers) answerTake(t takeMsg) {
	b := hs.b
	ctx, cancel := context.WithTimeout(b.ctx, handoverTimeout)
	defer cancel()
	peer := ""
	if rec, ok, err := b.br.getSession(ctx, t.Token); err == nil && ok && rec.node == b.node {
		peer = rec.peer
	}
	hs.mu.Lock()
	if peer != "" && b.deliv.fenced(peer) {
		hs.deferred[peer] = append(hs.deferred[peer], t)
		hs.mu.Unlock()
		return
	}
	give := hs.give
	hs.mu.Unlock()
	var prev forwarding
	var had bool
	if peer != "" {
		prev, had = b.deliv.forwardTo(peer, t.From)
	}
	var h *handover
	if give != nil {
		h, _ = give(t.Token, t.User)
	}
	switch {
	case h != nil && h.Peer != peer: // no record of the token: passed on from now
		b.deliv.forwardTo(h.Peer, t.From)
	case h == nil && peer != "":
		b.deliv.undoForward(peer, prev, had)
	}
	if h != nil {
		b.view.movedAway(h.Peer)
		b.recs.forget(t.Token, false) // the taker deletes the record
	}
	msg, _ := json.Marshal(handoverMsg{ID: t.ID, Session: h})
	if err := b.br.publish(ctx, t.From, append([]byte{kindHandover}, msg...)); err != nil {
		_ = b.failed("publish", err)
		return
	}
	b.metrics.published.Inc()
}

// await registers a wait for the answer to a request with a fresh id; done ends the wait.
func (hs *handovers) await() (id string, answer <-chan *handover, done func()) {
	id = randomID(9)
	ch := make(chan *handover, 1)
	hs.mu.Lock()
	hs.waits[id] = ch
	hs.mu.Unlock()
	return id, ch, func() {
		hs.mu.Lock()
		delete(hs.waits, id)
		hs.mu.Unlock()
	}
}

// answer hands h to whoever waits for the request id, if anyone still does.
func (hs *handovers) answer(id string, h *handover) {
	hs.mu.Lock()
	w := hs.waits[id]
	delete(hs.waits, id)
	hs.mu.Unlock()
	if w != nil {
		w <- h
	}
}

// received handles a handover message of the node channel; on the receive loop, so it only
// parses, answers waits and queues what goes out.
func (hs *handovers) received(kind byte, p string) bool {
	b := hs.b
	switch kind {
	case kindTake:
		var t takeMsg
		if json.Unmarshal([]byte(p), &t) != nil {
			return false
		}
		b.spawn(func() { hs.answerTake(t) })
	case kindHandover:
		var m handoverMsg
		if json.Unmarshal([]byte(p), &m) != nil {
			return false
		}
		hs.answer(m.ID, m.Session)
	case kindProbe:
		hs.answer(p, nil)
	case kindMoved: // a peer of ours lives elsewhere now: mark the end of what we route on,
		// behind the frames of the Sends still passing theirs on (off the receive loop)
		mark := []byte(string(kindMark) + p)
		b.spawn(func() {
			b.sending.Lock()
			b.out.publish(b.node, mark)
			b.sending.Unlock()
		})
	case kindMark:
		peer, node, ok := strings.Cut(p, "|")
		if !ok {
			return false
		}
		b.out.publish(node, []byte(string(kindFence)+peer))
	case kindFence:
		hs.release(p)
	default:
		return false
	}
	return true
}
