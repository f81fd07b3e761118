package signaling

import (
	"context"
	"sync"
	"time"
)

// records are the resume tokens of this node's sessions, as the broker holds them (so any
// node can find a session by its token) and as this node keeps them, so that a resync puts
// them back when the broker lost them (Redis restarted empty).
type records struct {
	node     string
	clock    Clock
	presence time.Duration

	mu    sync.Mutex
	local map[string]record
	// forgotten are tokens forgotten while the broker was unreachable: a resync deletes them.
	forgotten map[string]struct{}
}

type record struct {
	sessionRec
	dropped time.Time     // zero while connected
	grace   time.Duration // after dropped
}

// sessionTTL bounds the life of a resume token's record while its session is connected
// (a node that dies leaves its records behind).
const sessionTTL = 24 * time.Hour

func newRecords(node string, clock Clock, presence time.Duration) *records {
	return &records{node: node, clock: clock, presence: presence, local: map[string]record{}, forgotten: map[string]struct{}{}}
}

// ttl is how long the broker keeps r: a dropped session's token outlives its grace by a
// presence timeout, so that a node that died meanwhile can still be taken over.
func (rs *records) ttl(r record, now time.Time) time.Duration {
	if r.dropped.IsZero() {
		return sessionTTL
	}
	return r.dropped.Add(r.grace + rs.presence + time.Second).Sub(now)
}

func (rs *records) register(token, peer, user string) (sessionRec, time.Duration) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := record{sessionRec: sessionRec{node: rs.node, peer: peer, user: user}}
	rs.local[token] = r
	delete(rs.forgotten, token)
	return r.sessionRec, sessionTTL
}

// forget drops token; unreachable says the broker could not be told.
func (rs *records) forget(token string, unreachable bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	delete(rs.local, token)
	if unreachable {
		rs.forgotten[token] = struct{}{}
	}
}

func (rs *records) dropped(token string, grace time.Duration) (time.Duration, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, ok := rs.local[token]
	if !ok {
		return 0, false
	}
	r.dropped, r.grace = rs.clock.Now(), grace
	rs.local[token] = r
	return rs.ttl(r, r.dropped), true
}

// resync puts every record of this node back into the broker and deletes the forgotten ones.
func (rs *records) resync(ctx context.Context, br broker) error {
	rs.mu.Lock()
	now := rs.clock.Now()
	type put struct {
		token string
		rec   sessionRec
		ttl   time.Duration
	}
	var puts []put
	for t, r := range rs.local {
		if ttl := rs.ttl(r, now); ttl > 0 {
			puts = append(puts, put{t, r.sessionRec, ttl})
		}
	}
	var dels []string
	for t := range rs.forgotten {
		dels = append(dels, t)
	}
	rs.mu.Unlock()
	for _, p := range puts {
		if err := br.setSession(ctx, p.token, p.rec, p.ttl); err != nil {
			return err
		}
	}
	for _, t := range dels {
		if err := br.delSession(ctx, t); err != nil {
			return err
		}
		rs.mu.Lock()
		delete(rs.forgotten, t)
		rs.mu.Unlock()
	}
	return nil
}
