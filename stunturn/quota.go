package stunturn

import (
	"net"
	"sync"

	"github.com/icebox-rtc/icebox/credentials"
)

// quotas counts allocations per credential user for turn.user_quota.
type quotas struct {
	mu    sync.Mutex
	limit int // 0: unlimited
	n     map[string]int
}

// setLimit changes turn.user_quota: users above a lowered limit keep what they hold and get
// no more.
func (q *quotas) setLimit(limit int) {
	q.mu.Lock()
	q.limit = limit
	q.mu.Unlock()
}

func (q *quotas) reserve(user string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.limit > 0 && q.n[user] >= q.limit {
		return false
	}
	q.n[user]++
	return true
}

func (q *quotas) take(user string) {
	q.mu.Lock()
	q.n[user]++
	q.mu.Unlock()
}

func (q *quotas) release(user string) {
	q.mu.Lock()
	if q.n[user]--; q.n[user] <= 0 {
		delete(q.n, user)
	}
	q.mu.Unlock()
}

// quotaHandler is pion's QuotaHandler: it reserves a turn.user_quota slot for the Allocate.
func (t *listener) quotaHandler(username, _ string, src net.Addr) bool {
	user := credentials.QuotaUser(username)
	if !t.s.quota.reserve(user) {
		t.s.metrics.allocateRefused.WithLabelValues(refusedUserQuota).Inc()
		return false
	}
	t.mu.Lock()
	if r := t.pending[src.String()]; r != nil && r.username == username {
		r.quotaUser = user
		t.mu.Unlock()
		return true
	}
	t.mu.Unlock()
	t.s.quota.release(user) // nothing to hang the slot on; onAllocationCreated counts it
	return true
}
