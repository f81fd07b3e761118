package stunturn

import "sync"

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
