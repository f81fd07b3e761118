package stunturn

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLoggerFactory(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f := NewLoggerFactory(log, 0, 3) // a burst of 3, no refill: the throttle is deterministic
	l := f.NewLogger("turn")

	l.Debugf("hidden %d", 1) // below the level: neither shown nor counted
	l.Trace("hidden")
	l.Infof("No Permission or Channel exists for %v on allocation %v (hidden: routine, at debug)", "1.2.3.4:5", "x")
	l.Infof("allocation %s", "created")
	l.Warn("careful")
	l.Error("failed")
	for range 5 {
		l.Errorf("per packet failure %d", 7) // beyond the burst: dropped
	}
	out := buf.String()
	for _, want := range []string{
		`level=INFO msg="allocation created" scope=turn`,
		`level=WARN msg=careful scope=turn`,
		`level=ERROR msg=failed scope=turn`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") || strings.Contains(out, "per packet") {
		t.Errorf("log shows lines below the level or beyond the throttle:\n%s", out)
	}
	if got := f.(*loggerFactory).suppressed.Load(); got != 5 {
		t.Errorf("suppressed: got %d, want 5", got)
	}
}

func TestLoggerFactoryReportsSuppressed(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: LevelTrace}))
	f := NewLoggerFactory(log, 1e9, 1).(*loggerFactory) // refills at once
	f.suppressed.Store(4)
	f.NewLogger("allocation").Tracef("trace %s", "line")
	if out := buf.String(); !strings.Contains(out, `msg="trace line" scope=allocation suppressed_before=4`) {
		t.Errorf("got %q, want the trace line with suppressed_before=4", out)
	}
}
