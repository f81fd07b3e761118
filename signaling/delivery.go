package signaling

import (
	"sync"
	"time"
)

// delivery routes the frames that reach this node to the peers they are for: the peers
// attached here, and those on their way in (joining a room, moving here from another node) or
// out (moved away). It decides, under its own lock, where each frame goes; it never waits on
// the network (passing a frame on to another node is the outbox's job).
type delivery struct {
	clock Clock

	mu       sync.Mutex
	attached map[string]func([]byte)
	// gates hold the frames for a peer whose join is under way, until its joined reply is
	// out: joined comes before anything else about the room.
	gates map[string][][]byte
	// held are the frames for a peer being handed to this node, until Attach.
	held map[string][][]byte
	// fences hold the frames that reach a peer moving here directly (not passed on by its
	// old node) until the old node says it passed on its last one, so that a sender's frames
	// stay in order across the move.
	fences map[string][][]byte
	// forward lists the peers handed to another node recently: their frames go on there.
	forward map[string]forwarding
}

type forwarding struct {
	node  string
	until time.Time
}

// forwardFor is how long a node passes on frames for a peer it handed to another node.
const forwardFor = 30 * time.Second

func newDelivery(clock Clock) *delivery {
	return &delivery{clock: clock, attached: map[string]func([]byte){}, gates: map[string][][]byte{},
		held: map[string][][]byte{}, fences: map[string][][]byte{}, forward: map[string]forwarding{}}
}

// route delivers f to peer if it lives on this node (or is on its way here), and otherwise
// names the node it moved to, if it moved recently ("": nowhere); forwarded says the peer's
// old node passed f on.
func (d *delivery) route(peer string, f []byte, forwarded bool) (onward string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.local(peer, f, forwarded) {
		return ""
	}
	if fw, ok := d.forward[peer]; ok && d.clock.Now().Before(fw.until) {
		return fw.node
	}
	return ""
}

// deliver delivers f to peer if it is here or on its way here (a frame sent on this node).
func (d *delivery) deliver(peer string, f []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.local(peer, f, false)
}

// local delivers f to peer if it is here or on its way here; d.mu is held.
func (d *delivery) local(peer string, f []byte, forwarded bool) bool {
	if q, ok := d.fences[peer]; ok && !forwarded {
		d.fences[peer] = append(q, f)
		return true
	}
	if fn := d.attached[peer]; fn != nil {
		if q, ok := d.gates[peer]; ok {
			d.gates[peer] = append(q, f)
			return true
		}
		fn(f)
		return true
	}
	if q, ok := d.held[peer]; ok {
		d.held[peer] = append(q, f)
		return true
	}
	return false
}

// attach routes peer's frames to fn; what was held for it during a handover goes first.
func (d *delivery) attach(peer string, fn func([]byte)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.held[peer] {
		fn(f)
	}
	delete(d.held, peer)
	d.attached[peer] = fn
}

// detach stops routing to peer. A fence that has not settled yet hands what it kept to the
// session first (which takes it along if it moves on), ahead of anything the first node still
// passes on.
func (d *delivery) detach(peer string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn := d.attached[peer]
	if q, ok := d.fences[peer]; ok {
		delete(d.fences, peer)
		for _, f := range q {
			if fn != nil {
				fn(f)
			}
		}
	}
	if q, ok := d.gates[peer]; ok && fn != nil {
		for _, f := range q {
			fn(f)
		}
	}
	delete(d.gates, peer)
	delete(d.attached, peer)
	delete(d.held, peer)
}

// gate holds peer's frames from now until ungate; ungate delivers them.
func (d *delivery) gate(peer string) {
	d.mu.Lock()
	if _, ok := d.gates[peer]; !ok {
		d.gates[peer] = nil
	}
	d.mu.Unlock()
}

func (d *delivery) ungate(peer string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q, ok := d.gates[peer]
	if !ok {
		return
	}
	delete(d.gates, peer)
	if fn := d.attached[peer]; fn != nil {
		for _, f := range q {
			fn(f)
		}
	}
}

// hold starts keeping the frames for peer (its session is being handed here) until attach,
// and fences the direct ones until release.
func (d *delivery) hold(peer string) {
	d.mu.Lock()
	if _, ok := d.held[peer]; !ok {
		d.held[peer] = [][]byte{}
	}
	if _, ok := d.fences[peer]; !ok {
		d.fences[peer] = nil
	}
	d.mu.Unlock()
}

// unhold forgets a peer whose handover failed, and what was kept for it.
func (d *delivery) unhold(peer string) {
	d.mu.Lock()
	delete(d.held, peer)
	delete(d.fences, peer)
	d.mu.Unlock()
}

// fenced reports whether peer's fence is up.
func (d *delivery) fenced(peer string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.fences[peer]
	return ok
}

// release ends peer's fence: what it kept is delivered, in order, after what the old node
// passed on. It reports whether there was a fence.
func (d *delivery) release(peer string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	q, ok := d.fences[peer]
	if !ok {
		return false
	}
	delete(d.fences, peer)
	for _, f := range q {
		d.local(peer, f, true)
	}
	return true
}

// forwardTo passes peer's frames on to node from now (once it is detached), and returns the
// entry it replaced, for undo.
func (d *delivery) forwardTo(peer, node string) (prev forwarding, had bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock.Now()
	for p, fw := range d.forward {
		if now.After(fw.until) {
			delete(d.forward, p)
		}
	}
	prev, had = d.forward[peer]
	d.forward[peer] = forwarding{node: node, until: now.Add(forwardFor)}
	return prev, had
}

// undoForward puts back what forwardTo replaced (the handover did not happen).
func (d *delivery) undoForward(peer string, prev forwarding, had bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if had {
		d.forward[peer] = prev
	} else {
		delete(d.forward, peer)
	}
}
