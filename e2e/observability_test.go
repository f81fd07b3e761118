package e2e

import (
	"os/exec"
	"testing"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// TestAlertRules: deploy/prometheus/icebox.rules.yml is valid Prometheus (promtool check) and
// each alert fires when it should and not otherwise (promtool test, on series written for it).
func TestAlertRules(t *testing.T) {
	promtool := turntest.RequireTools(t, "promtool")[0]
	for _, args := range [][]string{
		{"check", "rules", "icebox.rules.yml"},
		{"test", "rules", "icebox.rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../deploy/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
