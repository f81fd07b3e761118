package signaling

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// broker is what the nodes of a NodeBus share: rooms, node channels, session records and
// heartbeats. redisBroker keeps them in Redis; Loopback keeps them in this process, so most
// multi-node behaviour is tested without a redis-server. Every operation that changes a room
// and tells its members does both in one step (a Lua script in Redis), so no join or leave
// can slip between them.
type broker interface {
	// join adds m to room (on node) unless it holds max peers (ErrRoomFull), and publishes a
	// join event to the other nodes of the members that were there, which it returns.
	// op names this call: the broker keeps its answer for a while (see outcome), and the
	// same call run again (a Redis client's retry after a reply it did not get) answers the
	// same, changes nothing and tells nobody twice.
	join(ctx context.Context, node, room string, m protocol.Member, max int, op string) ([]memberRec, error)
	// restore puts m back into room on node without a limit or an event: a resync after
	// the broker lost it.
	restore(ctx context.Context, node, room string, m protocol.Member) error
	// leave removes peer from room, if it is there (and, with only set, still on node only),
	// and publishes a leave event with reason to the other nodes of the members left, which
	// it returns; left says whether peer was there. op as for join.
	leave(ctx context.Context, node, room, peer, reason, only, op string) (rest []memberRec, left bool, err error)
	// outcome is the answer of peer's join or leave op, if it happened (found false: it did
	// not, or its answer is older than opMemory). A call that failed on the way may have
	// happened all the same; its answer is what its members were told, which the members
	// read afterwards are not (a member that joined before and left since is not among them,
	// and its peer-left is on its way).
	outcome(ctx context.Context, peer, op string) (ms []memberRec, found bool, err error)
	// members lists room in join order.
	members(ctx context.Context, room string) ([]memberRec, error)
	contains(ctx context.Context, room, peer string) (bool, error)
	// send publishes frame to the node of each of peers, one message per node; the peers the
	// room places on node itself are returned instead, with the number of messages published.
	send(ctx context.Context, node, room string, peers []string, frame []byte) (mine []string, published int, err error)
	// move gives peer's membership to node to; it returns the room, the meta and the node
	// it came from (ok false: the peer is in no room).
	move(ctx context.Context, peer, to string) (room string, meta json.RawMessage, ok bool, err error)
	// nodePeers lists the memberships of node.
	nodePeers(ctx context.Context, node string) ([]roomPeer, error)

	// publish sends msg on node's channel; receive handles the messages of node's own
	// channel, in order, until the broker closes.
	publish(ctx context.Context, node string, msg []byte) error
	receive(handle func(msg []byte))

	setSession(ctx context.Context, token string, rec sessionRec, ttl time.Duration) error
	getSession(ctx context.Context, token string) (rec sessionRec, ok bool, err error)
	delSession(ctx context.Context, token string) error
	expireSession(ctx context.Context, token string, ttl time.Duration) error

	// heartbeat records that node is alive now (the broker's clock); markDead backdates it
	// by presence; sinceBeat is how long ago node last beat (known false: never, or
	// forgotten); deadNodes are the nodes silent for longer than silence.
	heartbeat(ctx context.Context, node string) error
	markDead(ctx context.Context, node string, presence time.Duration) error
	sinceBeat(ctx context.Context, node string) (ago time.Duration, known bool, err error)
	deadNodes(ctx context.Context, silence time.Duration) ([]string, error)
	// forgetNode removes a dead node and its (empty) membership list.
	forgetNode(ctx context.Context, node string) error

	close() error
}

// opMemory is how long the broker keeps the answer of a join or leave (broker.outcome): far
// longer than a call, its retry and the look at its outcome take.
const opMemory = time.Minute

// memberRec is a room member as the broker holds it: the node it lives on, and its join order.
type memberRec struct {
	protocol.Member
	node string
	seq  int64
}

// roomPeer is one membership of a node.
type roomPeer struct{ room, peer string }

func (rp roomPeer) String() string { return rp.room + "|" + rp.peer }

// sessionRec is what a resume token resumes: peer's session of user, on node.
type sessionRec struct{ node, peer, user string }

func (r sessionRec) String() string { return r.node + "|" + r.peer + "|" + r.user }

func parseSessionRec(s string) (sessionRec, bool) {
	parts := strings.SplitN(s, "|", 3)
	if len(parts) != 3 {
		return sessionRec{}, false
	}
	return sessionRec{node: parts[0], peer: parts[1], user: parts[2]}, true
}

func parseMember(peer, v string) (memberRec, bool) {
	seq, rest, ok1 := strings.Cut(v, "|")
	node, meta, ok2 := strings.Cut(rest, "|")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok1 || !ok2 || err != nil || peer == "" {
		return memberRec{}, false
	}
	m := memberRec{Member: protocol.Member{Peer: peer}, node: node, seq: n}
	if meta != "" {
		m.Meta = json.RawMessage(meta)
	}
	return m, true
}

// parseMembers reads a flat list peer, value, peer, value... in join order.
func parseMembers(flat []string) []memberRec {
	ms := make([]memberRec, 0, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		if m, ok := parseMember(flat[i], flat[i+1]); ok {
			ms = append(ms, m)
		}
	}
	slices.SortFunc(ms, func(a, b memberRec) int { return int(a.seq - b.seq) })
	return ms
}

func membersOf(recs []memberRec) []protocol.Member {
	out := make([]protocol.Member, len(recs))
	for i, r := range recs {
		out[i] = r.Member
	}
	return out
}

// Messages on a node's channel start with their kind. Events and frames are published by the
// broker's join, leave and send steps; the rest by the nodes themselves.
const (
	kindDeliver  = 'd' // d peer,peer,...\n frame
	kindForward  = 'f' // f peer,peer,...\n frame: passed on by the node a peer moved from
	kindJoined   = 'j' // j room\n peer\n meta\n peer,peer,...: peer joined room; tell these
	kindLeft     = 'l' // l room\n peer\n reason\n peer,peer,...: peer left room; tell these
	kindTake     = 't' // t {"id","token","user","from"}: give me that session
	kindHandover = 'h' // h {"id","session"}: the answer
	kindProbe    = 'p' // p id: a node checking that its own subscription is back
	kindMoved    = 'm' // m peer|node: the peer now lives on node (to the node it moved from)
	kindMark     = 'k' // k peer|node: that node's own marker, behind every frame routed to it before the move
	kindFence    = 'e' // e peer: no more frames for peer come through its old node
)

// deliverMsg is a frame for peers: kind (deliver, forward), the peers, then the frame.
func deliverMsg(kind byte, peers []string, frame []byte) []byte {
	return append([]byte(string(kind)+strings.Join(peers, ",")+"\n"), frame...)
}

// eventMsg is a join or leave event: kind, room, peer, then meta (join) or reason (leave),
// and the peers of the receiving node to tell.
func eventMsg(kind byte, room, peer, detail string, to []string) []byte {
	return []byte(string(kind) + room + "\n" + peer + "\n" + detail + "\n" + strings.Join(to, ","))
}

func parseEvent(p []byte) (room, peer, detail string, to []string, ok bool) {
	parts := strings.SplitN(string(p), "\n", 4)
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" {
		return "", "", "", nil, false
	}
	return parts[0], parts[1], parts[2], strings.Split(parts[3], ","), true
}

// groupByNode splits members by node: those on self, and the others per node (in the order
// their nodes first appear).
func groupByNode(ms []memberRec, self string) (mine []string, nodes []string, byNode map[string][]string) {
	byNode = map[string][]string{}
	for _, m := range ms {
		if m.node == self {
			mine = append(mine, m.Peer)
			continue
		}
		if _, ok := byNode[m.node]; !ok {
			nodes = append(nodes, m.node)
		}
		byNode[m.node] = append(byNode[m.node], m.Peer)
	}
	return mine, nodes, byNode
}
