package signaling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// NodeBus is the Bus of one node among several sharing a broker (Redis: signaling.redis_url):
// rooms live in the broker, frames for peers on other nodes travel over node channels, and
// sessions move between nodes when a client resumes on another one. It is also the hub's
// SessionStore.
//
// Its parts each have a file and a lock: delivery (where the frames that reach this node go),
// view (what this node knows of rooms), handovers (sessions moving), records (resume tokens),
// presence (heartbeat, outages, resync, dead nodes); the outbox publishes what the receive
// loop passes on, in order, so that the loop never waits on the network.
type NodeBus struct {
	node     string
	br       broker
	url      string // redacted, for messages; "" on a Loopback
	presence time.Duration
	grace    time.Duration
	clock    Clock
	log      *slog.Logger
	metrics  busMetrics

	ctx    context.Context // the bus's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	deliv *delivery
	view  *view
	hand  *handovers
	recs  *records
	pres  *presence
	out   *outbox

	// sending is held (shared) by every Send from its broker call until it has passed on the
	// frames the broker left here for peers on their way to another node. A move's marker
	// waits for the Sends in flight when the move was announced, so that none of their frames
	// is passed on behind it (and so after the new node released its fence).
	sending sync.RWMutex

	ops atomic.Uint64 // the joins and leaves asked of the broker, for their op names
}

// op names a new join or leave call of this node (see broker.join).
func (b *NodeBus) op() string {
	return b.node + "/" + strconv.FormatUint(b.ops.Add(1), 36)
}

// RedisOptions configure a NodeBus on Redis.
type RedisOptions struct {
	// URL is signaling.redis_url: redis:// or rediss:// (TLS), with an optional password.
	URL string
	NodeOptions
}

// NewRedisBus connects to Redis and joins the bus; it fails, naming the URL (without its
// password), when Redis cannot be reached.
func NewRedisBus(ctx context.Context, o RedisOptions) (*NodeBus, error) {
	o.defaults()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	br, err := newRedisBroker(cctx, o.URL, o.Node, o.Logger)
	if err != nil {
		return nil, err
	}
	b := newNodeBus(br, o.NodeOptions)
	b.url = RedactURL(o.URL)
	b.log = b.log.With("redis", b.url)
	if err := b.pres.heartbeat(cctx); err != nil {
		_ = br.close()
		return nil, fmt.Errorf("redis at %s: %w", b.url, err)
	}
	b.start()
	b.log.Info("signaling: rooms shared through redis")
	return b, nil
}

func newNodeBus(br broker, o NodeOptions) *NodeBus {
	b := &NodeBus{node: o.Node, br: br, presence: o.PresenceTimeout, grace: o.ResumeGrace, clock: o.Clock,
		log: o.Logger.With("node", o.Node)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.deliv = newDelivery(o.Clock)
	b.view = newView()
	b.hand = newHandovers(b)
	b.recs = newRecords(o.Node, o.Clock, o.PresenceTimeout)
	b.pres = newPresence(b)
	b.out = newOutbox(b)
	b.metrics = newBusMetrics(o.Registry, b.pres.up.Load)
	return b
}

// start runs the receive loop, the outbox and the watch.
func (b *NodeBus) start() {
	b.wg.Go(func() { b.br.receive(b.received) })
	b.wg.Go(b.out.run)
	b.wg.Go(func() { every(b.clock, b.presence/3, b.ctx.Done(), b.pres.tick) })
}

// spawn runs f on its own goroutine, counted until Close.
func (b *NodeBus) spawn(f func()) {
	if b.closed.Load() {
		return
	}
	b.wg.Go(f)
}

// Up reports whether the broker answered the last heartbeat.
func (b *NodeBus) Up() bool { return b.pres.up.Load() }

// Close leaves the bus. Peers of this node stay in their rooms for resume_grace (their clients
// may resume on another node) and are then removed by the other nodes, as for a node that
// died; so the node marks itself dead at once.
func (b *NodeBus) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = b.br.markDead(ctx, b.node, b.presence)
	b.cancel()
	err := b.br.close()
	b.wg.Wait()
	return err
}

// crash stops the node's heartbeat and channel without a word, as if the process died.
func (b *NodeBus) crash() {
	if !b.closed.CompareAndSwap(false, true) {
		return
	}
	b.cancel()
	_ = b.br.close()
	b.wg.Wait()
}

// errDown is every operation while the broker is known to be lost: they fail at once
// instead of waiting for a timeout each.
var errDown = errors.New("redis is unreachable")

// down returns errDown, counted, while the broker is lost.
func (b *NodeBus) down(op string) error {
	if b.pres.up.Load() {
		return nil
	}
	return b.failed(op, errDown)
}

// failed counts a failed operation (for the metrics and the next summary in the log) and
// returns err wrapped with the broker's address.
func (b *NodeBus) failed(op string, err error) error {
	b.metrics.errors.WithLabelValues(op).Inc()
	b.pres.failure(op)
	if b.url != "" {
		return fmt.Errorf("redis %s at %s: %w", op, b.url, err)
	}
	return fmt.Errorf("bus %s: %w", op, err)
}

// received handles one message of this node's channel, in order; nothing here waits on the
// network.
func (b *NodeBus) received(msg []byte) {
	b.metrics.received.Inc()
	if len(msg) == 0 {
		return
	}
	p := msg[1:]
	var ok bool
	switch msg[0] {
	case kindDeliver:
		ok = b.frames(p, false)
	case kindForward:
		ok = b.frames(p, true)
	case kindJoined, kindLeft:
		ok = b.event(msg[0], p)
	default:
		ok = b.hand.received(msg[0], string(p))
	}
	if !ok {
		b.metrics.errors.WithLabelValues("message").Inc()
	}
}

// frames delivers a frame published for peers of this node; frames for a peer handed to
// another node are passed on there.
func (b *NodeBus) frames(p []byte, forwarded bool) bool {
	list, frame, ok := strings.Cut(string(p), "\n")
	if !ok {
		return false
	}
	b.route(strings.Split(list, ","), []byte(frame), forwarded)
	return true
}

// route delivers f to each of peers of this node, and passes it on for those that moved away.
func (b *NodeBus) route(peers []string, f []byte, forwarded bool) {
	var onward map[string][]string
	for _, peer := range peers {
		if n := b.deliv.route(peer, f, forwarded); n != "" {
			if onward == nil {
				onward = map[string][]string{}
			}
			onward[n] = append(onward[n], peer)
		}
	}
	for n, ps := range onward {
		b.out.publish(n, deliverMsg(kindForward, ps, f))
	}
}

// event is another node's join or leave of a room with peers here: the view learns it and
// the peers get peer-joined or peer-left.
func (b *NodeBus) event(kind byte, p []byte) bool {
	room, peer, detail, to, ok := parseEvent(p)
	if !ok {
		return false
	}
	var f []byte
	if kind == kindJoined {
		m := protocol.Member{Peer: peer}
		if detail != "" {
			m.Meta = []byte(detail)
		}
		b.view.event(room, peer, &m)
		f = peerJoinedFrame(room, m)
	} else {
		b.view.event(room, peer, nil)
		f = peerLeftFrame(room, peer, detail)
	}
	b.route(to, f, false)
	return true
}

// tellLocal delivers f to the members of ms the room places on this node.
func (b *NodeBus) tellLocal(ms []memberRec, f []byte) {
	mine, _, _ := groupByNode(ms, b.node)
	b.route(mine, f, false)
}

// Join implements Bus: one step in the broker, so two nodes cannot both take a room's last
// seat, and the members before are told as part of it.
func (b *NodeBus) Join(ctx context.Context, room string, m protocol.Member, max int, first func([]protocol.Member)) ([]protocol.Member, error) {
	if err := b.down("join"); err != nil {
		return nil, err
	}
	// Nothing reaches the joiner before its joined reply: what other joins and leaves tell it
	// meanwhile waits at the gate.
	b.deliv.gate(m.Peer)
	op := b.op()
	before, err := b.br.join(ctx, b.node, room, m, max, op)
	if err != nil && !errors.Is(err, ErrRoomFull) {
		// The call failed on the way: the join may have happened all the same, and told the
		// other nodes. What the broker holds decides.
		var joined bool
		if before, joined = b.joinOutcome(room, m.Peer, op); !joined {
			err = b.failed("join", err)
		} else {
			err = nil
		}
	}
	if err != nil {
		b.deliv.ungate(m.Peer)
		return nil, err
	}
	ms := membersOf(before)
	b.view.joined(room, m, ms)
	first(ms)
	b.deliv.ungate(m.Peer)
	b.tellLocal(before, peerJoinedFrame(room, m))
	return ms, nil
}

// joinOutcome finds out whether join op, whose call failed, happened: if the broker kept its
// answer, it did, and the members before it are the answer (not the members now: one that
// left since is on its way to the joiner as leaving, and must be in its joined). Without an
// answer kept, the broker holding peer says it joined, with those that joined earlier. When
// the broker cannot say, the join counts as failed, and the membership is taken back once
// the broker is back.
func (b *NodeBus) joinOutcome(room, peer, op string) (before []memberRec, joined bool) {
	ctx, cancel := context.WithTimeout(b.ctx, outcomeTimeout)
	defer cancel()
	before, joined, err := b.br.outcome(ctx, peer, op)
	if err == nil && joined {
		return before, true
	}
	var ms []memberRec
	if err == nil {
		ms, err = b.br.members(ctx, room)
	}
	if err != nil {
		b.view.joinFailed(room, peer)
		return nil, false
	}
	for i, m := range ms {
		if m.Peer == peer {
			return ms[:i], true // in join order
		}
	}
	return nil, false
}

// leaveOutcome finds out whether leave op, whose call failed, happened: if the broker kept
// its answer, it did (the other nodes were told), and rest are the members left then (not
// those now: one that joined since never knew peer). Without an answer kept, the broker no
// longer holding peer says it is gone, and rest are the members now.
func (b *NodeBus) leaveOutcome(room, peer, op string) (rest []memberRec, left, known bool) {
	ctx, cancel := context.WithTimeout(b.ctx, outcomeTimeout)
	defer cancel()
	rest, left, err := b.br.outcome(ctx, peer, op)
	if err != nil {
		return nil, false, false
	}
	if left {
		return rest, true, true
	}
	ms, err := b.br.members(ctx, room)
	if err != nil {
		return nil, false, false
	}
	for _, m := range ms {
		if m.Peer == peer {
			return nil, false, true
		}
	}
	return ms, true, true
}

// outcomeTimeout bounds the look at the broker after a call that failed on the way.
const outcomeTimeout = 3 * time.Second

// Leave implements Bus.
func (b *NodeBus) Leave(ctx context.Context, room, peer, reason string) error {
	err := b.down("leave")
	var rest []memberRec
	left, unknown := false, false
	if err == nil {
		op := b.op()
		if rest, left, err = b.br.leave(ctx, b.node, room, peer, reason, "", op); err != nil {
			// The call failed on the way: the leave may have happened all the same.
			var known bool
			if rest, left, known = b.leaveOutcome(room, peer, op); known && left {
				err = nil
			} else {
				err, unknown = b.failed("leave", err), !known
			}
		}
	}
	// A leave that failed is finished, and told, once the broker is back.
	b.view.left(room, peer, err != nil, unknown)
	if left {
		b.tellLocal(rest, peerLeftFrame(room, peer, reason))
	}
	return err
}

// Members implements Bus; while the broker is unreachable, the last known membership of a
// room with peers here.
func (b *NodeBus) Members(ctx context.Context, room string) ([]protocol.Member, error) {
	err := b.down("members")
	var recs []memberRec
	if err == nil {
		if recs, err = b.br.members(ctx, room); err != nil {
			err = b.failed("members", err)
		}
	}
	if err != nil {
		if ms, ok := b.view.members(room); ok {
			return ms, nil
		}
		return nil, err
	}
	ms := membersOf(recs)
	b.view.read(room, ms)
	return ms, nil
}

// Contains implements Bus; a peer of this node is known without asking the broker.
func (b *NodeBus) Contains(ctx context.Context, room, peer string) (bool, error) {
	if b.view.has(room, peer) {
		return true, nil
	}
	if err := b.down("contains"); err != nil {
		return false, err
	}
	in, err := b.br.contains(ctx, room, peer)
	if err != nil {
		return false, b.failed("contains", err)
	}
	return in, nil
}

// Send implements Bus: peers on this node get the frame at once, the others through their
// node's channel (one message per node).
func (b *NodeBus) Send(ctx context.Context, room string, peers []string, frame []byte) error {
	var remote []string
	for _, p := range peers {
		if !b.deliv.deliver(p, frame) {
			remote = append(remote, p)
		}
	}
	if len(remote) == 0 {
		return nil
	}
	if err := b.down("publish"); err != nil {
		return err
	}
	b.sending.RLock()
	defer b.sending.RUnlock()
	mine, n, err := b.br.send(ctx, b.node, room, remote, frame)
	if err != nil {
		return b.failed("publish", err)
	}
	b.metrics.published.Add(float64(n))
	// Peers the room still places here, on their way to another node: passed on from here,
	// so that this node's channel never carries a frame that could overtake its direct ones.
	b.route(mine, frame, false)
	return nil
}

// Attach implements Bus; frames held for peer during a handover are delivered first.
func (b *NodeBus) Attach(peer string, deliver func([]byte)) { b.deliv.attach(peer, deliver) }

// Detach implements Bus.
func (b *NodeBus) Detach(peer string) {
	b.deliv.detach(peer)
	b.view.movedAway(peer)
}

// Rooms implements Bus: rooms with members on this node.
func (b *NodeBus) Rooms() int { return b.view.rooms() }

func (b *NodeBus) bind(give func(token, user string) (*handover, bool)) {
	b.hand.mu.Lock()
	b.hand.give = give
	b.hand.mu.Unlock()
}

func (b *NodeBus) register(ctx context.Context, token, peer, user string) {
	rec, ttl := b.recs.register(token, peer, user)
	if b.down("session") != nil {
		return // the resync after the outage writes it
	}
	if err := b.br.setSession(ctx, token, rec, ttl); err != nil {
		_ = b.failed("session", err)
	}
}

func (b *NodeBus) forget(ctx context.Context, token string) {
	err := b.down("session")
	if err == nil {
		if err = b.br.delSession(ctx, token); err != nil {
			_ = b.failed("session", err)
		}
	}
	b.recs.forget(token, err != nil)
}

func (b *NodeBus) dropped(ctx context.Context, token string, grace time.Duration) {
	ttl, ok := b.recs.dropped(token, grace)
	if !ok || b.down("session") != nil {
		return
	}
	if err := b.br.expireSession(ctx, token, ttl); err != nil {
		_ = b.failed("session", err)
	}
}

func (b *NodeBus) take(ctx context.Context, token, user string) (*handover, error) {
	if err := b.down("session"); err != nil {
		return nil, err
	}
	return b.hand.take(ctx, token, user)
}

func (b *NodeBus) moved(ctx context.Context, h *handover) { b.hand.moved(ctx, h) }

// outbox publishes what the receive loop passes on (forwarded frames, markers), in the order
// it was queued, on its own goroutine.
type outbox struct {
	b  *NodeBus
	ch chan outMsg
}

type outMsg struct {
	node string
	msg  []byte
}

func newOutbox(b *NodeBus) *outbox { return &outbox{b: b, ch: make(chan outMsg, 4096)} }

// publish queues msg for node's channel.
func (o *outbox) publish(node string, msg []byte) {
	select {
	case o.ch <- outMsg{node, msg}:
	case <-o.b.ctx.Done():
	}
}

func (o *outbox) run() {
	b := o.b
	for {
		select {
		case <-b.ctx.Done():
			return
		case m := <-o.ch:
			ctx, cancel := context.WithTimeout(b.ctx, time.Second)
			err := b.br.publish(ctx, m.node, m.msg)
			cancel()
			if err != nil {
				_ = b.failed("publish", err)
				continue
			}
			b.metrics.published.Inc()
		}
	}
}
