package acme_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/icebox-rtc/icebox/acme"
	"github.com/icebox-rtc/icebox/acme/pebbletest"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, pebbletest.GoroutinesToIgnore()...)
}

// logRecorder keeps the log records at info level and above, for the tests to read; with -v
// it also hands every record to next.
type logRecorder struct {
	next    slog.Handler
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo || (l.next != nil && l.next.Enabled(ctx, level))
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l } // acme adds only component
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	if l.next != nil {
		_ = l.next.Handle(ctx, r)
	}
	if r.Level < slog.LevelInfo {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

// lines are the attributes of the records whose message starts with msg, and "msg".
func (l *logRecorder) lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, r := range l.records {
		if !strings.HasPrefix(r.Message, msg) {
			continue
		}
		m := map[string]any{"msg": r.Message}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.Any()
			return true
		})
		out = append(out, m)
	}
	return out
}

// manager is an acme.Manager under test, served until the test ends.
type manager struct {
	*acme.Manager
	reg  *prometheus.Registry
	logs *logRecorder
}

// current is the manager the test's servers ask for certificates and challenges: set before it
// serves, so a validation that comes at once finds it.
type current struct{ atomic.Pointer[acme.Manager] }

func startManager(t *testing.T, cur *current, c acme.Config, o acme.Options) *manager {
	t.Helper()
	m := &manager{reg: prometheus.NewRegistry(), logs: &logRecorder{}}
	if testing.Verbose() {
		m.logs.next = slog.NewTextHandler(turntest.NewLogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	o.Logger = slog.New(m.logs)
	o.Registry = m.reg
	c.Enabled = true
	c.Email = "ops@icebox.test"
	if c.Storage == "" {
		c.Storage = t.TempDir()
	}
	var err error
	if m.Manager, err = acme.New(c, o); err != nil {
		t.Fatal(err)
	}
	cur.Store(m.Manager)
	done := make(chan error, 1)
	go func() { done <- m.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return m
}

// waitReady waits until the manager has a certificate in service.
func (m *manager) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for m.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no certificate after 60 s: %v", m.Ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *manager) metric(t *testing.T, name, label, value string) float64 {
	t.Helper()
	return turntest.Metric(t, m.reg, name, label, value)
}

// tlsServer serves HTTPS on 127.0.0.1 with the manager's certificate (and TLS-ALPN-01), and
// answers "hello".
func tlsServer(t *testing.T, cur *current) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") }),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"http/1.1", acme.ALPNProtocol},
			GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return cur.Load().GetCertificate(h) },
		},
		ErrorLog: slog.NewLogLogger(slog.New(slog.NewTextHandler(io.Discard, nil)).Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln
}

// served dials addr as host and returns the leaf certificate it gets, verified against roots.
func served(t *testing.T, addr, host string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS to %s as %s: %v", addr, host, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// startTLSALPN serves HTTPS on a loopback port whose certificate for host comes by TLS-ALPN-01
// on that port, from a Pebble pointed at it (p), and waits for it; o adds to the manager's
// options.
func startTLSALPN(t *testing.T, host string, p pebbletest.Options, o acme.Options) (*manager, net.Listener, *pebbletest.CA) {
	t.Helper()
	cur := &current{}
	ln := tlsServer(t, cur)
	p.TLSPort = ln.Addr().(*net.TCPAddr).Port
	ca := pebbletest.Start(t, p)
	o.Host, o.TLSALPNPort, o.ListenHost, o.Roots = host, p.TLSPort, "127.0.0.1", roots(t, ca.APIRoot)
	m := startManager(t, cur, acme.Config{CA: ca.Directory, CARoot: ca.APIRoot}, o)
	m.waitReady(t)
	return m, ln, ca
}

// TestTLSALPN01: the certificate comes by TLS-ALPN-01 on the TLS server's own port, and that
// server then serves it, verified against the CA's root.
func TestTLSALPN01(t *testing.T) {
	host := pebbletest.Name("alpn")
	m, ln, ca := startTLSALPN(t, host, pebbletest.Options{}, acme.Options{})
	leaf := served(t, ln.Addr().String(), host, ca.Roots)
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != host {
		t.Errorf("certificate for %v, want %s", leaf.DNSNames, host)
	}
	if got := m.metric(t, "icebox_acme_challenges_total", "type", "tls-alpn-01"); got < 1 {
		t.Errorf("tls-alpn-01 challenges answered: got %v, want at least 1", got)
	}
	if got := m.metric(t, "icebox_acme_certificates_total", "result", "ok"); got != 1 {
		t.Errorf("certificates obtained: got %v, want 1", got)
	}
	if got := m.metric(t, "icebox_acme_certificate_expiry_timestamp_seconds", "", ""); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("expiry metric %v, want %v", got, leaf.NotAfter.Unix())
	}
	// A client without SNI gets the same certificate.
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Roots, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: host, Roots: ca.Roots, Intermediates: pool(cs.PeerCertificates[1:])})
			return err
		}, InsecureSkipVerify: true}) //nolint:gosec // verified by VerifyConnection, against the name icebox serves
	if err != nil {
		t.Fatalf("TLS without SNI: %v", err)
	}
	c.Close()
}

// TestHTTP01: the certificate comes by HTTP-01 on the HTTP port, which passes every other
// request on.
func TestHTTP01(t *testing.T) {
	cur := &current{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur.Load().HTTPChallenge(http.NotFoundHandler()).ServeHTTP(w, r)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	port := ln.Addr().(*net.TCPAddr).Port
	ca := pebbletest.Start(t, pebbletest.Options{HTTPPort: port})
	m := startManager(t, cur, acme.Config{CA: ca.Directory, CARoot: ca.APIRoot},
		acme.Options{Host: pebbletest.Name("http01"), HTTPPort: port, ListenHost: "127.0.0.1", Roots: roots(t, ca.APIRoot)})
	m.waitReady(t)
	if got := m.metric(t, "icebox_acme_challenges_total", "type", "http-01"); got < 1 {
		t.Errorf("http-01 challenges answered: got %v, want at least 1", got)
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("another path: got %d, want the next handler's 404", resp.StatusCode)
	}
}

// TestCAUnreachable: while the CA cannot be reached, every attempt fails with its cause logged
// once, the waits double, Ready says why; once the CA is up, the next attempt gets the
// certificate. A restart then serves the stored certificate without asking the CA.
func TestCAUnreachable(t *testing.T) {
	cur := &current{}
	ln := tlsServer(t, cur)
	port := ln.Addr().(*net.TCPAddr).Port
	ca := pebbletest.New(t, pebbletest.Options{TLSPort: port})
	cfg := acme.Config{CA: ca.Directory, CARoot: ca.APIRoot, Storage: t.TempDir()}
	host := pebbletest.Name("retry")
	opts := acme.Options{Host: host, TLSALPNPort: port, ListenHost: "127.0.0.1", Roots: roots(t, ca.APIRoot),
		Retry: 100 * time.Millisecond, MaxRetry: 400 * time.Millisecond}
	m := startManager(t, cur, cfg, opts)

	deadline := time.Now().Add(30 * time.Second)
	for len(m.logs.lines("no certificate yet")) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 4 attempts in 30 s: %v", m.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	err := m.Ready()
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), host) {
		t.Errorf("Ready: got %v, want the cause (connection refused) and the name", err)
	}
	lines := m.logs.lines("no certificate yet")
	var waits []string
	for i, l := range lines[:4] {
		if l["attempt"] != int64(i+1) || !strings.Contains(fmt.Sprint(l["err"]), "connection refused") {
			t.Errorf("log line %d: attempt %v, err %v; want attempt %d and the cause", i, l["attempt"], l["err"], i+1)
		}
		waits = append(waits, fmt.Sprint(l["retry_in"]))
	}
	if want := []string{"100ms", "200ms", "400ms", "400ms"}; strings.Join(waits, " ") != strings.Join(want, " ") {
		t.Errorf("waits %v, want %v (doubling to the maximum)", waits, want)
	}
	if got := m.metric(t, "icebox_acme_certificates_total", "result", "failed"); got < 4 {
		t.Errorf("failed attempts counted: %v, want at least 4", got)
	}
	if n := len(m.logs.lines("could not get certificate")); n != 0 {
		t.Errorf("certmagic's own error lines at info level: %d, want none (one line per attempt)", n)
	}

	ca.Start(t)
	m.waitReady(t)
	served(t, ln.Addr().String(), host, ca.Roots)

	// A restart with the CA gone serves the stored certificate at once.
	first := m
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ca.Stop()
	m = startManager(t, cur, cfg, opts)
	m.waitReady(t)
	served(t, ln.Addr().String(), host, ca.Roots)
	if n := len(m.logs.lines("no certificate yet")); n != 0 {
		t.Errorf("the restart asked the CA: %d failed attempts", n)
	}
}

// TestRenew: a forced renewal puts a new certificate in service for new connections, while a
// connection made with the old one goes on.
func TestRenew(t *testing.T) {
	host := pebbletest.Name("renew")
	m, ln, ca := startTLSALPN(t, host, pebbletest.Options{}, acme.Options{})
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: host, RootCAs: ca.Roots, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "https://" + ln.Addr().String() + "/"
	get := func() *x509.Certificate {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if body, _ := io.ReadAll(resp.Body); string(body) != "hello" {
			t.Fatalf("got %q", body)
		}
		return resp.TLS.PeerCertificates[0]
	}
	before := get() // and the connection stays open in the transport's pool

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Renew(ctx); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if again := get(); again.SerialNumber.Cmp(before.SerialNumber) != 0 {
		t.Errorf("the open connection changed certificate: it was not kept")
	}
	after := served(t, ln.Addr().String(), host, ca.Roots)
	if after.SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Errorf("a new connection still gets the old certificate (serial %v)", before.SerialNumber)
	}
	if got := m.metric(t, "icebox_acme_certificates_total", "kind", "renew"); got != 1 {
		t.Errorf("renewals counted: %v, want 1", got)
	}
	if n := len(m.logs.lines("certificate renewed")); n != 1 {
		t.Errorf("renewal logged %d times, want once", n)
	}
}

// TestRenewsBeforeExpiry: with short-lived certificates, a renewal happens on its own, from the
// certificate's dates (or the CA's ARI window), while the first certificate is still valid.
func TestRenewsBeforeExpiry(t *testing.T) {
	host := pebbletest.Name("short")
	_, ln, ca := startTLSALPN(t, host, pebbletest.Options{Validity: 15 * time.Second},
		acme.Options{RenewCheck: 250 * time.Millisecond})
	first := served(t, ln.Addr().String(), host, ca.Roots)
	for {
		now := time.Now()
		leaf := served(t, ln.Addr().String(), host, ca.Roots)
		if leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			if !now.Before(first.NotAfter) {
				t.Errorf("renewed at %v, after the first certificate expired at %v", now, first.NotAfter)
			}
			break
		}
		if now.After(first.NotAfter) {
			t.Fatalf("the certificate expired at %v and was not renewed", first.NotAfter)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func roots(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	p, err := acme.LoadRoots(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
