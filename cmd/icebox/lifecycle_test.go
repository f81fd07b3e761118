package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/httpapi/httpapitest"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// testConfig is DefaultConfig on loopback with free ports.
func testConfig() Config {
	c := DefaultConfig()
	c.HTTP.Listen = "127.0.0.1:0"
	c.TURN.UDPListen = "127.0.0.1:0"
	c.TURN.TCPListen = "127.0.0.1:0"
	c.PublicHost = "127.0.0.1"
	c.PublicIP = "127.0.0.1"
	c.Shutdown.Drain = 0
	return c
}

// startApp starts icebox in-process and returns it with the function that stops it (the first
// signal) and one that waits for run's result.
func startApp(t *testing.T, cfg Config) (*app, context.CancelFunc, func() error) {
	t.Helper()
	comp, err := cfg.compile()
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a, err := newApp(cfg, comp, log, readBuildInfo())
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		runErr = a.run(ctx)
		close(done)
	}()
	wait := func() error {
		t := time.NewTimer(time.Minute)
		defer t.Stop()
		select {
		case <-done:
			return runErr
		case <-t.C:
			return errors.New("run did not return within a minute")
		}
	}
	t.Cleanup(func() {
		cancel()
		_ = wait()
	})
	return a, cancel, wait
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// get fetches url and returns the status and body.
func get(t *testing.T, c *http.Client, url string) (int, string) { return httpapitest.Get(t, c, url) }

// waitStatus polls url until it answers want, for at most 30 seconds.
func waitStatus(t *testing.T, c *http.Client, url string, want int) string {
	return httpapitest.WaitStatus(t, c, url, want, 30*time.Second)
}

func TestLifecycle(t *testing.T) {
	cfg := testConfig()
	cfg.Shutdown.Drain = 3 * time.Second
	cfg.Credentials.Secrets = []string{"lifecycle-secret"}
	a, stop, wait := startApp(t, cfg)
	base := "http://" + a.http.addr().String()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	if code, body := get(t, c, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz: got %d %s, want 200", code, body)
	}
	waitStatus(t, c, base+"/readyz", 200)

	code, body := get(t, c, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: got %d", code)
	}
	for _, want := range []string{"icebox_build_info{", "icebox_ready 1", "icebox_go_goroutines", "icebox_process_resident_memory_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "icebox_") {
			t.Errorf("/metrics has a metric outside icebox_: %q", line)
		}
	}

	// /ice-config names the bound TURN listeners, and its credential allocates there.
	code, body = get(t, c, base+"/ice-config")
	var ice struct {
		ICEServers []struct {
			URLs                 []string
			Username, Credential string
		} `json:"iceServers"`
	}
	if err := json.Unmarshal([]byte(body), &ice); code != 200 || err != nil || len(ice.ICEServers) != 2 {
		t.Fatalf("/ice-config: got %d %s", code, body)
	}
	_, udpPort, _ := net.SplitHostPort(a.turnAddrs.udp.String())
	if got, want := ice.ICEServers[0].URLs, []string{"stun:127.0.0.1:" + udpPort}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("stun urls: got %v, want %v", got, want)
	}
	turnEntry := ice.ICEServers[1]
	tc := turntest.Dial(t, "udp", a.turnAddrs.udp.String(), nil)
	if _, err := tc.Allocate(turnEntry.Username, turnEntry.Credential); err != nil {
		t.Fatalf("TURN Allocate with the /ice-config credential: %v", err)
	}
	// Signaling at /ws: the welcome brings the same kind of iceServers.
	wsURL := "ws://" + a.http.addr().String() + "/ws"
	sc, err := sigclient.Dial(t.Context(), wsURL, sigclient.Options{})
	if err != nil {
		t.Fatalf("/ws: %v", err)
	}
	defer sc.Close()
	if w := sc.Welcome(); len(w.ICEServers) != 2 || w.ICEServers[1].Username == "" || w.TTL != 86400 {
		t.Errorf("welcome: got %s, want the stun and turn servers with a credential", w.Raw)
	}
	if _, err := sc.Join(t.Context(), "lifecycle", nil); err != nil {
		t.Fatalf("join: %v", err)
	}

	if _, body := get(t, c, base+"/metrics"); !strings.Contains(body, `icebox_turn_allocations{transport="udp"} 1`) {
		t.Errorf("/metrics lacks the TURN allocation")
	}

	stop() // the first signal
	body = waitStatus(t, c, base+"/readyz", 503)
	if code, body := get(t, c, base+"/ice-config"); code != 503 || !strings.Contains(body, `"unavailable"`) {
		t.Errorf("/ice-config while draining: got %d %s, want 503", code, body)
	}
	// Draining: TURN refuses new allocations, the existing one goes on.
	cred2 := a.secrets.Mint("late", time.Hour, time.Now())
	if _, err := turntest.Dial(t, "tcp", a.turnAddrs.tcp.String(), nil).Allocate(cred2.Username, cred2.Password); err == nil {
		t.Errorf("TURN Allocate while draining succeeded")
	}
	if err := tc.Refresh(time.Minute); err != nil {
		t.Errorf("TURN Refresh of an existing allocation while draining: %v", err)
	}
	if _, err := sigclient.Dial(t.Context(), wsURL, sigclient.Options{}); err == nil {
		t.Errorf("a new signaling connection while draining was accepted")
	}
	if err := sc.Ping(t.Context()); err != nil {
		t.Errorf("the existing signaling connection while draining: %v", err)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != "draining" {
		t.Errorf("/readyz while draining: got %s, want the error body with code draining", body)
	}
	if code, _ := get(t, c, base+"/healthz"); code != 200 {
		t.Errorf("/healthz while draining: got %d, want 200 (the process runs)", code)
	}
	if err := wait(); err != nil {
		t.Errorf("run: got %v, want a clean return", err)
	}
	if m := <-sc.Messages(); m.Type != "bye" || m.Reason != "shutdown" {
		t.Errorf("signaling at shutdown: got %s, want bye", m.Raw)
	}
	if _, err := net.Dial("tcp", a.http.addr().String()); err == nil {
		t.Errorf("HTTP still accepts connections after shutdown")
	}
}

// TestShutdownTimeoutCutsSlowRequests: a request still running when shutdown.timeout ends does
// not hold the process.
func TestShutdownTimeoutCutsSlowRequests(t *testing.T) {
	cfg := testConfig()
	cfg.Shutdown.Drain = 0
	cfg.Shutdown.Timeout = 200 * time.Millisecond
	a, stop, wait := startApp(t, cfg)
	release := make(chan struct{})
	entered := make(chan struct{})
	a.mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	go func() {
		resp, err := http.Get("http://" + a.http.addr().String() + "/slow")
		if err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request did not arrive within 10 s")
	}
	stop()
	if err := wait(); err != nil {
		t.Errorf("run: got %v, want a clean return", err)
	}
	close(release)
}

func TestPortInUse(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for _, tc := range []struct {
		key, addr string
		set       func(*Config, string)
	}{
		{"http.listen", tcp.Addr().String(), func(c *Config, a string) { c.HTTP.Listen = a }},
		{"turn.tcp_listen", tcp.Addr().String(), func(c *Config, a string) { c.TURN.TCPListen = a }},
		{"turn.udp_listen", udp.LocalAddr().String(), func(c *Config, a string) { c.TURN.UDPListen = a }},
	} {
		cfg := testConfig()
		tc.set(&cfg, tc.addr)
		_, err = newApp(cfg, compiled{}, slog.New(slog.NewTextHandler(io.Discard, nil)), readBuildInfo())
		if err == nil || !strings.Contains(err.Error(), tc.addr) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("got %v, want an error naming %s and %s", err, tc.key, tc.addr)
		}
	}
}

func TestHTTPS(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.TLSCert, cfg.HTTP.TLSKey = turntest.CertificateFiles(t)
	cfg.TURN.TLSListen = "127.0.0.1:0"
	a, _, _ := startApp(t, cfg)
	// TURN over TLS uses the HTTP certificate.
	tc := turntest.Dial(t, "tls", a.turnAddrs.tls.String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // self-signed test certificate
	if _, _, err := tc.Binding(); err != nil {
		t.Errorf("STUN Binding over TLS: %v", err)
	}
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test certificate
		DisableKeepAlives: true,
	}}
	if code, _ := get(t, c, "https://"+a.http.addr().String()+"/healthz"); code != 200 {
		t.Errorf("/healthz over HTTPS: got %d, want 200", code)
	}
	if got := a.http.url("example.com"); !strings.HasPrefix(got, "https://example.com:") {
		t.Errorf("url: got %q, want https://example.com:PORT", got)
	}
}
