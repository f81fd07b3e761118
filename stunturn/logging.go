package stunturn

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/pion/logging"
	"golang.org/x/time/rate"
)

// LevelTrace is below slog.LevelDebug: pion's Trace lines show only when asked for explicitly.
const LevelTrace = slog.LevelDebug - 4

// NewLoggerFactory adapts log into pion's logging.LoggerFactory, so pion/turn (and pion/webrtc in
// tests) log through icebox's slog handler with a "scope" attribute. pion logs some failures per
// packet (even at error level), so lines are throttled: beyond a burst, at most perSecond lines
// a second go through and the number dropped is reported with the next line that does.
func NewLoggerFactory(log *slog.Logger, perSecond float64, burst int) logging.LoggerFactory {
	return &loggerFactory{log: log, limit: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

type loggerFactory struct {
	log        *slog.Logger
	limit      *rate.Limiter
	suppressed atomic.Int64
}

func (f *loggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{f: f, log: f.log.With("scope", scope)}
}

type pionLogger struct {
	f   *loggerFactory
	log *slog.Logger
}

func (l *pionLogger) emit(level slog.Level, msg string) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	if !l.f.limit.Allow() {
		l.f.suppressed.Add(1)
		return
	}
	if n := l.f.suppressed.Swap(0); n > 0 {
		l.log.Log(ctx, level, msg, "suppressed_before", n)
		return
	}
	l.log.Log(ctx, level, msg)
}

// routine are pion's messages about what happens all the time on a public relay, logged at debug
// whatever level pion gives them: a datagram from a peer the client gave no permission to
// (stray traffic, or a peer answering after its permission expired).
var routine = []string{"No Permission or Channel exists"}

func (l *pionLogger) emitf(level slog.Level, format string, args ...any) {
	for _, r := range routine {
		if strings.HasPrefix(format, r) {
			level = min(level, slog.LevelDebug)
		}
	}
	if !l.log.Enabled(context.Background(), level) {
		return // don't format what nobody reads
	}
	l.emit(level, fmt.Sprintf(format, args...))
}

func (l *pionLogger) Trace(msg string)                  { l.emit(LevelTrace, msg) }
func (l *pionLogger) Tracef(format string, args ...any) { l.emitf(LevelTrace, format, args...) }
func (l *pionLogger) Debug(msg string)                  { l.emit(slog.LevelDebug, msg) }
func (l *pionLogger) Debugf(format string, args ...any) { l.emitf(slog.LevelDebug, format, args...) }
func (l *pionLogger) Info(msg string)                   { l.emit(slog.LevelInfo, msg) }
func (l *pionLogger) Infof(format string, args ...any)  { l.emitf(slog.LevelInfo, format, args...) }
func (l *pionLogger) Warn(msg string)                   { l.emit(slog.LevelWarn, msg) }
func (l *pionLogger) Warnf(format string, args ...any)  { l.emitf(slog.LevelWarn, format, args...) }
func (l *pionLogger) Error(msg string)                  { l.emit(slog.LevelError, msg) }
func (l *pionLogger) Errorf(format string, args ...any) { l.emitf(slog.LevelError, format, args...) }
