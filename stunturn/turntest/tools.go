package turntest

import (
	"os"
	"os/exec"
	"testing"
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
