package signaling

import (
	"encoding/json"
	"slices"
	"sync"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// view is what this node knows of rooms, learnt from the bus's own events (its joins and
// leaves, the join and leave events of other nodes, its reads of the broker), never from the
// frames it delivers: which of its peers are in which room (what a resync puts back), the
// last known membership of those rooms (what Members answers while the broker is
// unreachable), and the leaves that could not reach the broker.
type view struct {
	mu    sync.Mutex
	local map[string]map[string]json.RawMessage // room -> this node's peers -> meta
	seen  map[string][]protocol.Member          // rooms with peers here -> members
	// departed are memberships of this node that the broker may still hold though this node
	// no longer does (a leave that failed, a join whose outcome is unknown): once the broker
	// is back, they are removed and their rooms told.
	departed map[roomPeer]departure
}

// departure is a membership to remove once the broker is back.
type departure struct {
	meta json.RawMessage // nil: not known
	// told says this node's members were told of the join (so they get the peer-left here);
	// ran says the failed step may have reached the broker (and told the other nodes).
	told, ran bool
}

func newView() *view {
	return &view{local: map[string]map[string]json.RawMessage{}, seen: map[string][]protocol.Member{},
		departed: map[roomPeer]departure{}}
}

// joined records m's join of room here, with the members before.
func (v *view) joined(room string, m protocol.Member, before []protocol.Member) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.local[room] == nil {
		v.local[room] = map[string]json.RawMessage{}
	}
	v.local[room][m.Peer] = m.Meta
	v.seen[room] = append(slices.Clone(before), m)
	delete(v.departed, roomPeer{room, m.Peer})
}

// left records that peer of this node left room; failed says the broker may not have learnt
// it, and ran that it may have (the call failed on the way, not before it).
func (v *view) left(room, peer string, failed, ran bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	meta, here := v.local[room][peer]
	v.dropLocal(room, peer)
	v.remove(room, peer)
	if failed && here {
		v.departed[roomPeer{room, peer}] = departure{meta: meta, told: true, ran: ran}
	}
}

// joinFailed records a join of peer whose outcome is unknown: the broker may hold it and
// have told the other nodes, while this node told its own members nothing.
func (v *view) joinFailed(room, peer string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, known := v.departed[roomPeer{room, peer}]; !known {
		v.departed[roomPeer{room, peer}] = departure{ran: true}
	}
}

// dropLocal forgets peer of room as this node's; v.mu is held.
func (v *view) dropLocal(room, peer string) {
	ps := v.local[room]
	if ps == nil {
		return
	}
	delete(ps, peer)
	if len(ps) == 0 {
		delete(v.local, room)
		delete(v.seen, room)
	}
}

// remove takes peer out of the known membership of room; v.mu is held.
func (v *view) remove(room, peer string) {
	if seen, ok := v.seen[room]; ok {
		v.seen[room] = slices.DeleteFunc(seen, func(m protocol.Member) bool { return m.Peer == peer })
	}
}

// event records another node's join (m set) or leave of room.
func (v *view) event(room string, peer string, m *protocol.Member) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.seen[room]; !ok {
		return
	}
	v.remove(room, peer)
	if m != nil {
		v.seen[room] = append(v.seen[room], *m)
	}
}

// read records a membership read from the broker, for a room with peers here.
func (v *view) read(room string, ms []protocol.Member) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.local[room]; ok {
		v.seen[room] = slices.Clone(ms)
	}
}

// members is the last known membership of room, if it has peers here.
func (v *view) members(room string) ([]protocol.Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	ms, ok := v.seen[room]
	return slices.Clone(ms), ok
}

// has reports whether peer is this node's member of room.
func (v *view) has(room, peer string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.local[room][peer]
	return ok
}

// arrived records peer's membership of room, moved here from another node, with the room's
// membership as the broker has it.
func (v *view) arrived(room, peer string, meta json.RawMessage, ms []protocol.Member) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.local[room] == nil {
		v.local[room] = map[string]json.RawMessage{}
	}
	v.local[room][peer] = meta
	v.seen[room] = slices.Clone(ms)
}

// movedAway forgets peer as this node's: it lives on another node now, still a member.
func (v *view) movedAway(peer string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for room, ps := range v.local {
		if _, ok := ps[peer]; ok {
			v.dropLocal(room, peer)
		}
	}
}

// localRooms are the rooms with peers here.
func (v *view) localRooms() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	rooms := make([]string, 0, len(v.local))
	for r := range v.local {
		rooms = append(rooms, r)
	}
	return rooms
}

// mine lists this node's memberships with their meta.
func (v *view) mine() map[roomPeer]json.RawMessage {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[roomPeer]json.RawMessage{}
	for room, ps := range v.local {
		for p, meta := range ps {
			out[roomPeer{room, p}] = meta
		}
	}
	return out
}

// depart records a membership of this node the broker holds but this node does not know of
// (a join whose outcome was lost): its members here were never told of it.
func (v *view) depart(rp roomPeer) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.local[rp.room][rp.peer]; !ok {
		if _, known := v.departed[rp]; !known {
			v.departed[rp] = departure{ran: true}
		}
	}
}

// departAgain puts back a departure whose telling failed.
func (v *view) departAgain(rp roomPeer, d departure) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.departed[rp] = d
}

// takeDeparted returns the departed memberships and forgets them.
func (v *view) takeDeparted() map[roomPeer]departure {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.departed
	v.departed = map[roomPeer]departure{}
	return d
}

// hasDeparted reports whether leaves wait for the broker.
func (v *view) hasDeparted() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.departed) > 0
}

// rooms is the number of rooms with peers here.
func (v *view) rooms() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.local)
}
