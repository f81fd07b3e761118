package httpapi

import (
	"log/slog"
	"sync"
	"time"
)

// RefusalInterval is how often a RefusalLog logs each reason at most.
const RefusalInterval = 10 * time.Second

// RefusalLog logs refused requests that an operator wants to see, a forbidden origin or a
// rejected token (a misconfigured app, or someone probing), at most once per RefusalInterval
// per reason, with how many it left out meanwhile: they show up without flooding the log.
type RefusalLog struct {
	log  *slog.Logger
	what string

	mu      sync.Mutex
	last    map[string]time.Time // guarded by mu: when each reason was last logged
	skipped map[string]int       // guarded by mu: refusals left out since then
}

// NewRefusalLog logs refusals with the message what (e.g. "signaling: refused").
func NewRefusalLog(log *slog.Logger, what string) *RefusalLog {
	return &RefusalLog{log: log, what: what, last: map[string]time.Time{}, skipped: map[string]int{}}
}

// Refused records a refusal with the error code and the message the client got; only the
// codes forbidden and unauthorized are logged.
func (l *RefusalLog) Refused(now time.Time, code, message string) {
	if code != CodeForbidden && code != CodeUnauthorized {
		return
	}
	l.mu.Lock()
	if last, ok := l.last[code]; ok && now.Sub(last) < RefusalInterval {
		l.skipped[code]++
		l.mu.Unlock()
		return
	}
	skipped := l.skipped[code]
	l.last[code] = now
	l.skipped[code] = 0
	l.mu.Unlock()
	l.log.Warn(l.what, "reason", code, "message", message, "not_logged_before", skipped)
}
