package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// What Redis holds (one database, not Redis Cluster):
//
//	icebox:room:{R}          hash  peer -> "seq|node|meta": the members of room R
//	icebox:room:{R}:seq      join counter of R (the join order)
//	icebox:peer:{P}          the room peer P is in
//	icebox:peer:{P}:op       "op\n[answer]": the answer of P's last join or leave (opMemory)
//	icebox:node:{N}:peers    set of "room|peer" held by node N
//	icebox:nodes             zset  node -> last heartbeat (Redis clock, ms)
//	icebox:sess:{T}          "node|peer|user": the session resume token T resumes
//	icebox:n:{N}             Pub/Sub channel of node N: frames for its peers, events, handovers
//
// Each name is defined once, below. Scripts get the keys they touch as KEYS[]; where a script
// derives a name from what it reads (a member's node), it gets the name's parts as ARGV.

// keyName is a family of keys or channels: prefix + name + suffix.
type keyName struct{ pre, suf string }

func (k keyName) of(name string) string { return k.pre + name + k.suf }

var (
	roomKey      = keyName{"icebox:room:{", "}"}
	roomSeqKey   = keyName{"icebox:room:{", "}:seq"}
	peerKey      = keyName{"icebox:peer:{", "}"}
	peerOpKey    = keyName{"icebox:peer:{", "}:op"}
	nodePeersKey = keyName{"icebox:node:{", "}:peers"}
	sessKey      = keyName{"icebox:sess:{", "}"}
	nodeChannel  = keyName{"icebox:n:{", "}"}
)

const nodesKey = "icebox:nodes"

// opLua are the Lua functions of the scripts that keep their answer under an op name (the
// answer, as JSON, after the op's name and a newline, in key opk, for memory seconds): the
// same op run again (a retry after its reply was lost) answers the same.
const opLua = `
local function answered(opk, op)
  if op == '' then return nil end
  local saved = redis.call('GET', opk)
  if not saved then return nil end
  local sop, body = string.match(saved, '^([^\n]*)\n(.*)$')
  if sop ~= op then return nil end
  return cjson.decode(body)
end
local function keep(opk, op, answer, memory)
  if op ~= '' then
    redis.call('SET', opk, op .. '\n' .. (#answer == 0 and '[]' or cjson.encode(answer)), 'EX', memory)
  end
end
`

// Scripts.
var (
	// joinScript: KEYS room, room seq, peer, self's memberships, peer's op; ARGV room, peer,
	// max, self, meta, channel prefix and suffix, quiet ("1": a resync putting a member back:
	// no limit, no event), op, opMemory (s). Returns -1 (full), or the members before, flat,
	// which it keeps as op's answer. A peer already in changes nothing: the same op again (a
	// retry after its reply was lost) answers what it answered; otherwise the members before
	// are those in now that joined earlier.
	joinScript = redis.NewScript(opLua + `
local rk, seqk, pk, npk, opk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local room, peer, max, self, meta, cpre, csuf, quiet = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8] == '1'
local op, memory = ARGV[9], tonumber(ARGV[10])
local all = redis.call('HGETALL', rk)
local cur = redis.call('HGET', rk, peer)
if cur then
  -- Already in (a join whose answer was lost, tried again): nothing changes, nobody is told
  -- twice. The members who left since are not in the room, but were in the answer the
  -- others were told about, and their peer-left is on its way: the answer kept is the one.
  local again = answered(opk, op)
  if again then return again end
  local mine = tonumber(string.match(cur, '^([^|]*)|'))
  local out = {}
  for i = 1, #all, 2 do
    local s = tonumber(string.match(all[i + 1], '^([^|]*)|'))
    if all[i] ~= peer and s and mine and s < mine then
      table.insert(out, all[i])
      table.insert(out, all[i + 1])
    end
  end
  return out
end
if not quiet and #all / 2 >= max then
  return -1
end
local out, byNode, order = {}, {}, {}
for i = 1, #all, 2 do
  local p, v = all[i], all[i + 1]
  if p ~= peer then
    table.insert(out, p)
    table.insert(out, v)
    local n = string.match(v, '^[^|]*|([^|]*)|')
    if n and n ~= self then
      if not byNode[n] then byNode[n] = {}; table.insert(order, n) end
      table.insert(byNode[n], p)
    end
  end
end
local seq = redis.call('INCR', seqk)
redis.call('HSET', rk, peer, seq .. '|' .. self .. '|' .. meta)
redis.call('SET', pk, room)
redis.call('SADD', npk, room .. '|' .. peer)
keep(opk, op, out, memory)
if not quiet then
  for _, n in ipairs(order) do
    redis.call('PUBLISH', cpre .. n .. csuf, 'j' .. room .. '\n' .. peer .. '\n' .. meta .. '\n' .. table.concat(byNode[n], ','))
  end
end
return out`)

	// leaveScript: KEYS room, room seq, peer, peer's op; ARGV room, peer, reason, only (a
	// node, or ""), self, memberships prefix and suffix, channel prefix and suffix, op,
	// opMemory (s). Returns {0} (not there), or {1, the members left, flat}, which it keeps as
	// op's answer: the same op again (a retry after its reply was lost) answers it again.
	leaveScript = redis.NewScript(opLua + `
local rk, seqk, pk, opk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local room, peer, reason, only, self = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local npre, nsuf, cpre, csuf = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local op, memory = ARGV[10], tonumber(ARGV[11])
local v = redis.call('HGET', rk, peer)
if not v then return answered(opk, op) or {0} end
local node = string.match(v, '^[^|]*|([^|]*)|')
if only ~= '' and node ~= only then return {0} end
redis.call('HDEL', rk, peer)
if redis.call('GET', pk) == room then redis.call('DEL', pk) end
redis.call('SREM', npre .. node .. nsuf, room .. '|' .. peer)
local all = redis.call('HGETALL', rk)
if #all == 0 then redis.call('DEL', rk, seqk) end
local out, byNode, order = {1}, {}, {}
for i = 1, #all, 2 do
  local p, w = all[i], all[i + 1]
  table.insert(out, p)
  table.insert(out, w)
  local n = string.match(w, '^[^|]*|([^|]*)|')
  if n and n ~= self then
    if not byNode[n] then byNode[n] = {}; table.insert(order, n) end
    table.insert(byNode[n], p)
  end
end
keep(opk, op, out, memory)
for _, n in ipairs(order) do
  redis.call('PUBLISH', cpre .. n .. csuf, 'l' .. room .. '\n' .. peer .. '\n' .. reason .. '\n' .. table.concat(byNode[n], ','))
end
return out`)

	// sendScript: KEYS room; ARGV frame, self, channel prefix and suffix, peers... Publishes
	// the frame to the node of each peer, one message per node; returns the number of
	// messages, then the peers the room places on self (the caller delivers those itself).
	sendScript = redis.NewScript(`
local rk, frame, self, cpre, csuf = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local byNode, order, mine = {}, {}, {}
for i = 5, #ARGV do
  local v = redis.call('HGET', rk, ARGV[i])
  if v then
    local n = string.match(v, '^[^|]*|([^|]*)|')
    if n == self then
      table.insert(mine, ARGV[i])
    elseif n then
      if not byNode[n] then byNode[n] = {}; table.insert(order, n) end
      table.insert(byNode[n], ARGV[i])
    end
  end
end
for _, n in ipairs(order) do
  redis.call('PUBLISH', cpre .. n .. csuf, 'd' .. table.concat(byNode[n], ',') .. '\n' .. frame)
end
table.insert(mine, 1, tostring(#order))
return mine`)

	// moveScript: KEYS peer; ARGV peer, to, room prefix and suffix, memberships prefix and
	// suffix. Gives the peer's membership to node to; returns {room, meta}, or nil.
	moveScript = redis.NewScript(`
local pk, peer, to, rpre, rsuf, npre, nsuf = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local room = redis.call('GET', pk)
if not room then return false end
local rk = rpre .. room .. rsuf
local v = redis.call('HGET', rk, peer)
if not v then return false end
local seq, from, meta = string.match(v, '^([^|]*)|([^|]*)|(.*)$')
redis.call('HSET', rk, peer, seq .. '|' .. to .. '|' .. meta)
redis.call('SREM', npre .. from .. nsuf, room .. '|' .. peer)
redis.call('SADD', npre .. to .. nsuf, room .. '|' .. peer)
return {room, meta}`)

	// heartbeatScript: KEYS nodes; ARGV node, backdate (ms). The node beat now, on Redis's
	// clock, less backdate (a node that shuts down marks itself dead).
	heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2]), ARGV[1])
return 1`)

	// sinceBeatScript: KEYS nodes; ARGV node. How long ago node beat, in ms (-1: never).
	sinceBeatScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then return -1 end
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(s)`)

	// deadScript: KEYS nodes; ARGV silence (ms). The nodes silent for longer.
	deadScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))`)
)

// redisBroker is the broker of nodes sharing one Redis (signaling.redis_url). Heartbeats have
// a connection of their own (beats): a node busy with thousands of joins still beats, and is
// not taken for lost or dead.
type redisBroker struct {
	rdb   *redis.Client
	beats *redis.Client
	ps    *redis.PubSub
	node  string
}

// redisOpts are the client settings: fail fast, so that an outage shows at once.
func redisOpts(url string) (*redis.Options, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opt.MaxRetries = 1
	opt.DialTimeout = 3 * time.Second
	opt.ReadTimeout = 3 * time.Second
	opt.WriteTimeout = 3 * time.Second
	opt.ContextTimeoutEnabled = true
	return opt, nil
}

// newRedisBroker connects and subscribes to node's channel (confirmed before it returns).
func newRedisBroker(ctx context.Context, url, node string, log *slog.Logger) (*redisBroker, error) {
	redacted := RedactURL(url)
	opt, err := redisOpts(url)
	if err != nil {
		return nil, fmt.Errorf("signaling.redis_url %s: %w", redacted, err)
	}
	// go-redis logs its reconnections on stderr, in its own format: into icebox's log, at
	// debug level (the bus itself reports an outage).
	setRedisLogger.Do(func() { redis.SetLogger(redisLogger{log}) }) // a global of go-redis
	beats := *opt
	beats.PoolSize, beats.MinIdleConns = 1, 1
	b := &redisBroker{rdb: redis.NewClient(opt), beats: redis.NewClient(&beats), node: node}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		_ = b.rdb.Close()
		_ = b.beats.Close()
		return nil, fmt.Errorf("redis at %s: %w", redacted, err)
	}
	b.ps = b.rdb.Subscribe(ctx, nodeChannel.of(node))
	if _, err := b.ps.Receive(ctx); err != nil {
		_ = b.close()
		return nil, fmt.Errorf("redis at %s: subscribing: %w", redacted, err)
	}
	return b, nil
}

func (b *redisBroker) close() error {
	var err error
	if b.ps != nil {
		err = b.ps.Close()
	}
	return errors.Join(err, b.rdb.Close(), b.beats.Close())
}

func (b *redisBroker) join(ctx context.Context, node, room string, m protocol.Member, max int, op string) ([]memberRec, error) {
	return b.joinScript(ctx, node, room, m, max, false, op)
}

// restore puts m back into room without telling anyone (a resync after Redis restarted).
func (b *redisBroker) restore(ctx context.Context, node, room string, m protocol.Member) error {
	_, err := b.joinScript(ctx, node, room, m, 0, true, "")
	return err
}

func (b *redisBroker) joinScript(ctx context.Context, node, room string, m protocol.Member, max int, quiet bool, op string) ([]memberRec, error) {
	res, err := joinScript.Run(ctx, b.rdb,
		[]string{roomKey.of(room), roomSeqKey.of(room), peerKey.of(m.Peer), nodePeersKey.of(node), peerOpKey.of(m.Peer)},
		room, m.Peer, max, node, string(m.Meta), nodeChannel.pre, nodeChannel.suf, flag(quiet),
		op, int(opMemory/time.Second)).Result()
	if err != nil {
		return nil, err
	}
	if n, ok := res.(int64); ok && n == -1 {
		return nil, ErrRoomFull
	}
	return parseMembers(strs(res)), nil
}

func (b *redisBroker) leave(ctx context.Context, node, room, peer, reason, only, op string) ([]memberRec, bool, error) {
	res, err := leaveScript.Run(ctx, b.rdb,
		[]string{roomKey.of(room), roomSeqKey.of(room), peerKey.of(peer), peerOpKey.of(peer)},
		room, peer, reason, only, node, nodePeersKey.pre, nodePeersKey.suf, nodeChannel.pre, nodeChannel.suf,
		op, int(opMemory/time.Second)).Slice()
	if err != nil {
		return nil, false, err
	}
	if len(res) == 0 || res[0] != int64(1) {
		return nil, false, nil
	}
	return parseMembers(strs(res[1:])), true, nil
}

func (b *redisBroker) outcome(ctx context.Context, peer, op string) ([]memberRec, bool, error) {
	saved, err := b.rdb.Get(ctx, peerOpKey.of(peer)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	sop, body, _ := strings.Cut(saved, "\n")
	if sop != op {
		return nil, false, nil
	}
	// A join's answer is the members before, flat; a leave's is 1, then the members left.
	var answer []any
	if err := json.Unmarshal([]byte(body), &answer); err != nil {
		return nil, false, fmt.Errorf("the answer kept for %s: %w", peer, err)
	}
	flat := make([]string, 0, len(answer))
	for _, v := range answer {
		if s, ok := v.(string); ok {
			flat = append(flat, s)
		}
	}
	return parseMembers(flat), true, nil
}

func (b *redisBroker) members(ctx context.Context, room string) ([]memberRec, error) {
	fields, err := b.rdb.HGetAll(ctx, roomKey.of(room)).Result()
	if err != nil {
		return nil, err
	}
	flat := make([]string, 0, 2*len(fields))
	for k, v := range fields {
		flat = append(flat, k, v)
	}
	return parseMembers(flat), nil
}

func (b *redisBroker) contains(ctx context.Context, room, peer string) (bool, error) {
	return b.rdb.HExists(ctx, roomKey.of(room), peer).Result()
}

func (b *redisBroker) send(ctx context.Context, node, room string, peers []string, frame []byte) ([]string, int, error) {
	args := make([]any, 0, 4+len(peers))
	args = append(args, frame, node, nodeChannel.pre, nodeChannel.suf)
	for _, p := range peers {
		args = append(args, p)
	}
	res, err := sendScript.Run(ctx, b.rdb, []string{roomKey.of(room)}, args...).StringSlice()
	if err != nil {
		return nil, 0, err
	}
	if len(res) == 0 {
		return nil, 0, errors.New("no answer from the send script")
	}
	n, _ := strconv.Atoi(res[0])
	return res[1:], n, nil
}

func (b *redisBroker) move(ctx context.Context, peer, to string) (string, json.RawMessage, bool, error) {
	res, err := moveScript.Run(ctx, b.rdb, []string{peerKey.of(peer)},
		peer, to, roomKey.pre, roomKey.suf, nodePeersKey.pre, nodePeersKey.suf).StringSlice()
	if errors.Is(err, redis.Nil) {
		return "", nil, false, nil
	}
	if err != nil || len(res) != 2 {
		return "", nil, false, err
	}
	var meta json.RawMessage
	if res[1] != "" {
		meta = json.RawMessage(res[1])
	}
	return res[0], meta, true, nil
}

func (b *redisBroker) nodePeers(ctx context.Context, node string) ([]roomPeer, error) {
	entries, err := b.rdb.SMembers(ctx, nodePeersKey.of(node)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]roomPeer, 0, len(entries))
	for _, e := range entries {
		if room, peer, ok := strings.Cut(e, "|"); ok {
			out = append(out, roomPeer{room, peer})
		}
	}
	return out, nil
}

func (b *redisBroker) publish(ctx context.Context, node string, msg []byte) error {
	return b.rdb.Publish(ctx, nodeChannel.of(node), msg).Err()
}

func (b *redisBroker) receive(handle func([]byte)) {
	for m := range b.ps.Channel(redis.WithChannelSize(1024)) {
		handle([]byte(m.Payload))
	}
}

func (b *redisBroker) setSession(ctx context.Context, token string, rec sessionRec, ttl time.Duration) error {
	return b.rdb.Set(ctx, sessKey.of(token), rec.String(), ttl).Err()
}

func (b *redisBroker) getSession(ctx context.Context, token string) (sessionRec, bool, error) {
	v, err := b.rdb.Get(ctx, sessKey.of(token)).Result()
	if errors.Is(err, redis.Nil) {
		return sessionRec{}, false, nil
	}
	if err != nil {
		return sessionRec{}, false, err
	}
	rec, ok := parseSessionRec(v)
	return rec, ok, nil
}

func (b *redisBroker) delSession(ctx context.Context, token string) error {
	return b.rdb.Del(ctx, sessKey.of(token)).Err()
}

func (b *redisBroker) expireSession(ctx context.Context, token string, ttl time.Duration) error {
	return b.rdb.Expire(ctx, sessKey.of(token), ttl).Err()
}

func (b *redisBroker) heartbeat(ctx context.Context, node string) error {
	return heartbeatScript.Run(ctx, b.beats, []string{nodesKey}, node, 0).Err()
}

func (b *redisBroker) markDead(ctx context.Context, node string, presence time.Duration) error {
	return heartbeatScript.Run(ctx, b.beats, []string{nodesKey}, node, presence.Milliseconds()).Err()
}

func (b *redisBroker) sinceBeat(ctx context.Context, node string) (time.Duration, bool, error) {
	ms, err := sinceBeatScript.Run(ctx, b.rdb, []string{nodesKey}, node).Int64()
	if err != nil || ms < 0 {
		return 0, false, err
	}
	return time.Duration(ms) * time.Millisecond, true, nil
}

func (b *redisBroker) deadNodes(ctx context.Context, silence time.Duration) ([]string, error) {
	return deadScript.Run(ctx, b.rdb, []string{nodesKey}, silence.Milliseconds()).StringSlice()
}

func (b *redisBroker) forgetNode(ctx context.Context, node string) error {
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, nodePeersKey.of(node))
		p.ZRem(ctx, nodesKey, node)
		return nil
	})
	return err
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// strs is a script's flat list of strings.
func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

var setRedisLogger sync.Once

// redisLogger puts go-redis's messages into icebox's log.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}
