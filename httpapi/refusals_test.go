package httpapi_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/httpapi"
)

// TestRefusalLog: forbidden origins and rejected tokens are logged at most once per 10 s per
// reason, saying how many were left out; other refusals are not logged.
func TestRefusalLog(t *testing.T) {
	var buf bytes.Buffer
	l := httpapi.NewRefusalLog(slog.New(slog.NewTextHandler(&buf, nil)), "test: refused")
	t0 := time.Unix(1_800_000_000, 0)
	l.Refused(t0, httpapi.CodeForbidden, "origin http://evil is not allowed")
	l.Refused(t0.Add(time.Second), httpapi.CodeForbidden, "origin http://evil is not allowed")
	l.Refused(t0.Add(2*time.Second), httpapi.CodeUnauthorized, "missing token")
	l.Refused(t0.Add(3*time.Second), "rate-limited", "slow down")
	l.Refused(t0.Add(9*time.Second), httpapi.CodeForbidden, "origin http://evil is not allowed")
	l.Refused(t0.Add(10*time.Second), httpapi.CodeForbidden, "origin http://other is not allowed")
	got := strings.FieldsFunc(buf.String(), func(r rune) bool { return r == '\n' })
	want := []string{
		"reason=forbidden message=\"origin http://evil is not allowed\" not_logged_before=0",
		"reason=unauthorized message=\"missing token\" not_logged_before=0",
		"reason=forbidden message=\"origin http://other is not allowed\" not_logged_before=2",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) || !strings.Contains(got[i], "test: refused") {
			t.Errorf("line %d: got %q, want it to contain %q", i, got[i], want[i])
		}
	}
}
