package signaling

import (
	"context"
	"encoding/json"
	"github.com/icebox-rtc/icebox/signaling/protocol"
	"slices"
	"sync"
)

// Bus is membership and delivery: which peers are in which room, and getting a frame to a peer.
// The Hub speaks the protocol and holds the connections of this node; the Bus is what nodes
// would share. LocalBus keeps everything in this process; a Redis-backed Bus shares rooms
// between the nodes on one Redis.
type Bus interface {
	// Join adds m to room unless the room already holds max peers (ErrRoomFull), and returns
	// the members that were there before, in the order they joined.
	Join(ctx context.Context, room string, m protocol.Member, max int) ([]protocol.Member, error)
	// Leave removes peer from room; leaving a room one is not in does nothing. When it fails,
	// the Bus finishes it later and tells the room then (through the gone func of a
	// sessionStore).
	Leave(ctx context.Context, room, peer string) error
	// Members lists room in join order.
	Members(ctx context.Context, room string) ([]protocol.Member, error)
	// Contains reports whether peer is in room (every signal asks).
	Contains(ctx context.Context, room, peer string) (bool, error)
	// Send delivers frame to each of peers of room, through the deliver func they were
	// attached with (on whichever node). Frames from one caller arrive in the order it sent
	// them. Unknown peers are skipped.
	Send(ctx context.Context, room string, peers []string, frame []byte) error
	// Attach routes frames for peer to deliver, until Detach.
	Attach(peer string, deliver func(frame []byte))
	// Detach stops routing frames to peer.
	Detach(peer string)
	// Rooms is the number of rooms with members on this node (a metric).
	Rooms() int
}

// sessionStore is what a Bus shared between nodes adds, so that a client can resume its
// session on another node than the one it was connected to: the resume tokens are known to
// every node, and the node holding a session hands it (with its mailbox) to the node the
// client reconnected to.
type sessionStore interface {
	// bind gives the store the hub's ways to give a session away (another node asks for
	// it) and to tell a room that a peer of a dead node is gone.
	bind(give func(token, user string) (*handover, bool), gone func(room, peer string))
	// register records that token resumes peer's session (of user) on this node.
	register(token, peer, user string)
	// forget removes token: it was used, or its session ended.
	forget(token string)
	// dropped starts the countdown of token: its connection dropped, the session waits for a
	// resume.
	dropped(token string)
	// take gets the session token names from the node holding it. Frames for its peer that
	// reach this node meanwhile are held until the hub attaches the peer. (nil, nil): no
	// node has it.
	take(ctx context.Context, token, user string) (*handover, error)
	// moved records that peer's session now lives here (after take), and releases the hold.
	moved(ctx context.Context, h *handover)
}

// handover is a session on its way from one node to another.
type handover struct {
	Peer    string          `json:"peer"`
	Room    string          `json:"room,omitempty"`
	Meta    json.RawMessage `json:"meta,omitempty"`
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

// LocalBus is the in-process Bus: rooms and delivery within one icebox.
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
func (b *LocalBus) Join(_ context.Context, room string, m protocol.Member, max int) ([]protocol.Member, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	members := b.rooms[room]
	if len(members) >= max {
		return nil, ErrRoomFull
	}
	others := slices.Clone(members)
	b.rooms[room] = append(members, m)
	if others == nil {
		others = []protocol.Member{}
	}
	return others, nil
}

// Leave implements Bus.
func (b *LocalBus) Leave(_ context.Context, room, peer string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	members := slices.DeleteFunc(b.rooms[room], func(m protocol.Member) bool { return m.Peer == peer })
	if len(members) == 0 {
		delete(b.rooms, room)
	} else {
		b.rooms[room] = members
	}
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
	for _, p := range peers {
		if d := b.deliver[p]; d != nil {
			d(frame)
		}
	}
	return nil
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
