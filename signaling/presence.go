package signaling

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// presence keeps this node known to the others and the broker in sync with this node: it
// beats the heartbeat, notices the broker going and coming back (and then puts back what this
// node holds: its rooms' members, its resume tokens), tells rooms about peers that left
// during an outage, and removes the peers of dead nodes. It logs the broker's state changes
// and at most one summary of failed operations every outageSummaryEvery; the metrics carry
// the counts.
type presence struct {
	b *NodeBus

	up      atomic.Bool
	upSince atomic.Int64 // clock's unix nanoseconds of the last recovery (or the start)

	mu       sync.Mutex
	downAt   time.Time
	failures map[string]int // failed operations by op, since the last summary
	lastLog  time.Time
}

// DefaultPresenceTimeout is how long a node may go without a heartbeat before its peers
// count as disconnected.
const DefaultPresenceTimeout = 10 * time.Second

// outageSummaryEvery is the most often failed operations are logged (as one summary).
const outageSummaryEvery = 30 * time.Second

func newPresence(b *NodeBus) *presence {
	p := &presence{b: b, failures: map[string]int{}}
	p.up.Store(true)
	p.upSince.Store(b.clock.Now().UnixNano())
	return p
}

func (p *presence) heartbeat(ctx context.Context) error {
	return p.b.br.heartbeat(ctx, p.b.node)
}

// failure counts a failed operation for the next summary.
func (p *presence) failure(op string) {
	p.mu.Lock()
	p.failures[op]++
	p.mu.Unlock()
}

// summary logs the failed operations since the last summary, at most every
// outageSummaryEvery.
func (p *presence) summary(now time.Time) {
	p.mu.Lock()
	if len(p.failures) == 0 || now.Sub(p.lastLog) < outageSummaryEvery {
		p.mu.Unlock()
		return
	}
	counts := p.failures
	p.failures, p.lastLog = map[string]int{}, now
	down := !p.up.Load()
	p.mu.Unlock()
	attrs := []any{"since", outageSummaryEvery}
	for _, op := range slices.Sorted(maps.Keys(counts)) {
		attrs = append(attrs, slog.Int(op, counts[op]))
	}
	if down {
		p.b.log.Warn("signaling: redis still unreachable; operations failed", attrs...)
	} else {
		p.b.log.Warn("signaling: redis operations failed", attrs...)
	}
}

// tick is one round of the watch, every PresenceTimeout/3.
func (p *presence) tick() {
	b := p.b
	ctx, cancel := context.WithTimeout(b.ctx, b.presence/3)
	defer cancel()
	now := b.clock.Now()
	err := p.heartbeat(ctx)
	switch {
	case err != nil && p.up.Load():
		p.mu.Lock()
		p.up.Store(false)
		p.downAt, p.lastLog = now, now
		p.mu.Unlock()
		b.metrics.errors.WithLabelValues("heartbeat").Inc()
		b.log.Error("signaling: redis lost", "err", err,
			"effect", "joins and messages to other nodes get unavailable until it is back; connected clients stay")
	case err != nil:
		_ = b.failed("heartbeat", err)
	case !p.up.Load():
		if err := p.resync(ctx); err != nil {
			_ = b.failed("resync", err)
			break // next tick
		}
		if !p.probe(ctx) {
			break // the subscription is not back yet
		}
		p.mu.Lock()
		counts, down := p.failures, now.Sub(p.downAt)
		p.failures, p.lastLog = map[string]int{}, now
		p.upSince.Store(now.UnixNano())
		p.up.Store(true)
		p.mu.Unlock()
		failed := 0
		for _, n := range counts {
			failed += n
		}
		b.log.Info("signaling: redis is back", "down", down.Round(time.Second), "failed_operations", failed,
			"effect", "this node's rooms, peers and resume tokens are put back")
	default:
		p.refresh(ctx)
		// Only a node that has been up for a whole presence timeout judges the others, or
		// tells rooms who left during an outage: after an outage, every live node has beaten
		// and put its members back by then.
		if now.Sub(time.Unix(0, p.upSince.Load())) < b.presence {
			break
		}
		if b.view.hasDeparted() {
			p.tellDeparted(ctx)
		}
		p.reap(ctx)
	}
	p.summary(now)
}

// refresh rereads the membership of every room with peers here, so that what Members answers
// during an outage is at most a heartbeat old.
func (p *presence) refresh(ctx context.Context) {
	b := p.b
	for _, room := range b.view.localRooms() {
		ms, err := b.br.members(ctx, room)
		if err != nil {
			_ = b.failed("members", err)
			return
		}
		b.view.read(room, membersOf(ms))
	}
}

// probe publishes to this node's own channel and waits for it to come back: the subscription
// is back after an outage.
func (p *presence) probe(ctx context.Context) bool {
	hs := p.b.hand
	id, got, done := hs.await()
	defer done()
	if err := p.b.br.publish(ctx, p.b.node, []byte(string(kindProbe)+id)); err != nil {
		return false
	}
	select {
	case <-got:
		return true
	case <-ctx.Done():
		return false
	}
}

// resync makes the broker hold what this node holds again, after an outage (Redis may have
// restarted empty): its peers in their rooms, and its sessions' resume tokens. Memberships
// the broker has of this node that it no longer holds become departures, told later.
func (p *presence) resync(ctx context.Context) error {
	b := p.b
	entries, err := b.br.nodePeers(ctx, b.node)
	if err != nil {
		return err
	}
	mine := b.view.mine()
	for _, rp := range entries {
		if _, ok := mine[rp]; !ok {
			b.view.depart(rp)
		}
	}
	for rp, meta := range mine {
		in, err := b.br.contains(ctx, rp.room, rp.peer)
		if err != nil {
			return err
		}
		if !in {
			if err := b.br.restore(ctx, b.node, rp.room, protocol.Member{Peer: rp.peer, Meta: meta}); err != nil {
				return err
			}
		}
	}
	return b.recs.resync(ctx, b.br)
}

// tellDeparted removes the memberships that ended while the broker could not learn it, and
// tells their rooms (peer-left "disconnected") what they were not told yet: the members on
// other nodes through the broker's leave, this node's members here, if they knew of the join.
// One the broker lost (a restart) while its leave never reached it is put back first, so that
// the leave reaches every member as one step.
func (p *presence) tellDeparted(ctx context.Context) {
	b := p.b
	for rp, d := range b.view.takeDeparted() {
		in, err := b.br.contains(ctx, rp.room, rp.peer)
		if err == nil && !in && !d.ran && d.meta != nil {
			err = b.br.restore(ctx, b.node, rp.room, protocol.Member{Peer: rp.peer, Meta: d.meta})
			in = err == nil
		}
		var rest []memberRec
		if err == nil && in {
			rest, _, err = b.br.leave(ctx, b.node, rp.room, rp.peer, protocol.ReasonDisconnected, "", b.op())
		}
		if err != nil {
			_ = b.failed("leave", err)
			b.view.departAgain(rp, d) // again next time
			continue
		}
		if !d.told {
			continue
		}
		if !in { // the leave reached the broker before: its members are this node's to tell
			ms, err := b.br.members(ctx, rp.room)
			if err != nil {
				_ = b.failed("members", err)
				b.view.departAgain(rp, d)
				continue
			}
			rest = ms
		}
		b.tellLocal(rest, peerLeftFrame(rp.room, rp.peer, protocol.ReasonDisconnected))
	}
}

// reap removes the peers of nodes silent for the presence timeout plus resume_grace (their
// clients had that long to resume elsewhere) and tells their rooms.
func (p *presence) reap(ctx context.Context) {
	b := p.b
	dead, err := b.br.deadNodes(ctx, b.presence+b.grace)
	if err != nil {
		_ = b.failed("reap", err)
		return
	}
	for _, n := range dead {
		if n == b.node {
			continue
		}
		entries, err := b.br.nodePeers(ctx, n)
		if err != nil {
			_ = b.failed("reap", err)
			return
		}
		for _, rp := range entries {
			rest, left, err := b.br.leave(ctx, b.node, rp.room, rp.peer, protocol.ReasonDisconnected, n, b.op())
			if err != nil {
				_ = b.failed("reap", err)
				return
			}
			if left {
				b.log.Info("signaling: peer of a dead node removed", "room", rp.room, "dead_node", n)
				b.tellLocal(rest, peerLeftFrame(rp.room, rp.peer, protocol.ReasonDisconnected))
			}
		}
		if err := b.br.forgetNode(ctx, n); err != nil {
			_ = b.failed("reap", err)
		}
	}
}
