package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// Loopback is a broker shared by NodeBuses in one process, as Redis is shared by nodes: the
// same rooms, node channels, session records and heartbeats, kept in memory (as
// nextcloud-spreed-signaling's NATS loopback). Every multi-node behaviour that does not depend
// on Redis itself is tested on it, without a redis-server; Stop and Start play an outage.
type Loopback struct {
	clock Clock

	mu       sync.Mutex
	down     bool
	rooms    map[string]map[string]memberRec
	seqs     map[string]int64
	peerRoom map[string]string
	byNode   map[string]map[roomPeer]struct{}
	sessions map[string]loopbackSession
	beats    map[string]time.Time
	subs     map[string]*mailbag
	ops      map[string]loopbackOp // peer -> the answer of its last join or leave
}

// loopbackOp is the answer of a peer's join or leave, kept until expires.
type loopbackOp struct {
	op      string
	answer  []memberRec
	expires time.Time
}

type loopbackSession struct {
	rec     sessionRec
	expires time.Time
}

// errLoopbackDown is every operation of a stopped Loopback.
var errLoopbackDown = errors.New("loopback broker is down")

// NewLoopback returns an empty broker on clock (nil: the system clock).
func NewLoopback(clock Clock) *Loopback {
	if clock == nil {
		clock = RealClock{}
	}
	l := &Loopback{clock: clock, subs: map[string]*mailbag{}}
	l.clear()
	return l
}

func (l *Loopback) clear() {
	l.rooms, l.seqs, l.peerRoom = map[string]map[string]memberRec{}, map[string]int64{}, map[string]string{}
	l.byNode, l.sessions, l.beats = map[string]map[roomPeer]struct{}{}, map[string]loopbackSession{}, map[string]time.Time{}
	l.ops = map[string]loopbackOp{}
}

// Node joins a new NodeBus to the broker.
func (l *Loopback) Node(o NodeOptions) *NodeBus {
	if o.Clock == nil {
		o.Clock = l.clock
	}
	o.defaults()
	bag := newMailbag()
	l.mu.Lock()
	l.subs[o.Node] = bag
	l.mu.Unlock()
	b := newNodeBus(&loopbackBroker{l: l, node: o.Node, bag: bag}, o)
	_ = b.pres.heartbeat(context.Background())
	b.start()
	return b
}

// Stop makes the broker unreachable: every operation fails and what was on its way is lost.
func (l *Loopback) Stop() {
	l.mu.Lock()
	l.down = true
	for _, s := range l.subs {
		s.drop()
	}
	l.mu.Unlock()
}

// Start makes the broker reachable again; empty, it has forgotten everything (a restart).
func (l *Loopback) Start(empty bool) {
	l.mu.Lock()
	l.down = false
	if empty {
		l.clear()
	}
	l.mu.Unlock()
}

// loopbackBroker is one node's handle on a Loopback.
type loopbackBroker struct {
	l    *Loopback
	node string
	bag  *mailbag
}

// lock locks the broker, unless it is down.
func (b *loopbackBroker) lock() error {
	b.l.mu.Lock()
	if b.l.down {
		b.l.mu.Unlock()
		return errLoopbackDown
	}
	return nil
}

func (b *loopbackBroker) close() error {
	b.l.mu.Lock()
	if b.l.subs[b.node] == b.bag {
		delete(b.l.subs, b.node)
	}
	b.l.mu.Unlock()
	b.bag.close()
	return nil
}

// publishLocked puts msg on node's channel; l.mu is held.
func (l *Loopback) publishLocked(node string, msg []byte) {
	if s := l.subs[node]; s != nil {
		s.put(msg)
	}
}

// sorted is room's members in join order; l.mu is held.
func (l *Loopback) sorted(room string) []memberRec {
	ms := make([]memberRec, 0, len(l.rooms[room]))
	for _, m := range l.rooms[room] {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b memberRec) int { return int(a.seq - b.seq) })
	return ms
}

// tell publishes a join or leave event to the nodes of ms other than self; l.mu is held.
func (l *Loopback) tell(kind byte, self, room, peer, detail string, ms []memberRec) {
	_, nodes, byNode := groupByNode(ms, self)
	for _, n := range nodes {
		l.publishLocked(n, eventMsg(kind, room, peer, detail, byNode[n]))
	}
}

func (b *loopbackBroker) join(_ context.Context, node, room string, m protocol.Member, max int, op string) ([]memberRec, error) {
	return b.add(node, room, m, max, false, op)
}

func (b *loopbackBroker) restore(_ context.Context, node, room string, m protocol.Member) error {
	_, err := b.add(node, room, m, 0, true, "")
	return err
}

// answered is the kept answer of peer's op, if any; l.mu is held.
func (l *Loopback) answered(peer, op string) ([]memberRec, bool) {
	a, ok := l.ops[peer]
	if !ok || op == "" || a.op != op || !l.clock.Now().Before(a.expires) {
		return nil, false
	}
	return slices.Clone(a.answer), true
}

// keep keeps answer as the answer of peer's op; l.mu is held.
func (l *Loopback) keep(peer, op string, answer []memberRec) {
	if op != "" {
		l.ops[peer] = loopbackOp{op: op, answer: slices.Clone(answer), expires: l.clock.Now().Add(opMemory)}
	}
}

func (b *loopbackBroker) add(node, room string, m protocol.Member, max int, quiet bool, op string) ([]memberRec, error) {
	if err := b.lock(); err != nil {
		return nil, err
	}
	l := b.l
	defer l.mu.Unlock()
	ms := l.rooms[room]
	if cur, in := ms[m.Peer]; in { // a join tried again: nothing changes, nobody is told twice
		if before, ok := l.answered(m.Peer, op); ok {
			return before, nil
		}
		return slices.DeleteFunc(l.sorted(room), func(x memberRec) bool { return x.seq >= cur.seq }), nil
	}
	if !quiet && len(ms) >= max {
		return nil, ErrRoomFull
	}
	before := l.sorted(room)
	if ms == nil {
		ms = map[string]memberRec{}
		l.rooms[room] = ms
	}
	l.seqs[room]++
	ms[m.Peer] = memberRec{Member: m, node: node, seq: l.seqs[room]}
	l.peerRoom[m.Peer] = room
	if l.byNode[node] == nil {
		l.byNode[node] = map[roomPeer]struct{}{}
	}
	l.byNode[node][roomPeer{room, m.Peer}] = struct{}{}
	l.keep(m.Peer, op, before)
	if !quiet {
		l.tell(kindJoined, node, room, m.Peer, string(m.Meta), before)
	}
	return before, nil
}

func (b *loopbackBroker) leave(_ context.Context, node, room, peer, reason, only, op string) ([]memberRec, bool, error) {
	if err := b.lock(); err != nil {
		return nil, false, err
	}
	l := b.l
	defer l.mu.Unlock()
	m, ok := l.rooms[room][peer]
	if !ok {
		rest, again := l.answered(peer, op)
		return rest, again, nil
	}
	if only != "" && m.node != only {
		return nil, false, nil
	}
	delete(l.rooms[room], peer)
	if l.peerRoom[peer] == room {
		delete(l.peerRoom, peer)
	}
	delete(l.byNode[m.node], roomPeer{room, peer})
	rest := l.sorted(room)
	if len(rest) == 0 {
		delete(l.rooms, room)
		delete(l.seqs, room)
	}
	l.keep(peer, op, rest)
	l.tell(kindLeft, node, room, peer, reason, rest)
	return rest, true, nil
}

func (b *loopbackBroker) outcome(_ context.Context, peer, op string) ([]memberRec, bool, error) {
	if err := b.lock(); err != nil {
		return nil, false, err
	}
	defer b.l.mu.Unlock()
	ms, ok := b.l.answered(peer, op)
	return ms, ok, nil
}

func (b *loopbackBroker) members(_ context.Context, room string) ([]memberRec, error) {
	if err := b.lock(); err != nil {
		return nil, err
	}
	defer b.l.mu.Unlock()
	return b.l.sorted(room), nil
}

func (b *loopbackBroker) contains(_ context.Context, room, peer string) (bool, error) {
	if err := b.lock(); err != nil {
		return false, err
	}
	defer b.l.mu.Unlock()
	_, ok := b.l.rooms[room][peer]
	return ok, nil
}

func (b *loopbackBroker) send(_ context.Context, node, room string, peers []string, frame []byte) ([]string, int, error) {
	if err := b.lock(); err != nil {
		return nil, 0, err
	}
	l := b.l
	defer l.mu.Unlock()
	var ms []memberRec
	for _, p := range peers {
		if m, ok := l.rooms[room][p]; ok {
			ms = append(ms, m)
		}
	}
	mine, nodes, byNode := groupByNode(ms, node)
	for _, n := range nodes {
		l.publishLocked(n, deliverMsg(kindDeliver, byNode[n], frame))
	}
	return mine, len(nodes), nil
}

func (b *loopbackBroker) move(_ context.Context, peer, to string) (string, json.RawMessage, bool, error) {
	if err := b.lock(); err != nil {
		return "", nil, false, err
	}
	l := b.l
	defer l.mu.Unlock()
	room, ok := l.peerRoom[peer]
	m, in := l.rooms[room][peer]
	if !ok || !in {
		return "", nil, false, nil
	}
	delete(l.byNode[m.node], roomPeer{room, peer})
	m.node = to
	l.rooms[room][peer] = m
	if l.byNode[to] == nil {
		l.byNode[to] = map[roomPeer]struct{}{}
	}
	l.byNode[to][roomPeer{room, peer}] = struct{}{}
	return room, m.Meta, true, nil
}

func (b *loopbackBroker) nodePeers(_ context.Context, node string) ([]roomPeer, error) {
	if err := b.lock(); err != nil {
		return nil, err
	}
	defer b.l.mu.Unlock()
	out := make([]roomPeer, 0, len(b.l.byNode[node]))
	for rp := range b.l.byNode[node] {
		out = append(out, rp)
	}
	return out, nil
}

func (b *loopbackBroker) publish(_ context.Context, node string, msg []byte) error {
	if err := b.lock(); err != nil {
		return err
	}
	defer b.l.mu.Unlock()
	b.l.publishLocked(node, msg)
	return nil
}

func (b *loopbackBroker) receive(handle func([]byte)) {
	for {
		msg, ok := b.bag.take()
		if !ok {
			return
		}
		handle(msg)
	}
}

func (b *loopbackBroker) setSession(_ context.Context, token string, rec sessionRec, ttl time.Duration) error {
	if err := b.lock(); err != nil {
		return err
	}
	defer b.l.mu.Unlock()
	b.l.sessions[token] = loopbackSession{rec: rec, expires: b.l.clock.Now().Add(ttl)}
	return nil
}

func (b *loopbackBroker) getSession(_ context.Context, token string) (sessionRec, bool, error) {
	if err := b.lock(); err != nil {
		return sessionRec{}, false, err
	}
	defer b.l.mu.Unlock()
	s, ok := b.l.sessions[token]
	if !ok || !b.l.clock.Now().Before(s.expires) {
		return sessionRec{}, false, nil
	}
	return s.rec, true, nil
}

func (b *loopbackBroker) delSession(_ context.Context, token string) error {
	if err := b.lock(); err != nil {
		return err
	}
	defer b.l.mu.Unlock()
	delete(b.l.sessions, token)
	return nil
}

func (b *loopbackBroker) expireSession(_ context.Context, token string, ttl time.Duration) error {
	if err := b.lock(); err != nil {
		return err
	}
	defer b.l.mu.Unlock()
	if s, ok := b.l.sessions[token]; ok {
		s.expires = b.l.clock.Now().Add(ttl)
		b.l.sessions[token] = s
	}
	return nil
}

func (b *loopbackBroker) heartbeat(_ context.Context, node string) error {
	if err := b.lock(); err != nil {
		return err
	}
	defer b.l.mu.Unlock()
	b.l.beats[node] = b.l.clock.Now()
	return nil
}

func (b *loopbackBroker) markDead(_ context.Context, node string, presence time.Duration) error {
	if err := b.lock(); err != nil {
		return err
	}
	defer b.l.mu.Unlock()
	b.l.beats[node] = b.l.clock.Now().Add(-presence)
	return nil
}

func (b *loopbackBroker) sinceBeat(_ context.Context, node string) (time.Duration, bool, error) {
	if err := b.lock(); err != nil {
		return 0, false, err
	}
	defer b.l.mu.Unlock()
	at, ok := b.l.beats[node]
	if !ok {
		return 0, false, nil
	}
	return b.l.clock.Now().Sub(at), true, nil
}

func (b *loopbackBroker) deadNodes(_ context.Context, silence time.Duration) ([]string, error) {
	if err := b.lock(); err != nil {
		return nil, err
	}
	defer b.l.mu.Unlock()
	var out []string
	now := b.l.clock.Now()
	for n, at := range b.l.beats {
		if now.Sub(at) >= silence {
			out = append(out, n)
		}
	}
	return out, nil
}

func (b *loopbackBroker) forgetNode(_ context.Context, node string) error {
	if err := b.lock(); err != nil {
		return err
	}
	defer b.l.mu.Unlock()
	delete(b.l.byNode, node)
	delete(b.l.beats, node)
	return nil
}

// mailbag is a node channel of the Loopback: an unbounded queue read in order.
type mailbag struct {
	mu     sync.Mutex
	cond   *sync.Cond
	msgs   [][]byte
	closed bool
}

func newMailbag() *mailbag {
	m := &mailbag{}
	m.cond = sync.NewCond(&m.mu)
	return m
}

func (m *mailbag) put(msg []byte) {
	m.mu.Lock()
	m.msgs = append(m.msgs, msg)
	m.mu.Unlock()
	m.cond.Signal()
}

// drop loses what waits, as a broken subscription does.
func (m *mailbag) drop() {
	m.mu.Lock()
	m.msgs = nil
	m.mu.Unlock()
}

func (m *mailbag) take() ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.msgs) == 0 && !m.closed {
		m.cond.Wait()
	}
	if m.closed {
		return nil, false
	}
	msg := m.msgs[0]
	m.msgs[0] = nil
	m.msgs = m.msgs[1:]
	return msg, true
}

func (m *mailbag) close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cond.Broadcast()
}

// NodeOptions configure a NodeBus.
type NodeOptions struct {
	// Node names this node on the bus; empty: a random id.
	Node string
	// PresenceTimeout is how long a node may be silent before it counts as dead
	// (default 10s).
	PresenceTimeout time.Duration
	// ResumeGrace is signaling.resume_grace: a dead node's peers may resume elsewhere for
	// this long before they are removed from their rooms.
	ResumeGrace time.Duration
	// Clock is the time of heartbeats, fences and forwarding (nil: the system clock).
	Clock    Clock
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

func (o *NodeOptions) defaults() {
	if o.PresenceTimeout <= 0 {
		o.PresenceTimeout = DefaultPresenceTimeout
	}
	if o.Node == "" {
		o.Node = randomID(9)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
}
