package signaling

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/icebox-rtc/icebox/signaling/protocol"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// RedisBus is the Bus of nodes sharing one Redis (signaling.redis_url): rooms live in Redis,
// frames for peers on other nodes travel over Redis Pub/Sub, and sessions move between nodes
// when a client resumes on another one.
//
// In Redis (one database, not Redis Cluster):
//
//	icebox:room:{R}          hash  peer -> "seq|node|meta": the members of room R
//	icebox:room:{R}:seq      join counter of R (the join order)
//	icebox:peer:{P}          the room peer P is in
//	icebox:node:{N}:peers    set of "room|peer" held by node N
//	icebox:nodes             zset  node -> last heartbeat (Redis clock, ms)
//	icebox:sess:{T}          "node|peer|user": the session resume token T resumes
//	icebox:n:{N}             Pub/Sub channel of node N: frames for its peers, handovers
//
// A node refreshes its heartbeat every PresenceTimeout/3. A node silent for PresenceTimeout
// is dead; once resume_grace more has passed without its peers resuming elsewhere, any live
// node removes them and tells their rooms peer-left "disconnected". Joins, leaves and the
// removal of a dead node's peers are Lua scripts, so max_room_size holds across nodes.
type RedisBus struct {
	node     string
	rdb      *redis.Client
	url      string // redacted, for messages
	presence time.Duration
	grace    time.Duration
	log      *slog.Logger
	metrics  busMetrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ps     *redis.PubSub

	mu      sync.RWMutex
	deliver map[string]func([]byte) // peers attached on this node
	held    map[string][][]byte     // peers being handed to this node: frames until Attach
	// fences hold the frames that reach a peer moving here directly (not passed on by its old
	// node) until the old node says it passed on the last one: a sender's frames stay in
	// order across the move.
	fences map[string]*fence
	// deferred are other nodes' requests for a fenced peer's session: it moves on once its
	// fence is released, so that no frame overtakes another on the way.
	deferred map[string][]takeMsg
	rooms    map[string]map[string]string // this node's members: room -> peer -> meta
	forward  map[string]forwarding        // peers handed to another node, recently
	waits    map[string]chan *handover    // take requests in flight, by id
	// departed are "room|peer" of this node that left while Redis was unreachable: when it is
	// back, they are removed and their rooms told, even if Redis restarted empty.
	departed map[string]struct{}
	// seen is the last membership read of each room with peers on this node: what Members
	// answers while Redis is unreachable (a resume on this node then keeps its peers).
	seen map[string][]protocol.Member

	give func(token, user string) (*handover, bool)
	gone func(room, peer string)

	up      atomic.Bool
	upSince atomic.Int64 // unix nanoseconds of the last recovery (or the start)
	closed  atomic.Bool
}

type fence struct {
	frames [][]byte
	timer  *time.Timer
}

type forwarding struct {
	node  string
	until time.Time
}

// RedisOptions configure a RedisBus.
type RedisOptions struct {
	// URL is signaling.redis_url: redis:// or rediss:// (TLS), with an optional password.
	URL string
	// Node names this node on the bus; empty: a random id.
	Node string
	// PresenceTimeout is how long a node may be silent before it counts as dead
	// (default 10s).
	PresenceTimeout time.Duration
	// ResumeGrace is signaling.resume_grace: a dead node's peers may resume elsewhere for
	// this long before they are removed from their rooms.
	ResumeGrace time.Duration
	Logger      *slog.Logger
	Registry    prometheus.Registerer
}

// DefaultPresenceTimeout is how long a node may go without a heartbeat before its peers
// count as disconnected.
const DefaultPresenceTimeout = 10 * time.Second

// handoverTimeout bounds the wait for a live node to give a session away.
const handoverTimeout = 3 * time.Second

// forwardFor is how long a node passes on frames for a peer it handed to another node.
const forwardFor = 30 * time.Second

// NewRedisBus connects to Redis and joins the bus; it fails, naming the URL (without its
// password), when Redis cannot be reached.
func NewRedisBus(ctx context.Context, o RedisOptions) (*RedisBus, error) {
	redacted := RedactURL(o.URL)
	opt, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("signaling.redis_url %s: %w", redacted, err)
	}
	opt.MaxRetries = 1
	opt.DialTimeout = 3 * time.Second
	opt.ReadTimeout = 3 * time.Second
	opt.WriteTimeout = 3 * time.Second
	opt.ContextTimeoutEnabled = true
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
	b := &RedisBus{
		node: o.Node, rdb: redis.NewClient(opt), url: redacted, presence: o.PresenceTimeout, grace: o.ResumeGrace,
		log:     o.Logger.With("redis", redacted, "node", o.Node),
		deliver: map[string]func([]byte){}, held: map[string][][]byte{}, rooms: map[string]map[string]string{},
		forward: map[string]forwarding{}, waits: map[string]chan *handover{}, departed: map[string]struct{}{},
		seen: map[string][]protocol.Member{}, fences: map[string]*fence{}, deferred: map[string][]takeMsg{},
	}
	// go-redis logs its reconnections on stderr, in its own format: into icebox's log, at
	// debug level (the bus itself reports an outage, once, as an error).
	setRedisLogger.Do(func() { redis.SetLogger(redisLogger{o.Logger}) }) // a global of go-redis
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.rdb.Ping(cctx).Err(); err != nil {
		_ = b.rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", redacted, err)
	}
	b.ps = b.rdb.Subscribe(cctx, nodeChannel(b.node))
	if _, err := b.ps.Receive(cctx); err != nil { // the subscription is confirmed
		_ = b.ps.Close()
		_ = b.rdb.Close()
		return nil, fmt.Errorf("redis at %s: subscribing: %w", redacted, err)
	}
	if err := b.heartbeat(cctx); err != nil {
		_ = b.ps.Close()
		_ = b.rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", redacted, err)
	}
	b.metrics = newBusMetrics(o.Registry, b)
	b.up.Store(true)
	b.upSince.Store(time.Now().UnixNano())
	b.ctx, b.cancel = context.WithCancel(context.Background())
	msgs := b.ps.Channel(redis.WithChannelSize(1024))
	b.wg.Go(func() { b.receive(msgs) })
	b.wg.Go(b.watch)
	b.log.Info("signaling: rooms shared through redis")
	return b, nil
}

// Up reports whether Redis answered the last heartbeat.
func (b *RedisBus) Up() bool { return b.up.Load() }

// Close leaves the bus. Peers of this node stay in their rooms for resume_grace (their
// clients may resume on another node) and are then removed by the other nodes, as for a
// node that died; so the node marks itself dead at once.
func (b *RedisBus) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = markDeadScript.Run(ctx, b.rdb, nil, b.node, b.presence.Milliseconds()).Err()
	err := b.ps.Close()
	b.wg.Wait()
	return errors.Join(err, b.rdb.Close())
}

// Crash stops the node's heartbeat and Pub/Sub without a word, as if the process died
// (tests).
func (b *RedisBus) crash() {
	if !b.closed.CompareAndSwap(false, true) {
		return
	}
	b.cancel()
	_ = b.ps.Close()
	b.wg.Wait()
	_ = b.rdb.Close()
}

func roomKey(room string) string   { return "icebox:room:{" + room + "}" }
func nodePeers(node string) string { return "icebox:node:{" + node + "}:peers" }
func sessKey(token string) string  { return "icebox:sess:{" + token + "}" }
func nodeChannel(node string) string {
	return "icebox:n:{" + node + "}"
}

// Messages on a node's channel start with their kind.
const (
	kindDeliver  = 'd' // d peer,peer,...\n frame
	kindTake     = 't' // t {"id","token","user","from"}
	kindHandover = 'h' // h {"id","session"}
	kindProbe    = 'p' // p id: a node checking that its own subscription is back
	kindForward  = 'f' // f peer,peer,...\n frame: passed on by the node a peer moved from
	kindMoved    = 'm' // m peer|node: the peer now lives on node (to the node it moved from)
	kindMark     = 'k' // k peer|node: that node's own marker, behind every frame routed to it before the move
	kindFence    = 'e' // e peer: no more frames for peer come through its old node
)

// fenceTimeout bounds how long frames for a peer that just moved here wait for the last ones
// its old node passes on (that node died meanwhile).
// Shorter than handoverTimeout: a request deferred behind a fence is answered in time.
const fenceTimeout = 1500 * time.Millisecond

// Scripts. Keys are built inside the scripts from the names above.
var (
	joinScript = redis.NewScript(`
local room, peer, max, node, meta = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local rk = 'icebox:room:{' .. room .. '}'
local before = redis.call('HGETALL', rk)
if redis.call('HEXISTS', rk, peer) == 0 and redis.call('HLEN', rk) >= max then
  return -1
end
local seq = redis.call('INCR', rk .. ':seq')
redis.call('HSET', rk, peer, seq .. '|' .. node .. '|' .. meta)
redis.call('SET', 'icebox:peer:{' .. peer .. '}', room)
redis.call('SADD', 'icebox:node:{' .. node .. '}:peers', room .. '|' .. peer)
return before`)

	leaveScript = redis.NewScript(`
local room, peer = ARGV[1], ARGV[2]
local rk = 'icebox:room:{' .. room .. '}'
local v = redis.call('HGET', rk, peer)
if not v then return 0 end
local node = string.match(v, '^[^|]*|([^|]*)|')
redis.call('HDEL', rk, peer)
redis.call('DEL', 'icebox:peer:{' .. peer .. '}')
redis.call('SREM', 'icebox:node:{' .. node .. '}:peers', room .. '|' .. peer)
if redis.call('HLEN', rk) == 0 then redis.call('DEL', rk, rk .. ':seq') end
return 1`)

	// sendScript publishes a frame to the node of each peer, one message per node.
	// Peers the room still places on the calling node ARGV[3] (on their way to another node)
	// are returned instead: the caller passes their frames on itself, so that its own channel
	// never carries a frame that could overtake or be overtaken by its direct deliveries.
	sendScript = redis.NewScript(`
local rk, frame, self = 'icebox:room:{' .. ARGV[1] .. '}', ARGV[2], ARGV[3]
local byNode, order, mine = {}, {}, {}
for i = 4, #ARGV do
  local v = redis.call('HGET', rk, ARGV[i])
  if v then
    local n = string.match(v, '^[^|]*|([^|]*)|')
    if n == self then
      table.insert(mine, ARGV[i])
    else
      if not byNode[n] then byNode[n] = {}; table.insert(order, n) end
      table.insert(byNode[n], ARGV[i])
    end
  end
end
for _, n in ipairs(order) do
  redis.call('PUBLISH', 'icebox:n:{' .. n .. '}', 'd' .. table.concat(byNode[n], ',') .. '\n' .. frame)
end
table.insert(mine, 1, tostring(#order))
return mine`)

	// moveScript gives peer's membership to node ARGV[2]; it returns the room and meta.
	moveScript = redis.NewScript(`
local peer, to = ARGV[1], ARGV[2]
local room = redis.call('GET', 'icebox:peer:{' .. peer .. '}')
if not room then return false end
local rk = 'icebox:room:{' .. room .. '}'
local v = redis.call('HGET', rk, peer)
if not v then return false end
local seq, from, meta = string.match(v, '^([^|]*)|([^|]*)|(.*)$')
redis.call('HSET', rk, peer, seq .. '|' .. to .. '|' .. meta)
redis.call('SREM', 'icebox:node:{' .. from .. '}:peers', room .. '|' .. peer)
redis.call('SADD', 'icebox:node:{' .. to .. '}:peers', room .. '|' .. peer)
return {room, meta}`)

	heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
redis.call('ZADD', 'icebox:nodes', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1`)

	// markDeadScript backdates node ARGV[1]'s heartbeat by the presence timeout ARGV[2]: dead
	// from now on, its peers removed after resume_grace.
	markDeadScript = redis.NewScript(`
local t = redis.call('TIME')
redis.call('ZADD', 'icebox:nodes', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2]), ARGV[1])
return 1`)

	// aliveScript returns how long ago node ARGV[1] last beat, in ms (-1: never).
	aliveScript = redis.NewScript(`
local s = redis.call('ZSCORE', 'icebox:nodes', ARGV[1])
if not s then return -1 end
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(s)`)

	// reapScript removes the peers of every node silent for ARGV[1] ms, and the nodes; it
	// returns room, peer, room, peer, ...
	reapScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', 'icebox:nodes', '-inf', now - tonumber(ARGV[1]))) do
  local sk = 'icebox:node:{' .. n .. '}:peers'
  for _, e in ipairs(redis.call('SMEMBERS', sk)) do
    local room, peer = string.match(e, '^([^|]*)|(.*)$')
    local rk = 'icebox:room:{' .. room .. '}'
    local v = redis.call('HGET', rk, peer)
    if v and string.match(v, '^[^|]*|([^|]*)|') == n then
      redis.call('HDEL', rk, peer)
      redis.call('DEL', 'icebox:peer:{' .. peer .. '}')
      if redis.call('HLEN', rk) == 0 then redis.call('DEL', rk, rk .. ':seq') end
      table.insert(out, room)
      table.insert(out, peer)
    end
  end
  redis.call('DEL', sk)
  redis.call('ZREM', 'icebox:nodes', n)
end
return out`)
)

// errDown is the error of every Redis operation while Redis is known to be lost: they fail
// at once instead of waiting for a timeout each.
var errDown = errors.New("redis is unreachable")

// down returns errDown, counted, while Redis is lost.
func (b *RedisBus) down(op string) error {
	if b.up.Load() {
		return nil
	}
	return b.failed(op, errDown)
}

// failed counts and logs a failed Redis operation, and returns err wrapped with the URL.
func (b *RedisBus) failed(op string, err error) error {
	b.metrics.errors.WithLabelValues(op).Inc()
	return fmt.Errorf("redis %s at %s: %w", op, b.url, err)
}

// Join implements Bus: atomically in Redis, so two nodes cannot both take a room's last seat.
func (b *RedisBus) Join(ctx context.Context, room string, m protocol.Member, max int) ([]protocol.Member, error) {
	if err := b.down("join"); err != nil {
		return nil, err
	}
	meta := ""
	if len(m.Meta) > 0 {
		meta = string(m.Meta)
	}
	res, err := joinScript.Run(ctx, b.rdb, nil, room, m.Peer, max, b.node, meta).Result()
	if err != nil {
		return nil, b.failed("join", err)
	}
	if n, ok := res.(int64); ok && n == -1 {
		return nil, ErrRoomFull
	}
	fields, _ := res.([]any)
	members := parseMembers(fields, m.Peer)
	b.mu.Lock()
	if b.rooms[room] == nil {
		b.rooms[room] = map[string]string{}
	}
	b.rooms[room][m.Peer] = meta
	b.seen[room] = append(slices.Clone(members), m)
	b.mu.Unlock()
	return members, nil
}

// member is a room member as Redis holds it.
type member struct {
	protocol.Member
	seq int64 // the join order
}

// parseMembers reads HGETALL of a room (peer, "seq|node|meta", ...) in join order, without
// the peer skip.
func parseMembers(fields []any, skip string) []protocol.Member {
	ms := parseRoom(fields)
	out := make([]protocol.Member, 0, len(ms))
	for _, m := range ms {
		if m.Peer != skip {
			out = append(out, m.Member)
		}
	}
	return out
}

func parseRoom(fields []any) []member {
	ms := make([]member, 0, len(fields)/2)
	for i := 0; i+1 < len(fields); i += 2 {
		peer, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		m, ok := parseMember(peer, v)
		if ok {
			ms = append(ms, m)
		}
	}
	slices.SortFunc(ms, func(a, b member) int { return int(a.seq - b.seq) })
	return ms
}

func parseMember(peer, v string) (member, bool) {
	seq, rest, ok1 := strings.Cut(v, "|")
	_, meta, ok2 := strings.Cut(rest, "|") // the node: Redis scripts route by it, not Go
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok1 || !ok2 || err != nil {
		return member{}, false
	}
	m := member{Member: protocol.Member{Peer: peer}, seq: n}
	if meta != "" {
		m.Meta = json.RawMessage(meta)
	}
	return m, true
}

// Leave implements Bus.
func (b *RedisBus) Leave(ctx context.Context, room, peer string) error {
	b.mu.Lock()
	if ps := b.rooms[room]; ps != nil {
		delete(ps, peer)
		if len(ps) == 0 {
			delete(b.rooms, room)
			delete(b.seen, room)
		}
	}
	if seen, ok := b.seen[room]; ok {
		b.seen[room] = slices.DeleteFunc(seen, func(m protocol.Member) bool { return m.Peer == peer })
	}
	b.mu.Unlock()
	err := b.down("leave")
	if err == nil {
		if err = leaveScript.Run(ctx, b.rdb, nil, room, peer).Err(); err != nil {
			err = b.failed("leave", err)
		}
	}
	if err != nil {
		b.mu.Lock()
		b.departed[room+"|"+peer] = struct{}{} // the resync after the outage removes it
		b.mu.Unlock()
	}
	return err
}

// Members implements Bus.
func (b *RedisBus) Members(ctx context.Context, room string) ([]protocol.Member, error) {
	err := b.down("members")
	var fields map[string]string
	if err == nil {
		if fields, err = b.rdb.HGetAll(ctx, roomKey(room)).Result(); err != nil {
			err = b.failed("members", err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	_, local := b.rooms[room]
	if err != nil {
		if seen, ok := b.seen[room]; ok && local {
			return slices.Clone(seen), nil
		}
		return nil, err
	}
	flat := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		flat = append(flat, k, v)
	}
	ms := parseMembers(flat, "")
	if local {
		b.seen[room] = slices.Clone(ms)
	}
	return ms, nil
}

// Contains implements Bus; a peer of this node is known without asking Redis.
func (b *RedisBus) Contains(ctx context.Context, room, peer string) (bool, error) {
	b.mu.RLock()
	_, local := b.rooms[room][peer]
	b.mu.RUnlock()
	if local {
		return true, nil
	}
	if err := b.down("contains"); err != nil {
		return false, err
	}
	in, err := b.rdb.HExists(ctx, roomKey(room), peer).Result()
	if err != nil {
		return false, b.failed("contains", err)
	}
	return in, nil
}

// Send implements Bus: peers on this node get the frame at once, the others through their
// node's channel (one message per node).
func (b *RedisBus) Send(ctx context.Context, room string, peers []string, frame []byte) error {
	var remote []any
	b.mu.Lock()
	b.observe(frame)
	for _, p := range peers {
		if !b.local(p, frame, false) {
			remote = append(remote, p)
		}
	}
	b.mu.Unlock()
	if len(remote) == 0 {
		return nil
	}
	if err := b.down("publish"); err != nil {
		return err
	}
	args := append([]any{room, frame, b.node}, remote...)
	mine, err := sendScript.Run(ctx, b.rdb, nil, args...).StringSlice()
	if err != nil {
		return b.failed("publish", err)
	}
	if len(mine) == 0 {
		return b.failed("publish", errors.New("no answer from the send script"))
	}
	if n, err := strconv.Atoi(mine[0]); err == nil {
		b.metrics.published.Add(float64(n))
	}
	if mine = mine[1:]; len(mine) > 0 {
		b.received(strings.Join(mine, ",")+"\n"+string(frame), false)
	}
	return nil
}

// local delivers f to peer if it lives on this node (or is moving here), and reports whether
// it does; forwarded says f was passed on by the peer's old node. b.mu is held.
func (b *RedisBus) local(peer string, f []byte, forwarded bool) bool {
	if fe := b.fences[peer]; fe != nil && !forwarded {
		fe.frames = append(fe.frames, f)
		return true
	}
	if d := b.deliver[peer]; d != nil {
		d(f)
		return true
	}
	if q, ok := b.held[peer]; ok {
		b.held[peer] = append(q, f)
		return true
	}
	return false
}

// release ends the fence of peer: the frames it kept are delivered, in order, after the ones
// passed on by the old node.
func (b *RedisBus) release(peer string) {
	b.mu.Lock()
	fe := b.fences[peer]
	if fe == nil {
		b.mu.Unlock()
		return
	}
	delete(b.fences, peer)
	if fe.timer != nil {
		fe.timer.Stop()
	}
	for _, f := range fe.frames {
		b.local(peer, f, true)
	}
	takes := b.deferred[peer]
	delete(b.deferred, peer)
	b.mu.Unlock()
	for _, t := range takes {
		b.handTake(t)
	}
}

// Attach implements Bus; frames held for peer during a handover are delivered first.
func (b *RedisBus) Attach(peer string, deliver func([]byte)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.held[peer] {
		deliver(f)
	}
	delete(b.held, peer)
	b.deliver[peer] = deliver
}

// Detach implements Bus.
func (b *RedisBus) Detach(peer string) {
	b.mu.Lock()
	if fe := b.fences[peer]; fe != nil {
		// Moving on before the last move settled: what the fence kept goes into the session
		// (and with it to the next node), ahead of anything the first node still passes on.
		if fe.timer != nil {
			fe.timer.Stop()
		}
		delete(b.fences, peer)
		if d := b.deliver[peer]; d != nil {
			for _, f := range fe.frames {
				d(f)
			}
		}
	}
	delete(b.deliver, peer)
	delete(b.held, peer)
	for room, ps := range b.rooms {
		if _, ok := ps[peer]; ok {
			delete(ps, peer)
			if len(ps) == 0 {
				delete(b.rooms, room)
				delete(b.seen, room)
			}
		}
	}
	b.mu.Unlock()
}

// Rooms implements Bus: rooms with members on this node.
func (b *RedisBus) Rooms() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.rooms)
}

func (b *RedisBus) bind(give func(token, user string) (*handover, bool), gone func(room, peer string)) {
	b.mu.Lock()
	b.give, b.gone = give, gone
	b.mu.Unlock()
}

// sessionTTL bounds the life of a resume token's record while its session is connected
// (a node that dies leaves its records behind).
const sessionTTL = 24 * time.Hour

func (b *RedisBus) register(token, peer, user string) {
	if b.down("session") != nil {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	defer cancel()
	if err := b.rdb.Set(ctx, sessKey(token), b.node+"|"+peer+"|"+user, sessionTTL).Err(); err != nil {
		b.log.Warn("signaling: this session cannot resume on another node", "err", b.failed("session", err))
	}
}

func (b *RedisBus) forget(token string) {
	if b.down("session") != nil {
		return // it expires
	}
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	defer cancel()
	if err := b.rdb.Del(ctx, sessKey(token)).Err(); err != nil {
		b.metrics.errors.WithLabelValues("session").Inc() // it expires anyway
	}
}

func (b *RedisBus) dropped(token string) {
	if b.down("session") != nil {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	defer cancel()
	if err := b.rdb.Expire(ctx, sessKey(token), b.grace+b.presence+time.Second).Err(); err != nil {
		b.metrics.errors.WithLabelValues("session").Inc()
	}
}

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

// take implements sessionStore.
func (b *RedisBus) take(ctx context.Context, token, user string) (*handover, error) {
	if err := b.down("session"); err != nil {
		return nil, err
	}
	rec, err := b.rdb.Get(ctx, sessKey(token)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, b.failed("session", err)
	}
	parts := strings.SplitN(rec, "|", 3)
	if len(parts) != 3 || parts[2] != user || parts[0] == b.node {
		return nil, nil // another user's token; or ours, and the hub no longer knows it
	}
	from, peer := parts[0], parts[1]

	b.hold(peer)
	var h *handover
	defer func() {
		if h == nil {
			b.unhold(peer)
		}
	}()
	ago, err := aliveScript.Run(ctx, b.rdb, nil, from).Int64()
	if err != nil {
		return nil, b.failed("session", err)
	}
	if ago >= 0 && ago < b.presence.Milliseconds() {
		// The node is alive: it gives the session away, mailbox and all.
		id, reply, done := b.await()
		defer done()
		msg, _ := json.Marshal(takeMsg{ID: id, Token: token, User: user, From: b.node})
		if err := b.rdb.Publish(ctx, nodeChannel(from), append([]byte{kindTake}, msg...)).Err(); err != nil {
			return nil, b.failed("publish", err)
		}
		b.metrics.published.Inc()
		t := time.NewTimer(handoverTimeout)
		defer t.Stop()
		var ok bool
		select {
		case h, ok = <-reply:
		case <-t.C:
			// No answer: the node died since its last heartbeat. Should it still answer
			// later, it gives the session to nobody and passes its frames on here.
			b.metrics.handovers.WithLabelValues("timeout").Inc()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if ok && h == nil {
			b.metrics.handovers.WithLabelValues("unknown").Inc()
			return nil, nil
		}
		if h != nil {
			h.From = from
			b.metrics.handovers.WithLabelValues("handed_over").Inc()
			b.forgetToken(ctx, token)
			return h, nil
		}
	}

	// The node is dead: its mailbox is lost, but the peer keeps its id and room.
	res, err := moveScript.Run(ctx, b.rdb, nil, peer, b.node).Slice()
	if errors.Is(err, redis.Nil) {
		h = &handover{Peer: peer, From: from, Adopted: true} // in no room any more
		b.metrics.handovers.WithLabelValues("adopted").Inc()
		b.forgetToken(ctx, token)
		return h, nil
	}
	if err != nil {
		return nil, b.failed("move", err)
	}
	h = &handover{Peer: peer, From: from, Adopted: true}
	if len(res) == 2 {
		h.Room, _ = res[0].(string)
		if meta, _ := res[1].(string); meta != "" {
			h.Meta = json.RawMessage(meta)
		}
	}
	b.metrics.handovers.WithLabelValues("adopted").Inc()
	b.forgetToken(ctx, token)
	return h, nil
}

func (b *RedisBus) forgetToken(ctx context.Context, token string) {
	if err := b.rdb.Del(ctx, sessKey(token)).Err(); err != nil {
		b.metrics.errors.WithLabelValues("session").Inc()
	}
}

// moved implements sessionStore: the session of h now lives here.
func (b *RedisBus) moved(ctx context.Context, h *handover) {
	b.mu.Lock()
	delete(b.held, h.Peer) // Attach delivered them
	if h.Room != "" {
		if b.rooms[h.Room] == nil {
			b.rooms[h.Room] = map[string]string{}
		}
		b.rooms[h.Room][h.Peer] = string(h.Meta)
	}
	b.mu.Unlock()
	if h.Adopted || h.Room == "" { // nothing comes through the old node
		b.release(h.Peer)
		return
	}
	// Senders now route to this node. The frames they routed to the old node before reach
	// here passed on by it; the fence keeps the direct ones behind those until the old node
	// has passed on its last one (its marker to itself comes back behind every frame
	// published to it before the move).
	if err := moveScript.Run(ctx, b.rdb, nil, h.Peer, b.node).Err(); err != nil && !errors.Is(err, redis.Nil) {
		b.log.Warn("signaling: moving a resumed peer", "err", b.failed("move", err))
		b.release(h.Peer)
		return
	}
	if err := b.rdb.Publish(ctx, nodeChannel(h.From), string(kindMoved)+h.Peer+"|"+b.node).Err(); err != nil {
		b.metrics.errors.WithLabelValues("publish").Inc()
		b.release(h.Peer)
		return
	}
	b.metrics.published.Inc()
	b.mu.Lock()
	if fe := b.fences[h.Peer]; fe != nil {
		fe.timer = time.AfterFunc(fenceTimeout, func() { b.release(h.Peer) })
	}
	b.mu.Unlock()
}

// hold starts keeping the frames that reach this node for peer, until Attach.
func (b *RedisBus) hold(peer string) {
	b.mu.Lock()
	if _, ok := b.held[peer]; !ok {
		b.held[peer] = [][]byte{}
	}
	if b.fences[peer] == nil {
		b.fences[peer] = &fence{}
	}
	b.mu.Unlock()
}

// unhold forgets a peer whose handover failed, and what was kept for it.
func (b *RedisBus) unhold(peer string) {
	b.mu.Lock()
	delete(b.held, peer)
	if fe := b.fences[peer]; fe != nil {
		if fe.timer != nil {
			fe.timer.Stop()
		}
		delete(b.fences, peer)
	}
	b.mu.Unlock()
}

// receive handles the messages of this node's channel, in order.
func (b *RedisBus) receive(msgs <-chan *redis.Message) {
	for m := range msgs {
		b.metrics.received.Inc()
		p := m.Payload
		if len(p) == 0 {
			continue
		}
		switch p[0] {
		case kindDeliver:
			b.received(p[1:], false)
		case kindForward:
			b.received(p[1:], true)
		case kindMoved: // a peer of ours lives elsewhere now: mark the end of what we route on
			if err := b.rdb.Publish(b.ctx, nodeChannel(b.node), string(kindMark)+p[1:]).Err(); err != nil {
				b.metrics.errors.WithLabelValues("publish").Inc()
			}
		case kindMark:
			peer, node, ok := strings.Cut(p[1:], "|")
			if !ok {
				b.metrics.errors.WithLabelValues("message").Inc()
				continue
			}
			if err := b.rdb.Publish(b.ctx, nodeChannel(node), string(kindFence)+peer).Err(); err != nil {
				b.metrics.errors.WithLabelValues("publish").Inc()
			}
		case kindFence:
			b.release(p[1:])
		case kindTake:
			var t takeMsg
			if json.Unmarshal([]byte(p[1:]), &t) != nil {
				b.metrics.errors.WithLabelValues("message").Inc()
				continue
			}
			b.handTake(t)
		case kindProbe:
			b.answer(p[1:], nil)
		case kindHandover:
			var h handoverMsg
			if json.Unmarshal([]byte(p[1:]), &h) != nil {
				b.metrics.errors.WithLabelValues("message").Inc()
				continue
			}
			b.answer(h.ID, h.Session)
		default:
			b.metrics.errors.WithLabelValues("message").Inc()
		}
	}
}

// received delivers a frame published for peers of this node; frames for a peer handed to
// another node are passed on there.
func (b *RedisBus) received(p string, forwarded bool) {
	list, frame, ok := strings.Cut(p, "\n")
	if !ok {
		b.metrics.errors.WithLabelValues("message").Inc()
		return
	}
	f := []byte(frame)
	var onward map[string][]string
	now := time.Now()
	b.mu.Lock()
	b.observe(f)
	for peer := range strings.SplitSeq(list, ",") {
		if b.local(peer, f, forwarded) {
			continue
		}
		if fw, ok := b.forward[peer]; ok && now.Before(fw.until) {
			if onward == nil {
				onward = map[string][]string{}
			}
			onward[fw.node] = append(onward[fw.node], peer)
		}
	}
	b.mu.Unlock()
	for node, peers := range onward {
		msg := string(kindForward) + strings.Join(peers, ",") + "\n" + frame
		if err := b.rdb.Publish(b.ctx, nodeChannel(node), msg).Err(); err != nil {
			b.metrics.errors.WithLabelValues("publish").Inc()
			continue
		}
		b.metrics.published.Inc()
	}
}

// handTake answers another node asking for a session of this node. The frames for its peer
// are passed on from before the session leaves the hub, so none is dropped on the way; a peer
// that itself just moved here goes on only once its fence is released.
func (b *RedisBus) handTake(t takeMsg) {
	peer := b.peerOf(t.Token)
	now := time.Now()
	b.mu.Lock()
	give := b.give
	if peer != "" && b.fences[peer] != nil {
		b.deferred[peer] = append(b.deferred[peer], t)
		b.mu.Unlock()
		return
	}
	for p, fw := range b.forward {
		if now.After(fw.until) {
			delete(b.forward, p)
		}
	}
	prev, had := b.forward[peer]
	if peer != "" {
		b.forward[peer] = forwarding{node: t.From, until: now.Add(forwardFor)}
	}
	b.mu.Unlock()
	var h *handover
	if give != nil {
		h, _ = give(t.Token, t.User)
	}
	b.mu.Lock()
	switch {
	case h != nil && h.Peer != peer: // no record of the token: passed on from now
		b.forward[h.Peer] = forwarding{node: t.From, until: now.Add(forwardFor)}
	case h == nil && peer != "" && had:
		b.forward[peer] = prev
	case h == nil && peer != "":
		delete(b.forward, peer)
	}
	b.mu.Unlock()
	msg, _ := json.Marshal(handoverMsg{ID: t.ID, Session: h})
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	defer cancel()
	if err := b.rdb.Publish(ctx, nodeChannel(t.From), append([]byte{kindHandover}, msg...)).Err(); err != nil {
		b.log.Warn("signaling: handing a session over", "err", b.failed("publish", err))
		return
	}
	b.metrics.published.Inc()
}

// peerOf is the peer whose session on this node token resumes, from its record; "" when
// there is none.
func (b *RedisBus) peerOf(token string) string {
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	defer cancel()
	rec, err := b.rdb.Get(ctx, sessKey(token)).Result()
	if err != nil {
		return ""
	}
	parts := strings.SplitN(rec, "|", 3)
	if len(parts) != 3 || parts[0] != b.node {
		return ""
	}
	return parts[1]
}

func (b *RedisBus) heartbeat(ctx context.Context) error {
	return heartbeatScript.Run(ctx, b.rdb, nil, b.node).Err()
}

// watch beats the heartbeat, notices Redis going and coming back (and then puts this node's
// members back), and removes the peers of dead nodes.
func (b *RedisBus) watch() {
	tick := time.NewTicker(b.presence / 3)
	defer tick.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.presence/3)
		err := b.heartbeat(ctx)
		switch {
		case err != nil && b.up.Load():
			b.up.Store(false)
			b.log.Error("signaling: redis lost: joins are refused (unavailable) until it is back; connected clients stay",
				"err", b.failed("heartbeat", err))
		case err != nil:
			b.metrics.errors.WithLabelValues("heartbeat").Inc()
		case !b.up.Load():
			if rerr := b.resync(ctx); rerr != nil {
				b.metrics.errors.WithLabelValues("resync").Inc()
				break // next tick
			}
			if !b.probe(ctx) {
				break // the subscription is not back yet
			}
			b.upSince.Store(time.Now().UnixNano())
			b.up.Store(true)
			b.log.Info("signaling: redis is back")
		default:
			b.refreshSeen(ctx)
			// Only a node that has been up for a whole presence timeout judges the others,
			// or tells rooms who left during an outage: after an outage, every live node has
			// beaten and put its members back by then.
			if time.Since(time.Unix(0, b.upSince.Load())) < b.presence {
				break
			}
			b.mu.RLock()
			departed := len(b.departed)
			b.mu.RUnlock()
			if departed > 0 { // leaves that failed: finish them, then tell the rooms
				if err := b.resync(ctx); err != nil {
					b.metrics.errors.WithLabelValues("resync").Inc()
				} else {
					b.tell()
				}
			}
			b.reap(ctx)
		}
		cancel()
	}
}

// observe keeps seen current with the peer-joined and peer-left frames that pass through
// this node; b.mu is held.
func (b *RedisBus) observe(frame []byte) {
	if !bytes.HasPrefix(frame, []byte(`{"type":"peer-`)) {
		return
	}
	var m protocol.PeerJoined
	if json.Unmarshal(frame, &m) != nil {
		return
	}
	seen, ok := b.seen[m.Room]
	if !ok {
		return
	}
	seen = slices.DeleteFunc(seen, func(x protocol.Member) bool { return x.Peer == m.Peer })
	if m.Type == protocol.TypePeerJoined {
		seen = append(seen, protocol.Member{Peer: m.Peer, Meta: m.Meta})
	}
	b.seen[m.Room] = seen
}

// refreshSeen rereads the membership of every room with peers on this node, in one pipeline,
// so that what Members answers during an outage is at most a heartbeat old.
func (b *RedisBus) refreshSeen(ctx context.Context) {
	b.mu.RLock()
	rooms := make([]string, 0, len(b.rooms))
	for r := range b.rooms {
		rooms = append(rooms, r)
	}
	b.mu.RUnlock()
	if len(rooms) == 0 {
		return
	}
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(rooms))
	for i, r := range rooms {
		cmds[i] = pipe.HGetAll(ctx, roomKey(r))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.metrics.errors.WithLabelValues("members").Inc()
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, r := range rooms {
		if _, local := b.rooms[r]; !local {
			continue
		}
		flat := make([]any, 0, 2*len(cmds[i].Val()))
		for k, v := range cmds[i].Val() {
			flat = append(flat, k, v)
		}
		b.seen[r] = parseMembers(flat, "")
	}
}

// await registers a wait for the answer to a request with a fresh id; done ends the wait.
func (b *RedisBus) await() (id string, answer <-chan *handover, done func()) {
	id = randomID(9)
	ch := make(chan *handover, 1)
	b.mu.Lock()
	b.waits[id] = ch
	b.mu.Unlock()
	return id, ch, func() {
		b.mu.Lock()
		delete(b.waits, id)
		b.mu.Unlock()
	}
}

// answer hands h to whoever waits for the request id, if anyone still does.
func (b *RedisBus) answer(id string, h *handover) {
	b.mu.Lock()
	w := b.waits[id]
	delete(b.waits, id)
	b.mu.Unlock()
	if w != nil {
		w <- h
	}
}

// probe publishes to this node's own channel and waits for it to come back: the Pub/Sub
// connection re-subscribed after an outage.
func (b *RedisBus) probe(ctx context.Context) bool {
	id, got, done := b.await()
	defer done()
	if err := b.rdb.Publish(ctx, nodeChannel(b.node), string(kindProbe)+id).Err(); err != nil {
		return false
	}
	select {
	case <-got:
		return true
	case <-ctx.Done():
		return false
	}
}

// reap removes the peers of dead nodes from their rooms and tells the rooms.
func (b *RedisBus) reap(ctx context.Context) {
	res, err := reapScript.Run(ctx, b.rdb, nil, (b.presence + b.grace).Milliseconds()).StringSlice()
	if err != nil {
		b.metrics.errors.WithLabelValues("reap").Inc()
		return
	}
	b.mu.RLock()
	gone := b.gone
	b.mu.RUnlock()
	for i := 0; i+1 < len(res); i += 2 {
		b.log.Info("signaling: peer of a dead node removed", "room", res[i])
		if gone != nil {
			gone(res[i], res[i+1])
		}
	}
}

// resync makes Redis hold this node's members again after an outage (Redis may have
// restarted empty), and removes the ones that left meanwhile (they stay in departed until
// tell tells their rooms).
func (b *RedisBus) resync(ctx context.Context) error {
	entries, err := b.rdb.SMembers(ctx, nodePeers(b.node)).Result()
	if err != nil {
		return err
	}
	b.mu.RLock()
	local := map[string]string{} // "room|peer" -> meta
	for room, ps := range b.rooms {
		for p, meta := range ps {
			local[room+"|"+p] = meta
		}
	}
	gone := map[string]bool{}
	for e := range b.departed {
		gone[e] = true
	}
	b.mu.RUnlock()
	for _, e := range entries {
		if _, ok := local[e]; !ok {
			gone[e] = true
		}
	}
	for e := range gone {
		if _, ok := local[e]; ok {
			continue // left and joined again meanwhile
		}
		room, peer, _ := strings.Cut(e, "|")
		if err := leaveScript.Run(ctx, b.rdb, nil, room, peer).Err(); err != nil {
			return err
		}
		b.mu.Lock()
		b.departed[e] = struct{}{} // told once the bus is up
		b.mu.Unlock()
	}
	for e, meta := range local {
		room, peer, _ := strings.Cut(e, "|")
		ok, err := b.rdb.HExists(ctx, roomKey(room), peer).Result()
		if err != nil {
			return err
		}
		if !ok {
			if err := joinScript.Run(ctx, b.rdb, nil, room, peer, 1<<30, b.node, meta).Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// tell lets the rooms know that the departed peers of this node are gone; the bus is up.
func (b *RedisBus) tell() {
	b.mu.Lock()
	gone := b.gone
	var left []string
	for e := range b.departed {
		left = append(left, e)
	}
	clear(b.departed)
	b.mu.Unlock()
	if gone == nil {
		return
	}
	for _, e := range left {
		room, peer, _ := strings.Cut(e, "|")
		gone(room, peer)
	}
}

// busMetrics are the icebox_signaling_bus_* series.
type busMetrics struct {
	published prometheus.Counter
	received  prometheus.Counter
	errors    *prometheus.CounterVec
	handovers *prometheus.CounterVec
}

func newBusMetrics(reg prometheus.Registerer, b *RedisBus) busMetrics {
	m := busMetrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icebox_signaling_bus_published_total",
			Help: "Messages this node published to other nodes through Redis.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icebox_signaling_bus_received_total",
			Help: "Messages this node received from other nodes through Redis.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_bus_errors_total",
			Help: "Failed Redis operations, by operation (join, leave, members, contains, publish, session, move, heartbeat, reap, resync, message).",
		}, []string{"op"}),
		handovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_bus_handovers_total",
			Help: "Sessions resumed from another node, by result (handed_over, adopted: from a dead node, unknown, timeout).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.published, m.received, m.errors, m.handovers,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "icebox_signaling_bus_up",
			Help: "1 while Redis answers this node's heartbeats, 0 while it is lost.",
		}, func() float64 {
			if b.up.Load() {
				return 1
			}
			return 0
		}))
	return m
}

var setRedisLogger sync.Once

// redisLogger puts go-redis's messages into icebox's log.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}
