package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

// TestHTTPMetrics: requests are counted by route and status class, and timed; a WebSocket
// upgrade counts as 1xx and still works through the wrapper.
func TestHTTPMetrics(t *testing.T) {
	a, _, _ := startApp(t, testConfig())
	base := "http://" + a.http.addr().String()
	web := &http.Client{Timeout: 10 * time.Second}
	for _, p := range []string{"/healthz", "/ice-config", "/nope", "/sdk/icebox.js", "/ice-config?policy=bad"} {
		get(t, web, base+p)
	}
	c, err := sigclient.Dial(ctx(t), "ws://"+a.http.addr().String()+"/ws", sigclient.Options{})
	if err != nil {
		t.Fatalf("/ws through the metrics wrapper: %v", err)
	}
	_ = c.Close()
	// The upgrade is counted when its handler returns, which may be after the client read the
	// 101: wait for it.
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, body = get(t, web, base+"/metrics")
		if strings.Contains(body, `icebox_http_requests_total{code="1xx",route="/ws"} 1`+"\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
	for _, want := range []string{
		`icebox_http_requests_total{code="2xx",route="/healthz"} 1`,
		`icebox_http_requests_total{code="2xx",route="/ice-config"} 1`,
		`icebox_http_requests_total{code="4xx",route="/ice-config"} 1`,
		`icebox_http_requests_total{code="4xx",route="other"} 1`,
		`icebox_http_requests_total{code="2xx",route="/sdk"} 1`,
		`icebox_http_requests_total{code="1xx",route="/ws"} 1`,
		`icebox_http_request_duration_seconds_count{route="/ice-config"} 2`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
