package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/icebox-rtc/icebox/signaling/redistest"
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

// TestDashboardMetricsExposed: every metric a query of deploy/grafana/icebox.json or an
// expression of deploy/prometheus/icebox.rules.yml names is on the /metrics of a running
// icebox (with Redis, the edge port and ACME on, so that every subsystem is there), and every
// label value a selector asks for by name (reason="total_quota") is one of its series.
func TestDashboardMetricsExposed(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	n := startIcebox(t, loopback().with(settings{
		"signaling.redis_url": r.URL, "public_host": "icebox.test", "edge.listen": "127.0.0.1:0",
		// Nothing answers at the CA: icebox serves (waiting for its certificate) and its ACME
		// metrics are there all the same.
		"acme.enabled": "true", "acme.email": "ops@icebox.test", "acme.ca": "https://127.0.0.1:1/directory",
		"acme.storage": t.TempDir(),
	}))
	status, body := get(t, &http.Client{Timeout: 10 * time.Second}, n.url+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d", status)
	}
	exposed := parseExposition(body)

	t.Run("dashboard", func(t *testing.T) {
		raw, err := os.ReadFile("../deploy/grafana/icebox.json")
		if err != nil {
			t.Fatal(err)
		}
		var dash any
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Fatalf("icebox.json: %v", err)
		}
		uses := dashboardQueries(dash, "")
		if len(uses) < 20 {
			t.Fatalf("found %d queries in icebox.json: the walk misses its panels", len(uses))
		}
		checkExposed(t, exposed, uses)
	})
	t.Run("rules", func(t *testing.T) {
		raw, err := os.ReadFile("../deploy/prometheus/icebox.rules.yml")
		if err != nil {
			t.Fatal(err)
		}
		var file struct {
			Groups []struct {
				Rules []struct{ Alert, Record, Expr string }
			}
		}
		if err := yaml.Unmarshal(raw, &file); err != nil {
			t.Fatalf("icebox.rules.yml: %v", err)
		}
		var uses []query
		for _, g := range file.Groups {
			for _, rule := range g.Rules {
				uses = append(uses, query{where: "rule " + rule.Alert + rule.Record, expr: rule.Expr})
			}
		}
		if len(uses) == 0 {
			t.Fatal("no rule in icebox.rules.yml")
		}
		checkExposed(t, exposed, uses)
	})
}

// query is a PromQL expression and where it is used (a panel's title, an alert's name).
type query struct{ where, expr string }

// dashboardQueries collects the PromQL of a Grafana dashboard: every panel target's expr and
// every template variable's query, with the title of the panel (or the variable) around it.
func dashboardQueries(v any, where string) []query {
	var out []query
	switch v := v.(type) {
	case map[string]any:
		if title, ok := v["title"].(string); ok {
			where = "panel " + strconv.Quote(title)
		} else if name, ok := v["name"].(string); ok {
			where = "variable " + name
		}
		for k, child := range v {
			if s, ok := child.(string); ok && (k == "expr" || k == "query" || k == "definition") {
				out = append(out, query{where: where, expr: s})
				continue
			}
			out = append(out, dashboardQueries(child, where)...)
		}
	case []any:
		for _, child := range v {
			out = append(out, dashboardQueries(child, where)...)
		}
	}
	return out
}

var (
	// metricName is a metric of icebox in PromQL (histograms with _bucket, _sum, _count).
	metricName = regexp.MustCompile(`\bicebox_[A-Za-z0-9_:]+`)
	// selector is a metric with label matchers; matcher one matcher in them.
	selector = regexp.MustCompile(`\b(icebox_[A-Za-z0-9_:]+)\s*\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"`)
	// plainAlternatives is a regex matcher that only lists values: a|b|c.
	plainAlternatives = regexp.MustCompile(`^[A-Za-z0-9_.\-]+(\|[A-Za-z0-9_.\-]+)*$`)
)

// checkExposed fails for each metric a query names that exposed lacks, and each label value a
// selector names that no series of its metric has (labels Prometheus adds, and template
// variables, aside).
func checkExposed(t *testing.T, exposed map[string][]map[string]string, uses []query) {
	t.Helper()
	reported := map[string]bool{}
	for _, q := range uses {
		for _, name := range metricName.FindAllString(q.expr, -1) {
			if _, ok := exposed[name]; ok || reported[name] {
				continue
			}
			reported[name] = true
			t.Errorf("%s uses %s, which /metrics does not expose", q.where, name)
		}
		for _, sel := range selector.FindAllStringSubmatch(q.expr, -1) {
			series, ok := exposed[sel[1]]
			if !ok {
				continue // reported above
			}
			for _, m := range matcher.FindAllStringSubmatch(sel[2], -1) {
				label, op, value := m[1], m[2], m[3]
				if label == "instance" || label == "job" || strings.Contains(value, "$") {
					continue
				}
				var want []string
				switch {
				case op == "=":
					want = []string{value}
				case op == "=~" && plainAlternatives.MatchString(value):
					want = strings.Split(value, "|")
				}
				for _, w := range want {
					if !slices.ContainsFunc(series, func(s map[string]string) bool { return s[label] == w }) {
						t.Errorf("%s selects %s{%s=%q}: /metrics has no such series", q.where, sel[1], label, w)
					}
				}
			}
		}
	}
}

// sampleLine is a sample of the Prometheus text format: its name and labels.
var (
	sampleLine = regexp.MustCompile(`^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s`)
	labelPair  = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// parseExposition reads the Prometheus text format: each sample's name (a histogram's
// name_bucket, _sum and _count, and the histogram's own name from its TYPE line) with the
// label sets of its series.
func parseExposition(text string) map[string][]map[string]string {
	out := map[string][]map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			if _, ok := out[f[2]]; !ok {
				out[f[2]] = nil
			}
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, p := range labelPair.FindAllStringSubmatch(m[3], -1) {
			labels[p[1]] = p[2]
		}
		out[m[1]] = append(out[m[1]], labels)
	}
	return out
}
