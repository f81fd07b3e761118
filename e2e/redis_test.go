package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/signaling"
	"github.com/icebox-rtc/icebox/signaling/protocol"
	"github.com/icebox-rtc/icebox/signaling/redistest"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// TestBinaryRedisUnreachable: with signaling.redis_url pointing nowhere, serve exits 1 and
// names the URL, without its password.
func TestBinaryRedisUnreachable(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	r.Stop() // a free port nobody answers on
	url := fmt.Sprintf("redis://:hunter2@%s/0", r.Addr)
	code, _, stderr := runBinary(t, cleanEnv("ICEBOX_SIGNALING_REDIS_URL="+url, "ICEBOX_HTTP_LISTEN=127.0.0.1:0",
		"ICEBOX_TURN_UDP_LISTEN=127.0.0.1:0", "ICEBOX_TURN_TCP_LISTEN=127.0.0.1:0"), "serve")
	if code != 1 {
		t.Fatalf("exit code: got %d, want 1\n%s", code, stderr)
	}
	if !strings.Contains(stderr, r.Addr) || strings.Contains(stderr, "hunter2") {
		t.Fatalf("want the redis address named, without the password:\n%s", stderr)
	}
}

// TestBinaryTwoNodesOnRedis: two icebox processes on one Redis (TLS, with a password) serve
// one room; when one is killed, the other's clients get peer-left.
func TestBinaryTwoNodesOnRedis(t *testing.T) {
	certFile, keyFile := turntest.CertificateFiles(t)
	r := redistest.Start(t, redistest.Options{Password: "pw-123", TLSCert: certFile, TLSKey: keyFile})
	if !strings.HasPrefix(r.URL, "rediss://:pw-123@") {
		t.Fatalf("redis URL %s", r.URL)
	}
	env := cleanEnv("ICEBOX_LOG_FORMAT=json", "SSL_CERT_FILE="+certFile, "ICEBOX_SIGNALING_REDIS_URL="+r.URL,
		"ICEBOX_HTTP_LISTEN=127.0.0.1:0", "ICEBOX_TURN_UDP_LISTEN=127.0.0.1:0", "ICEBOX_TURN_TCP_LISTEN=127.0.0.1:0",
		"ICEBOX_SIGNALING_RESUME_GRACE=1s", "ICEBOX_SHUTDOWN_DRAIN=0s")
	var nodes []*proc
	var urls []string
	for range 2 {
		p := startBinary(t, t.TempDir(), env, "serve")
		addr := p.waitLog(t, "serving http")["listen"].(string)
		p.waitLog(t, "icebox ready")
		nodes = append(nodes, p)
		urls = append(urls, "http://"+addr)
	}
	if out := nodes[0].output(); strings.Contains(out, "pw-123") {
		t.Errorf("the redis password is in the log:\n%s", out)
	}
	dial := func(base string) *sigclient.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := sigclient.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", sigclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	next := func(c *sigclient.Client, typ string, within time.Duration) sigclient.Message {
		t.Helper()
		select {
		case m, ok := <-c.Messages():
			if !ok || m.Type != typ {
				t.Fatalf("got %s (open %v), want %s", m.Raw, ok, typ)
			}
			return m
		case <-time.After(within):
			t.Fatalf("no %s within %v", typ, within)
		}
		return sigclient.Message{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	alice, bob := dial(urls[0]), dial(urls[1])
	if _, err := alice.Join(ctx, "call", nil); err != nil {
		t.Fatal(err)
	}
	joined, err := bob.Join(ctx, "call", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(joined.Peers) != 1 || joined.Peers[0].Peer != alice.Welcome().Peer {
		t.Fatalf("bob on the second node: got %s, want alice", joined.Raw)
	}
	next(alice, "peer-joined", 10*time.Second)
	if err := alice.Signal(bob.Welcome().Peer, map[string]string{"sdp": "offer"}); err != nil {
		t.Fatal(err)
	}
	if m := next(bob, "signal", 10*time.Second); m.From != alice.Welcome().Peer {
		t.Fatalf("got %s", m.Raw)
	}
	if err := bob.Signal(alice.Welcome().Peer, map[string]string{"sdp": "answer"}); err != nil {
		t.Fatal(err)
	}
	next(alice, "signal", 10*time.Second)

	resp, err := http.Get(urls[0] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{"icebox_signaling_bus_up 1", "icebox_signaling_bus_published_total", "icebox_signaling_bus_received_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %q", want)
		}
	}

	// The first node dies: bob hears that alice is gone, after resume_grace (1s) and the
	// presence timeout.
	_ = nodes[0].cmd.Process.Kill()
	m := next(bob, "peer-left", signaling.DefaultPresenceTimeout+20*time.Second)
	if m.Peer != alice.Welcome().Peer || m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("got %s, want alice's peer-left disconnected", m.Raw)
	}
	// /readyz of the survivor is 200 throughout.
	waitStatus(t, &http.Client{}, urls[1]+"/readyz", 200)

	// Redis goes away: the node says so, and TURN credentials and readiness are unaffected.
	r.Stop()
	nodes[1].waitLog(t, "signaling: redis lost")
	for _, path := range []string{"/readyz", "/ice-config"} {
		resp, err := http.Get(urls[1] + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s during the redis outage: %d, want 200", path, resp.StatusCode)
		}
	}
	if err := bob.Ping(ctx); err != nil {
		t.Fatalf("bob lost his connection during the outage: %v", err)
	}
	r.Restart()
	nodes[1].waitLog(t, "signaling: redis is back")
	carol := dial(urls[1])
	if _, err := carol.Join(ctx, "call", nil); err != nil {
		t.Fatalf("join after redis came back: %v", err)
	}
	next(bob, "peer-joined", 10*time.Second)
}
