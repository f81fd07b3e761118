package stunturn

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// fileBudget keeps TURN from taking the file descriptors the rest of icebox needs. Go raises
// the soft RLIMIT_NOFILE to the hard limit at start; of that limit a quarter (at least 64) is
// left to HTTP, WebSocket signaling, health checks, logs and Redis, and TURN's own descriptors
// (TCP and TLS connections, relay sockets) share the rest. Connections get at most half of
// TURN's share, so a flood of idle connections still leaves room for UDP allocations, and a
// connection is refused (closed at once) before it would eat into the reserve.
type fileBudget struct {
	limit, turn, streamMax int64
	streams, relays        atomic.Int64
}

// newFileBudget sizes the budget for limit descriptors; 0 reads the process's RLIMIT_NOFILE.
func newFileBudget(limit int) *fileBudget {
	l := int64(limit)
	if l <= 0 {
		l = math.MaxInt32
		var r unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err == nil && r.Cur < uint64(l) {
			l = int64(r.Cur)
		}
	}
	reserve := max(l/4, 64)
	turn := max(l-reserve, 2)
	return &fileBudget{limit: l, turn: turn, streamMax: turn / 2}
}

// openStream takes a descriptor for an accepted TURN TCP or TLS connection, if the budget allows.
func (b *fileBudget) openStream() bool {
	if n := b.streams.Add(1); n > b.streamMax || n+b.relays.Load() > b.turn {
		b.streams.Add(-1)
		return false
	}
	return true
}

func (b *fileBudget) closeStream() { b.streams.Add(-1) }

// openRelay takes a descriptor for a relay socket, if the budget allows.
func (b *fileBudget) openRelay() bool {
	if n := b.relays.Add(1); n+b.streams.Load() > b.turn {
		b.relays.Add(-1)
		return false
	}
	return true
}

func (b *fileBudget) closeRelay() { b.relays.Add(-1) }

// logEvery lets a repeated event through to the log at most once per interval, counting the
// ones it held back, so a flood is visible without a line per packet or connection.
type logEvery struct {
	interval time.Duration
	mu       sync.Mutex
	last     time.Time
	held     int
}

// allow reports whether to log now, and how many events were held back since the last line.
func (e *logEvery) allow(now time.Time) (ok bool, held int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.last.IsZero() && now.Sub(e.last) < e.interval {
		e.held++
		return false, 0
	}
	held, e.held, e.last = e.held, 0, now
	return true, held
}
