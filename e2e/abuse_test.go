package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// TestBinaryFileLimit: icebox under RLIMIT_NOFILE 256 with more idle TURN TCP connections than
// it has descriptors keeps answering /healthz, /readyz and /ws, and allocates over UDP and TCP:
// past TURN's budget the oldest idle connections are closed to make room, which is logged at
// most every 10 seconds.
func TestBinaryFileLimit(t *testing.T) {
	prlimit := turntest.RequireTools(t, "prlimit")[0]
	p := startCommand(t, t.TempDir(), cleanEnv("ICEBOX_LOG_FORMAT=json", "ICEBOX_CREDENTIALS_SECRETS=fd-test",
		"ICEBOX_PUBLIC_HOST=127.0.0.1", "ICEBOX_PUBLIC_IP=127.0.0.1"),
		prlimit, "--nofile=256:256", "--", iceboxBinary(t), "serve",
		"--http.listen=127.0.0.1:0", "--turn.udp_listen=127.0.0.1:0", "--turn.tcp_listen=127.0.0.1:0")
	turn := map[string]string{}
	httpAddr := ""
	for m := range p.lines {
		switch m["msg"] {
		case "serving stun/turn":
			turn[m["transport"].(string)] = m["listen"].(string)
		case "serving http":
			httpAddr = m["listen"].(string)
		}
		if m["msg"] == "icebox ready" {
			break
		}
	}
	if httpAddr == "" || turn["udp"] == "" || turn["tcp"] == "" {
		t.Fatalf("icebox did not start: %s", p.output())
	}

	const shedMsg = "turn connections over the file descriptor budget"
	const idle = 400 // more than the process has descriptors
	start := time.Now()
	for i := range idle {
		c, err := net.Dial("tcp", turn["tcp"])
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	// Once icebox has seen every connection, the ones past its budget are closed.
	web := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.output(), shedMsg) {
		if time.Now().After(deadline) {
			t.Fatalf("no connection was shed:\n%s", p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, web, "http://"+httpAddr+path); code != 200 {
			t.Errorf("%s: got %d %s", path, code, body)
		}
	}
	code, body := get(t, web, "http://"+httpAddr+"/ice-config")
	var cfg credentials.ICEConfig
	if code != 200 || json.Unmarshal([]byte(body), &cfg) != nil {
		t.Fatalf("/ice-config: %d %s", code, body)
	}
	turnEntry := cfg.ICEServers[len(cfg.ICEServers)-1]
	for _, tr := range []string{"udp", "udp", "tcp"} {
		if _, err := turntest.Dial(t, tr, turn[tr], nil).Allocate(turnEntry.Username, turnEntry.Credential); err != nil {
			t.Errorf("allocate over %s beside %d idle connections: %v", tr, idle, err)
		}
	}
	c, err := sigclient.Dial(ctx(t), "ws://"+httpAddr+"/ws", sigclient.Options{})
	if err != nil {
		t.Fatalf("/ws: %v", err)
	}
	_ = c.Close()
	if n, most := strings.Count(p.output(), shedMsg), 1+int(time.Since(start)/(10*time.Second)); n > most {
		t.Errorf("shed connections were logged %d times, want at most %d (once every 10 s)", n, most)
	}
}
