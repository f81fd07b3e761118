package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

// TestCredentialRateAcrossDoors: the /ws welcome carries a TURN credential, so connecting
// counts toward the same per-client limit as /ice-config (http.rate_limit): a client cannot
// mint credentials faster through /ws.
func TestCredentialRateAcrossDoors(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.RateLimit = 1 // burst 2
	cfg.Signaling.MaxConnsPerIP = 0
	a, _, _ := startApp(t, cfg)
	base := "http://" + a.http.addr().String()
	ws := "ws://" + a.http.addr().String() + "/ws"
	refused := 0
	for i := range 10 {
		c, err := sigclient.Dial(ctx(t), ws, sigclient.Options{})
		if err != nil {
			if !strings.Contains(err.Error(), "429") && !strings.Contains(err.Error(), "rate-limited") {
				t.Fatalf("connection %d: %v, want 429 rate-limited", i, err)
			}
			refused++
			continue
		}
		_ = c.Close()
	}
	if refused < 7 {
		t.Errorf("%d of 10 quick connections refused, want at least 7 (a burst of 2, 1 a second)", refused)
	}
	web := &http.Client{Timeout: 10 * time.Second}
	if code, body := get(t, web, base+"/ice-config"); code != http.StatusTooManyRequests {
		t.Errorf("/ice-config after /ws spent the limit: got %d %s, want 429", code, body)
	}
	line := fmt.Sprintf(`icebox_credentials_issued_total{endpoint="ws"} %d`, 10-refused)
	if _, body := get(t, web, base+"/metrics"); !strings.Contains(body, line+"\n") {
		t.Errorf("/metrics lacks %q", line)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}
