package acme_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/acme"
)

// TestMetricsInitialised: before the manager asks its CA anything, every kind and result of
// icebox_acme_certificates_total and every challenge type of icebox_acme_challenges_total has
// a series at 0, and the expiry gauge says 0 (no certificate), so that dashboards show 0
// rather than nothing.
func TestMetricsInitialised(t *testing.T) {
	reg := prometheus.NewRegistry()
	// Nothing listens on the CA's port: Serve's one attempt fails at once, after the check.
	cfg := acme.Config{Enabled: true, Email: "ops@icebox.test", CA: "https://127.0.0.1:1/dir", Storage: t.TempDir()}
	m, err := acme.New(cfg, acme.Options{Host: "icebox.test", TLSALPNPort: 443, HTTPPort: 80,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			got[f.GetName()] = append(got[f.GetName()], strings.Join(labels, ","))
			if v := s.GetCounter().GetValue() + s.GetGauge().GetValue(); v != 0 {
				t.Errorf("%s%v: got %v before anything happened, want 0", f.GetName(), labels, v)
			}
		}
	}
	want := map[string][]string{
		"icebox_acme_certificates_total":                   {"obtain,ok", "obtain,failed", "renew,ok", "renew,failed"},
		"icebox_acme_challenges_total":                     {"tls-alpn-01", "http-01"},
		"icebox_acme_certificate_expiry_timestamp_seconds": {""},
	}
	for name, values := range want {
		slices.Sort(values)
		slices.Sort(got[name])
		if !slices.Equal(got[name], values) {
			t.Errorf("%s: got series %q, want %q", name, got[name], values)
		}
	}

	done := make(chan error, 1)
	go func() { done <- m.Serve() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
