package signaling

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// Bus is membership and delivery: which peers are in which room, and getting a frame to a peer.
// The Hub speaks the protocol and holds the connections of this node; the Bus is what nodes
// would share. LocalBus keeps everything in this process; a NodeBus shares rooms between the
// nodes on one broker (Redis, or a Loopback in tests).
//
// The bus tells rooms about their membership itself: a join or leave and the peer-joined or
// peer-left it sends to the others are one step, so every member's view (joined.peers, then
// each peer-joined and peer-left) adds up to the room.
type Bus interface {
	// Join adds m to room unless the room already holds max peers (ErrRoomFull), tells the
	// members that were there (peer-joined), and returns them in the order they joined.
	// first runs once m is in, before any other frame about the room reaches m's peer: the
	// hub queues the joined reply there, so that it comes first.
	Join(ctx context.Context, room string, m protocol.Member, max int, first func(before []protocol.Member)) ([]protocol.Member, error)
	// Leave removes peer from room and tells the members left (peer-left with reason); leaving
	// a room one is not in does nothing. When it fails, the bus finishes it later and tells
	// the room then.
	Leave(ctx context.Context, room, peer, reason string) error
	// Members lists room in join order.
	Members(ctx context.Context, room string) ([]protocol.Member, error)
	// Contains reports whether peer is in room (every signal asks).
	Contains(ctx context.Context, room, peer string) (bool, error)
	// Send delivers frame to each of peers of room, through the deliver func they were
	// attached with (on whichever node). Frames from one caller arrive in the order it sent
	// them. Unknown peers are skipped.
	Send(ctx context.Context, room string, peers []string, frame []byte) error
	// Attach routes frames for peer to deliver, until Detach. deliver must not block.
	Attach(peer string, deliver func(frame []byte))
	// Detach stops routing frames to peer.
	Detach(peer string)
	// Rooms is the number of rooms with members on this node (a metric).
	Rooms() int
}

// SessionStore lets a session outlive its node: the resume tokens are known to every node, and
// the node holding a session hands it (with its mailbox) to the node its client reconnected to.
// A bus shared between nodes (*NodeBus) is one; the hub gets it in Options.Sessions.
type SessionStore interface {
	// bind gives the store the hub's way to give a session away (another node asks for it).
	bind(give func(token, user string) (*handover, bool))
	// register records that token resumes peer's session (of user) on this node.
	register(ctx context.Context, token, peer, user string)
	// forget removes token: it was used, or its session ended.
	forget(ctx context.Context, token string)
	// dropped starts the countdown of token: its connection dropped, the session waits grace
	// for a resume.
	dropped(ctx context.Context, token string, grace time.Duration)
	// take gets the session token names from the node holding it (or, if that node died, its
	// peer id and room). Frames for its peer that reach this node meanwhile are held until the
	// hub attaches the peer. (nil, nil): no node has it.
	take(ctx context.Context, token, user string) (*handover, error)
	// moved records that the session of h now lives here (after take and Attach).
	moved(ctx context.Context, h *handover)
}

// handover is a session on its way from one node to another.
type handover struct {
	Peer    string          `json:"peer"`
	Room    string          `json:"room,omitempty"`
	Meta    json.RawMessage `json:"meta,omitempty"`
	Left    bool            `json:"left,omitempty"` // the client left its room (leave) and joined none since
	NextSeq uint64          `json:"next_seq"`
	Written uint64          `json:"written"`
	Frames  []handoverFrame `json:"frames,omitempty"`
	// From is the node it came from; Adopted says that node was dead, so the mailbox is lost
	// and the session continues after the last seq the client has.
	From    string `json:"from"`
	Adopted bool   `json:"adopted,omitempty"`
}

type handoverFrame struct {
	Seq  uint64          `json:"seq"`
	Data json.RawMessage `json:"data"`
}

// peerJoinedFrame and peerLeftFrame are the membership messages the bus sends to a room.
func peerJoinedFrame(room string, m protocol.Member) []byte {
	return encode(protocol.PeerJoined{Type: protocol.TypePeerJoined, Room: room, Peer: m.Peer, Meta: m.Meta})
}

func peerLeftFrame(room, peer, reason string) []byte {
	return encode(protocol.PeerLeft{Type: protocol.TypePeerLeft, Room: room, Peer: peer, Reason: reason})
}

// LocalBus is the in-process Bus: rooms and delivery within one icebox. One lock orders every
// join, leave and send, so membership messages and joined replies can never cross.
type LocalBus struct {
	mu      sync.RWMutex
	rooms   map[string][]protocol.Member
	deliver map[string]func([]byte)
}

// NewLocalBus returns an empty in-process Bus.
func NewLocalBus() *LocalBus {
	return &LocalBus{rooms: map[string][]protocol.Member{}, deliver: map[string]func([]byte){}}
}

// Join implements Bus.
func (b *LocalBus) Join(_ context.Context, room string, m protocol.Member, max int, first func([]protocol.Member)) ([]protocol.Member, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	members := b.rooms[room]
	if len(members) >= max {
		return nil, ErrRoomFull
	}
	before := append([]protocol.Member{}, members...)
	b.rooms[room] = append(members, m)
	first(before)
	b.send(peerIDs(before), peerJoinedFrame(room, m))
	return before, nil
}

// Leave implements Bus.
func (b *LocalBus) Leave(_ context.Context, room, peer, reason string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	members := b.rooms[room]
	if !slices.ContainsFunc(members, func(m protocol.Member) bool { return m.Peer == peer }) {
		return nil
	}
	members = slices.DeleteFunc(members, func(m protocol.Member) bool { return m.Peer == peer })
	if len(members) == 0 {
		delete(b.rooms, room)
		return nil
	}
	b.rooms[room] = members
	b.send(peerIDs(members), peerLeftFrame(room, peer, reason))
	return nil
}

// Members implements Bus.
func (b *LocalBus) Members(_ context.Context, room string) ([]protocol.Member, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return append([]protocol.Member{}, b.rooms[room]...), nil
}

// Contains implements Bus.
func (b *LocalBus) Contains(_ context.Context, room, peer string) (bool, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return slices.ContainsFunc(b.rooms[room], func(m protocol.Member) bool { return m.Peer == peer }), nil
}

// Send implements Bus.
func (b *LocalBus) Send(_ context.Context, _ string, peers []string, frame []byte) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	b.send(peers, frame)
	return nil
}

// send delivers frame to peers; b.mu is held.
func (b *LocalBus) send(peers []string, frame []byte) {
	for _, p := range peers {
		if d := b.deliver[p]; d != nil {
			d(frame)
		}
	}
}

// Attach implements Bus.
func (b *LocalBus) Attach(peer string, deliver func([]byte)) {
	b.mu.Lock()
	b.deliver[peer] = deliver
	b.mu.Unlock()
}

// Detach implements Bus.
func (b *LocalBus) Detach(peer string) {
	b.mu.Lock()
	delete(b.deliver, peer)
	b.mu.Unlock()
}

// Rooms implements Bus.
func (b *LocalBus) Rooms() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.rooms)
}

func peerIDs(ms []protocol.Member) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.Peer
	}
	return ids
}

// others is members without self.
func others(members []protocol.Member, self string) []protocol.Member {
	return slices.DeleteFunc(members, func(m protocol.Member) bool { return m.Peer == self })
}
