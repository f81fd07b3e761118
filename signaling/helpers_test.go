package signaling_test

import (
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/httpapi"
	"github.com/icebox-rtc/icebox/signaling"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is a Hub served at /ws on a real loopback HTTP server.
type server struct {
	*signaling.Hub
	URL      string // ws://127.0.0.1:PORT/ws
	HTTP     *httptest.Server
	Registry *prometheus.Registry
	Bus      *signaling.NodeBus // with serverOptions.redis or loopback
}

type serverOptions struct {
	config  func(*signaling.Config)
	auth    credentials.AuthConfig
	origins []string
	proxies []string // http.trusted_proxies
	// redis or loopback: the rooms live on this Redis or Loopback (a node of several);
	// presence is the bus's presence timeout.
	redis    string
	loopback *signaling.Loopback
	presence time.Duration
	// clock runs the hub's and the bus's timers (nil: the system clock).
	clock signaling.Clock
	// logger receives the hub's and the bus's log; log, when set, the same as text (nil and
	// nil: discarded).
	logger *slog.Logger
	log    io.Writer
}

func testConfig() signaling.Config {
	c := signaling.DefaultConfig()
	c.RateLimit = 0 // tests that measure the limit set it
	c.MaxConnsPerIP = 0
	return c
}

func start(t testing.TB, o serverOptions) *server {
	t.Helper()
	cfg := testConfig()
	if o.config != nil {
		o.config(&cfg)
	}
	if o.auth.Mode == "" {
		o.auth = credentials.DefaultAuthConfig()
	}
	origins, err := httpapi.ParseOrigins(o.origins)
	if err != nil {
		t.Fatal(err)
	}
	proxies, err := httpapi.ParseCIDRs(o.proxies)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(cmp.Or(o.log, io.Writer(io.Discard)), nil))
	}
	var bus signaling.Bus
	var store signaling.SessionStore
	var rb *signaling.NodeBus
	node := signaling.NodeOptions{PresenceTimeout: o.presence, ResumeGrace: cfg.ResumeGrace, Clock: o.clock, Registry: reg, Logger: o.logger}
	switch {
	case o.redis != "":
		rb, err = signaling.NewRedisBus(context.Background(), signaling.RedisOptions{URL: o.redis, NodeOptions: node})
		if err != nil {
			t.Fatal(err)
		}
	case o.loopback != nil:
		rb = o.loopback.Node(node)
	}
	if rb != nil {
		bus, store = rb, rb
	}
	hub, err := signaling.New(cfg, signaling.Options{
		Bus:      bus,
		Sessions: store,
		Clock:    o.clock,
		Auth:     credentials.NewAuthenticator(o.auth),
		Access:   httpapi.NewAccess(origins, proxies),
		ICE: func(credentials.Identity) ([]credentials.ICEServer, int64) {
			return []credentials.ICEServer{{URLs: []string{"stun:127.0.0.1:3478"}}}, 86400
		},
		Logger:   o.logger,
		Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = hub.Serve()
		close(done)
	}()
	mux := http.NewServeMux()
	mux.Handle("/ws", hub)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hub.Shutdown(ctx)
		<-done
		hs.Close()
		if rb != nil {
			_ = rb.Close()
		}
	})
	return &server{Hub: hub, URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", HTTP: hs, Registry: reg, Bus: rb}
}

func dial(t *testing.T, s *server, o sigclient.Options) *sigclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sigclient.Dial(ctx, s.URL, o)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// join dials a client and joins room with meta.
func join(t *testing.T, s *server, room string, meta any) (*sigclient.Client, sigclient.Message) {
	t.Helper()
	c := dial(t, s, sigclient.Options{})
	joined, err := c.Join(ctx(t), room, meta)
	if err != nil {
		t.Fatalf("join %s: %v", room, err)
	}
	return c, joined
}

// next waits for the next unsolicited message.
func next(t *testing.T, c *sigclient.Client) sigclient.Message {
	t.Helper()
	select {
	case m, ok := <-c.Messages():
		if !ok {
			t.Fatalf("connection ended while waiting for a message: %v", c.Err())
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no message within 10s")
	}
	return sigclient.Message{}
}

// expect waits for the next message and checks its type.
func expect(t *testing.T, c *sigclient.Client, typ string) sigclient.Message {
	t.Helper()
	m := next(t, c)
	if m.Type != typ {
		t.Fatalf("got %s, want a %s message", m.Raw, typ)
	}
	return m
}

// quiet checks that nothing arrived for c that the test did not expect: every message the
// server sent it before a pong (and, for each of from, before a marker signal from that peer:
// a peer on another node) would come first.
func quiet(t *testing.T, c *sigclient.Client, from ...*sigclient.Client) {
	t.Helper()
	for _, f := range from {
		if err := f.Signal(c.Welcome().Peer, "quiet-marker"); err != nil {
			t.Fatal(err)
		}
		if m := next(t, c); m.Type != "signal" || m.From != f.Welcome().Peer || string(m.Data) != `"quiet-marker"` {
			t.Fatalf("unexpected message %s", m.Raw)
		}
	}
	if err := c.Ping(ctx(t)); err != nil {
		t.Fatalf("ping: %v", err)
	}
	select {
	case m, ok := <-c.Messages():
		if ok {
			t.Errorf("unexpected message %s", m.Raw)
		}
	default:
	}
}

// rawDial opens a plain WebSocket, for clients that break the protocol on purpose.
func rawDial(t *testing.T, s *server, query string, header http.Header) (*websocket.Conn, map[string]any) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(s.URL+query, header)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws, readJSON(t, ws)
}

func readJSON(t *testing.T, ws *websocket.Conn) map[string]any {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, frame, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(frame, &m); err != nil {
		t.Fatalf("frame %s: %v", frame, err)
	}
	return m
}

// closeCode reads until the connection ends and returns the close code it got.
func closeCode(t *testing.T, ws *websocket.Conn) int {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if ok := asCloseError(err, &ce); ok {
			return ce.Code
		}
		t.Fatalf("connection ended without a close frame: %v", err)
	}
}

func asCloseError(err error, target **websocket.CloseError) bool {
	ce, ok := err.(*websocket.CloseError)
	if ok {
		*target = ce
	}
	return ok
}

type signalingConfig = signaling.Config

func timeAfter(seconds int) time.Time { return time.Now().Add(time.Duration(seconds) * time.Second) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// counter sums the series of a metric whose label has value; with label "", every series.
func counter(t *testing.T, s *server, name, label, value string) float64 {
	t.Helper()
	families, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label == "" {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				continue
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

// startF is start for a fuzz target, outside f.Fuzz.
func startF(f *testing.F) *server { return start(f, serverOptions{}) }
