package edge_test

import (
	"slices"
	"testing"

	"github.com/icebox-rtc/icebox/edge"
)

// TestMetricsInitialised: before any connection, icebox_edge_connections_total has a series at
// 0 for every outcome, so that dashboards show 0 rather than nothing.
func TestMetricsInitialised(t *testing.T) {
	f := startEdge(t, edge.Options{})
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, fam := range families {
		if fam.GetName() != "icebox_edge_connections_total" {
			continue
		}
		for _, m := range fam.GetMetric() {
			outcome := m.GetLabel()[0].GetValue()
			got = append(got, outcome)
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("outcome %s: got %v before any connection, want 0", outcome, v)
			}
		}
	}
	want := []string{"turn_tcp", "turn_tls", "https", "http", "acme_tls_alpn", "unrecognized", "timeout", "closed",
		"tls_failed", "evicted", "shutdown"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("outcomes: got %q, want %q", got, want)
	}
}
