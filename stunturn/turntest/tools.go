package turntest

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// SkipOrFail skips a test whose tool or resource is missing on this machine, but fails it in
// CI (CI=true), where make test installs everything.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// RequireTools returns the paths of programs the test runs, or skips (fails in CI) when one is
// missing. make test installs them.
func RequireTools(t testing.TB, names ...string) []string {
	t.Helper()
	paths := make([]string, len(names))
	for i, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			SkipOrFail(t, "%s is not installed (make test installs it): %v", n, err)
		}
		paths[i] = p
	}
	return paths
}

// Uclient runs coturn's turnutils_uclient (at path) with args and fails the test unless every
// message it sent came back through the relay (its -c -X report: sent, received, lost).
func Uclient(t testing.TB, path string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput() //nolint:gosec // the test's own tool
	if err != nil {
		t.Fatalf("turnutils_uclient %v: %v\n%s", args, err, out)
	}
	sent := regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n`).FindSubmatch(out)
	lost := regexp.MustCompile(`Total lost packets (\d+) \(`).FindSubmatch(out)
	if sent == nil || lost == nil {
		t.Fatalf("cannot read the uclient report:\n%s", out)
	}
	if string(sent[1]) == "0" || string(sent[1]) != string(sent[2]) || string(lost[1]) != "0" {
		t.Errorf("sent %s, received %s, lost %s; want every message back:\n%s", sent[1], sent[2], lost[1], out)
	}
}
