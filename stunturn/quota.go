package stunturn

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/httpapi"
)

// quotas counts allocations per credential user for turn.user_quota, or per client address
// when credentials name no one (byClient).
type quotas struct {
	byClient atomic.Bool
	mu       sync.Mutex
	limit    int // 0: unlimited
	n        map[string]int
}

// key is who an Allocate of username from src counts against: the credential's user, or with
// byClient the client (an IPv4 address, an IPv6 /64), so that fresh identities from one
// address share one quota.
func (q *quotas) key(username string, src net.Addr) string {
	if q.byClient.Load() {
		if ap, ok := addrPort(src); ok {
			return "client " + httpapi.ClientOf(ap.Addr()).String()
		}
	}
	return credentials.QuotaUser(username)
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
	user := t.s.quota.key(username, src)
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
