package credentials_test

import (
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/httpapi"
)

// TestMetricsInitialised: before any request, icebox_credentials_issued_total has a series at
// 0 for every endpoint and icebox_credentials_refused_total for every reason a refusal can
// have, so that dashboards show 0 rather than nothing.
func TestMetricsInitialised(t *testing.T) {
	reg := prometheus.NewRegistry()
	credentials.NewService(credentials.ServiceOptions{
		Secrets: credentials.NewSecrets([]string{"secret"}), TTL: time.Hour,
		Auth: credentials.NewAuthenticator(credentials.DefaultAuthConfig()), Limiter: httpapi.NewRateLimiter(0),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: reg,
	})
	want := map[string][]string{
		"icebox_credentials_issued_total": {"ice-config", "turn-credentials", "ws"},
		"icebox_credentials_refused_total": {"bad-request", "unauthorized", "forbidden", "method-not-allowed",
			"rate-limited", "unavailable", "internal"},
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				got[f.GetName()] = append(got[f.GetName()], l.GetValue())
				if v := m.GetCounter().GetValue(); v != 0 {
					t.Errorf("%s{%s=%q}: got %v before any request, want 0", f.GetName(), l.GetName(), l.GetValue(), v)
				}
			}
		}
	}
	for name, values := range want {
		slices.Sort(values)
		slices.Sort(got[name])
		if !slices.Equal(got[name], values) {
			t.Errorf("%s: got series %v before any request, want %v", name, got[name], values)
		}
	}
}
