package edge_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/edge"
	"github.com/icebox-rtc/icebox/stunturn"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is an edge port on 127.0.0.1 with what a real icebox hangs behind it: icebox's TURN
// server on its TURN listeners, an HTTP server on its HTTPS listener (answering with what it saw
// of the request), and the redirect on its plain HTTP listener.
type fixture struct {
	edge     *edge.Edge
	addr     string
	reg      *prometheus.Registry
	turn     *stunturn.Server
	secrets  *credentials.Secrets
	client   *tls.Config // trusts the edge's certificate, SNI localhost
	mu       sync.Mutex
	sniNames []string // ServerName of every ClientHello
}

func startEdge(t *testing.T, o edge.Options) *fixture {
	t.Helper()
	cert, pool := turntest.Certificate(t)
	f := &fixture{reg: prometheus.NewRegistry(), secrets: credentials.NewSecrets([]string{"secret"})}
	f.client = &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(turntest.NewLogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	o.TLS = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			f.mu.Lock()
			f.sniNames = append(f.sniNames, hello.ServerName)
			f.mu.Unlock()
			return &cert, nil
		},
	}
	o.Logger, o.Registry = log, f.reg
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if f.edge, err = edge.New(ln, o); err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()

	cfg := turntest.Config()
	cfg.UDPListen, cfg.TCPListen, cfg.TLSListen = "", "", ""
	if f.turn, err = stunturn.New(cfg, stunturn.Options{
		EdgeTCP: f.edge.TURNTCP(), EdgeTLS: f.edge.TURNTLS(),
		Secrets: f.secrets, MaxTTL: time.Hour, PublicIP: netip.MustParseAddr("127.0.0.1"),
		Logger: log, Registry: f.reg,
		IdleTimeout: 500 * time.Millisecond, // a TURN connection without an allocation
	}); err != nil {
		t.Fatal(err)
	}
	https := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s tls=%v %s", r.Proto, r.TLS != nil, r.URL.Path)
	})}
	redirect := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: edge.Redirect("https://icebox.test:8443")}
	var wg sync.WaitGroup
	for _, serve := range []func() error{
		f.edge.Serve, f.turn.Serve,
		func() error { return https.Serve(f.edge.HTTPS()) },
		func() error { return redirect.Serve(f.edge.HTTP()) },
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("serve: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = f.edge.Shutdown(ctx)
		_ = https.Shutdown(ctx)
		_ = redirect.Shutdown(ctx)
		_ = f.turn.Shutdown(ctx)
		wg.Wait()
	})
	return f
}

// waitNoPending waits until no connection waits on the edge to be routed (the last one leaves
// the count just after its server took it).
func (f *fixture) waitNoPending(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for turntest.Metric(t, f.reg, "icebox_edge_pending_connections", "", "") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connections still pending: %v", turntest.Metric(t, f.reg, "icebox_edge_pending_connections", "", ""))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fixture) metric(t *testing.T, outcome string) float64 {
	t.Helper()
	return turntest.Metric(t, f.reg, "icebox_edge_connections_total", "outcome", outcome)
}

// allocate makes a TURN allocation through the edge over network ("tcp" or "tls").
func (f *fixture) allocate(t *testing.T, network string, tlsConfig *tls.Config) {
	t.Helper()
	c := turntest.Dial(t, network, f.addr, tlsConfig)
	cred := f.secrets.Mint("edge", time.Hour, time.Now())
	relay, err := c.Allocate(cred.Username, cred.Password)
	if err != nil {
		t.Fatalf("allocate over %s through the edge: %v", network, err)
	}
	if !relay.IsValid() {
		t.Fatalf("allocate over %s: no relayed address", network)
	}
}

// get fetches path over HTTPS through the edge and returns the body (and the response).
func (f *fixture) get(t *testing.T, tr *http.Transport, path string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer c.CloseIdleConnections()
	resp, err := c.Get(path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestRouting: one port serves TURN over TLS and over TCP, HTTPS (HTTP/1.1 and HTTP/2) and
// redirects plain HTTP, each reaching its own server.
func TestRouting(t *testing.T) {
	f := startEdge(t, edge.Options{})

	t.Run("turn over tls", func(t *testing.T) { f.allocate(t, "tls", f.client) })
	t.Run("turn over tcp", func(t *testing.T) { f.allocate(t, "tcp", nil) })
	t.Run("turn over tls offering stun.turn", func(t *testing.T) {
		// RFC 7443's ALPN for TURN: not one icebox negotiates, which must not end the handshake.
		cfg := f.client.Clone()
		cfg.NextProtos = []string{"stun.turn"}
		f.allocate(t, "tls", cfg)
	})
	t.Run("https http/1.1 without alpn", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: f.client.Clone()}
		resp, body := f.get(t, tr, "https://"+f.addr+"/page")
		if resp.StatusCode != 200 || body != "HTTP/1.1 tls=true /page" {
			t.Errorf("got %d %q, want 200 \"HTTP/1.1 tls=true /page\"", resp.StatusCode, body)
		}
	})
	t.Run("https http/2", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: f.client.Clone(), ForceAttemptHTTP2: true}
		resp, body := f.get(t, tr, "https://"+f.addr+"/h2")
		if resp.ProtoMajor != 2 || body != "HTTP/2.0 tls=true /h2" {
			t.Errorf("got %s %q, want HTTP/2.0 \"HTTP/2.0 tls=true /h2\"", resp.Proto, body)
		}
	})
	t.Run("plain http redirected", func(t *testing.T) {
		resp, _ := f.get(t, &http.Transport{}, "http://"+f.addr+"/room?x=1")
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || loc != "https://icebox.test:8443/room?x=1" {
			t.Errorf("got %d to %q, want 308 to https://icebox.test:8443/room?x=1", resp.StatusCode, loc)
		}
	})
	t.Run("tls without sni", func(t *testing.T) {
		// Firefox's turns: sends no SNI: the certificate source is asked with ServerName "".
		cfg := f.client.Clone()
		cfg.ServerName = ""
		cfg.InsecureSkipVerify = true //nolint:gosec // a certificate for a name cannot verify against no name
		f.mu.Lock()
		f.sniNames = nil
		f.mu.Unlock()
		f.allocate(t, "tls", cfg)
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.sniNames) != 1 || f.sniNames[0] != "" {
			t.Errorf("certificate asked for %q, want once without a name", f.sniNames)
		}
	})
	for outcome, want := range map[string]float64{"turn_tls": 3, "turn_tcp": 1, "https": 2, "http": 1} {
		// Counted as the connection leaves the edge, which may be just after its server answered.
		if got := turntest.WaitMetric(t, f.reg, "icebox_edge_connections_total", "outcome", outcome, want); got != want {
			t.Errorf("icebox_edge_connections_total{outcome=%q}: got %v, want %v", outcome, got, want)
		}
	}
}

// closedWithin waits until the server closes c (a read returns EOF or a reset) and fails the
// test if that takes longer than limit: the deadline under test plus a margin for a loaded
// machine. It does not measure the deadline: it tells "closed by the edge" from "held open".
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(limit))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("connection still open after %v", limit)
			}
			return
		}
	}
}

// TestGarbageAndSilence: a connection that is neither TLS, TURN nor HTTP is closed at once,
// before or after the handshake; one that sends nothing, a slow request line or half a
// handshake is closed at its deadline; one routed to TURN that never allocates is closed by
// TURN's idle timeout. Each case has its own edge, with short deadlines only where they are
// what the case is about (a loaded machine must not turn a handshake into a timeout).
func TestGarbageAndSilence(t *testing.T) {
	const short = time.Second
	dial := func(t *testing.T, f *fixture) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dialTLS := func(t *testing.T, f *fixture) *tls.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", f.addr, f.client)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// A STUN Binding request, as a TURN client's first message.
	stunBinding := []byte("\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl")
	const limit = 10 * time.Second // far above the deadlines under test; no timing is asserted
	for _, tc := range []struct {
		name    string
		opts    edge.Options
		run     func(t *testing.T, f *fixture) net.Conn
		outcome string
	}{
		{"garbage before the handshake", edge.Options{}, func(t *testing.T, f *fixture) net.Conn {
			c := dial(t, f)
			_, _ = c.Write([]byte("\xff\xfe binary noise, not a protocol"))
			return c
		}, "unrecognized"},
		{"garbage after the handshake", edge.Options{}, func(t *testing.T, f *fixture) net.Conn {
			c := dialTLS(t, f)
			_, _ = c.Write([]byte("\x99\x00 not TURN nor HTTP"))
			return c
		}, "unrecognized"},
		{"silence before the handshake", edge.Options{FirstBytesTimeout: short}, func(t *testing.T, f *fixture) net.Conn {
			return dial(t, f)
		}, "timeout"},
		{"silence after the handshake", edge.Options{FirstBytesTimeout: short}, func(t *testing.T, f *fixture) net.Conn {
			return dialTLS(t, f)
		}, "timeout"},
		{"half a request line", edge.Options{FirstBytesTimeout: short}, func(t *testing.T, f *fixture) net.Conn {
			c := dial(t, f)
			_, _ = c.Write([]byte("GE"))
			return c
		}, "timeout"},
		{"half a handshake", edge.Options{HandshakeTimeout: short}, func(t *testing.T, f *fixture) net.Conn {
			c := dial(t, f)
			_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
			return c
		}, "timeout"},
		{"turn over tls that never allocates", edge.Options{}, func(t *testing.T, f *fixture) net.Conn {
			// Routed to TURN, whose idle timeout (500 ms here) closes a connection without an
			// allocation however often it sends Bindings.
			c := dialTLS(t, f)
			_, _ = c.Write(stunBinding)
			resp := make([]byte, 20)
			if _, err := io.ReadFull(c, resp); err != nil || resp[0] != 0x01 || resp[1] != 0x01 {
				t.Fatalf("binding over tls through the edge: %q, %v; want a success response", resp, err)
			}
			return c
		}, "turn_tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startEdge(t, tc.opts)
			closedWithin(t, tc.run(t, f), limit)
			if got := turntest.WaitMetric(t, f.reg, "icebox_edge_connections_total", "outcome", tc.outcome, 1); got != 1 {
				t.Errorf("%s: got %v, want 1", tc.outcome, got)
			}
			f.allocate(t, "tls", f.client) // the edge still serves
			f.waitNoPending(t)
		})
	}
}

// TestHalfOpenFlood: far more half-open TLS handshakes than the edge keeps pending: it holds no
// more than its limit (the oldest are closed), and a real client, HTTPS or TURN, still gets in.
func TestHalfOpenFlood(t *testing.T) {
	const limit, flood = 32, 200
	f := startEdge(t, edge.Options{MaxPending: limit, HandshakeTimeout: time.Minute, FirstBytesTimeout: time.Minute})
	conns := make([]net.Conn, 0, flood)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range flood {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}) // a ClientHello that never comes
	}
	if got := turntest.WaitMetric(t, f.reg, "icebox_edge_connections_total", "outcome", "evicted", flood-limit); got != flood-limit {
		t.Errorf("evicted: got %v, want %d", got, flood-limit)
	}
	if got := turntest.Metric(t, f.reg, "icebox_edge_pending_connections", "", ""); got > limit {
		t.Errorf("pending: got %v, want at most %d", got, limit)
	}
	// The evicted ones are closed, long before their one-minute deadline; the others wait.
	var closed sync.WaitGroup
	var mu sync.Mutex
	eof := 0
	for _, c := range conns {
		closed.Add(1)
		go func() {
			defer closed.Done()
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				mu.Lock()
				eof++
				mu.Unlock()
			}
		}()
	}
	closed.Wait()
	if eof != flood-limit {
		t.Errorf("closed flood connections: got %d, want %d", eof, flood-limit)
	}
	tr := &http.Transport{TLSClientConfig: f.client.Clone()}
	if resp, body := f.get(t, tr, "https://"+f.addr+"/during-the-flood"); resp.StatusCode != 200 {
		t.Errorf("https during the flood: %d %q", resp.StatusCode, body)
	}
	f.allocate(t, "tls", f.client)
}

// TestShutdownClosesPending: Shutdown closes connections still in their handshake.
func TestShutdownClosesPending(t *testing.T) {
	f := startEdge(t, edge.Options{HandshakeTimeout: time.Minute, FirstBytesTimeout: time.Minute})
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte{0x16})
	turntest.WaitMetric(t, f.reg, "icebox_edge_pending_connections", "", "", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.edge.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	closedWithin(t, c, 10*time.Second)
	if got := f.metric(t, "shutdown"); got != 1 {
		t.Errorf("shutdown: got %v, want 1", got)
	}
}
