package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/icebox-rtc/icebox/acme"
	"github.com/icebox-rtc/icebox/acme/pebbletest"
	"github.com/icebox-rtc/icebox/edge/edgetest"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// acmeConfig is edgeConfig with ACME on for host, the edge on edgePort, and ca as the CA.
func acmeConfig(t *testing.T, host string, edgePort int, ca *pebbletest.CA) Config {
	t.Helper()
	cfg := edgeConfig(t)
	cfg.PublicHost = host
	cfg.Edge.Listen = "127.0.0.1:" + strconv.Itoa(edgePort)
	cfg.ACME = acme.Config{Enabled: true, Email: "ops@icebox.test", CA: ca.Directory, CARoot: ca.APIRoot, Storage: t.TempDir()}
	return cfg
}

// readyz fetches /readyz on http.listen: its status and error body.
func readyz(t *testing.T, a *app) (int, string, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.http.addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string }
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &body)
	return resp.StatusCode, body.Error.Code, body.Error.Message
}

// waitReady waits until /readyz says 200: the certificate is in service.
func waitReady(t *testing.T, a *app) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		status, code, msg := readyz(t, a)
		if status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 90 s: %d %s: %s", status, code, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// servedSerial is the serial number of the certificate a new TLS connection to the edge gets.
func servedSerial(t *testing.T, e edgetest.Target) string {
	t.Helper()
	c, err := tls.Dial("tcp", e.Addr, e.TLSConfig())
	if err != nil {
		t.Fatalf("TLS to the edge: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestEdgeACME: icebox gets its certificate from an ACME CA (Pebble) by TLS-ALPN-01 on the
// edge port, and serves on that one port HTTPS with it, WSS, TURN over TLS (pion's client and
// coturn's), plain TURN over TCP, a client without SNI, TURN over UDP on edge.udp_listen. A
// renewal while a TURN/TLS allocation and a WSS connection are open leaves both working, and
// new connections get the new certificate.
func TestEdgeACME(t *testing.T) {
	port := pebbletest.FreePort(t)
	ca := pebbletest.Start(t, pebbletest.Options{TLSPort: port})
	cfg := acmeConfig(t, pebbletest.Name("edge"), port, ca)
	a, _, _ := startApp(t, cfg)
	waitReady(t, a)
	e := edgetest.Target{Addr: a.edge.Addr().String(), UDP: a.edgeUDP.String(), Host: cfg.PublicHost, Roots: ca.Roots}
	if got := turntest.Metric(t, a.registry, "icebox_acme_challenges_total", "type", "tls-alpn-01"); got < 1 {
		t.Errorf("tls-alpn-01 challenges answered: %v, want at least 1", got)
	}
	exercise(t, e)

	t.Run("coturn uclient over tls", func(t *testing.T) {
		uclient := turntest.RequireTools(t, "turnutils_uclient")[0]
		echo, _ := turntest.Echo(t)
		// -s: Send indications. Debian's uclient (coturn 4.6) picks channel numbers above
		// 0x4FFF, which icebox refuses with 400 as RFC 8656 wants.
		args := []string{"-W", cfg.Credentials.Secrets[0], "-u", "uclient", "-e", "127.0.0.1", "-r", strconv.Itoa(echo.Port),
			"-p", strconv.Itoa(port), "-n", "20", "-m", "1", "-c", "-X", "-s", "-t", "-S", "127.0.0.1"}
		turntest.Uclient(t, uclient, args...)
	})

	t.Run("renewal keeps connections", func(t *testing.T) {
		_, cred := edgetest.TURNURIs(t, e.ICEConfig(t))
		relay := pionOverTLS(t, e, cred)
		relay.roundtrip(t, "before the renewal")
		ws := e.Join(t, "renewal")
		before := servedSerial(t, e)

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := a.acme.Renew(ctx); err != nil {
			t.Fatalf("renew: %v", err)
		}
		relay.roundtrip(t, "after the renewal")
		if err := ws.Ping(ctx); err != nil {
			t.Errorf("the WSS connection after the renewal: %v", err)
		}
		if after := servedSerial(t, e); after == before {
			t.Errorf("new connections still get certificate %s", before)
		}
		_, cred = edgetest.TURNURIs(t, e.ICEConfig(t))
		e.Allocate(t, "tls", cred)
		if status, code, msg := readyz(t, a); status != http.StatusOK {
			t.Errorf("readyz after the renewal: %d %s %s", status, code, msg)
		}
	})
}

// TestEdgeACMEHTTP01: with port 443 unreachable for the CA (Pebble's TLS-ALPN-01 port closed),
// the certificate comes by HTTP-01 on acme.http_listen, which redirects everything else to the
// https page.
func TestEdgeACMEHTTP01(t *testing.T) {
	edgePort, httpPort := pebbletest.FreePort(t), pebbletest.FreePort(t)
	ca := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort})
	cfg := acmeConfig(t, pebbletest.Name("http01"), edgePort, ca)
	cfg.ACME.HTTPListen = "127.0.0.1:" + strconv.Itoa(httpPort)
	a, _, _ := startApp(t, cfg)
	waitReady(t, a)
	if got := turntest.Metric(t, a.registry, "icebox_acme_challenges_total", "type", "http-01"); got < 1 {
		t.Errorf("http-01 challenges answered: %v, want at least 1", got)
	}
	e := edgetest.Target{Addr: a.edge.Addr().String(), Host: cfg.PublicHost, Roots: ca.Roots}
	if resp, body := e.Get(t, "/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("https with the certificate: %d %s", resp.StatusCode, body)
	}
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/?room=a", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || loc != e.Base()+"/?room=a" {
		t.Errorf("port 80: got %d to %q, want 308 to %s/?room=a", resp.StatusCode, loc, e.Base())
	}
}

// TestEdgeACMEUnreachable: with the CA down at start, TURN over UDP and TCP serves (on the edge
// port too), /readyz says why it is not ready, and TLS on the edge fails at once instead of
// hanging.
func TestEdgeACMEUnreachable(t *testing.T) {
	ca := pebbletest.New(t, pebbletest.Options{}) // never started
	cfg := acmeConfig(t, pebbletest.Name("down"), pebbletest.FreePort(t), ca)
	a, _, _ := startApp(t, cfg)

	deadline := time.Now().Add(30 * time.Second)
	for {
		status, code, msg := readyz(t, a)
		if status == http.StatusServiceUnavailable && code == "no-certificate" && strings.Contains(msg, "connection refused") {
			if !strings.Contains(msg, cfg.PublicHost) || !strings.Contains(msg, "attempt 1 failed") {
				t.Errorf("readyz message %q: want the name and the attempt", msg)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz: %d %s %q, want 503 no-certificate with the cause", status, code, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cred := a.secrets.Mint("down", time.Hour, time.Now())
	for _, l := range []struct{ network, addr string }{
		{"udp", a.turnAddrs.udp.String()}, {"tcp", a.turnAddrs.tcp.String()},
		{"udp", a.edgeUDP.String()}, {"tcp", a.edge.Addr().String()},
	} {
		c := turntest.Dial(t, l.network, l.addr, nil)
		if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
			t.Errorf("TURN over %s on %s while the CA is down: %v", l.network, l.addr, err)
		}
	}
	conn, err := net.Dial("tcp", a.edge.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tls.Client(conn, &tls.Config{ServerName: cfg.PublicHost, MinVersion: tls.VersionTLS12}).Handshake(); err == nil ||
		strings.Contains(err.Error(), "timeout") {
		t.Errorf("TLS on the edge without a certificate: %v, want a handshake failure at once", err)
	}
}

// TestEdgeACMEStartFails: a start that fails after the certificate manager was made (a port in
// use) stops it again: no goroutine of it is left.
func TestEdgeACMEStartFails(t *testing.T) {
	before := goleak.IgnoreCurrent()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ca := pebbletest.New(t, pebbletest.Options{}) // never asked
	cfg := acmeConfig(t, pebbletest.Name("fails"), pebbletest.FreePort(t), ca)
	cfg.HTTP.Listen = taken.Addr().String()
	comp, err := cfg.compile()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newApp(cfg, comp, slog.New(slog.NewTextHandler(io.Discard, nil)), readBuildInfo()); err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Fatalf("newApp with http.listen taken: %v, want an error naming it", err)
	}
	if err := goleak.Find(append(pebbletest.GoroutinesToIgnore(), before)...); err != nil {
		t.Errorf("left behind by the failed start: %v", err)
	}
}
