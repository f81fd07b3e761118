package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/turn/v4"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
	"github.com/icebox-rtc/icebox/stunturn"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// edgeTarget is an icebox edge port under test, reached on loopback whatever its name.
type edgeTarget struct {
	addr  string         // the edge port, 127.0.0.1:PORT
	udp   string         // edge.udp_listen's address; "" when off
	host  string         // public_host: the name in SNI, in the certificate and in the URIs
	roots *x509.CertPool // trusts the certificate the edge serves
}

func (e edgeTarget) port() string {
	_, p, _ := net.SplitHostPort(e.addr)
	return p
}

// base is the edge's URL, as a browser writes it.
func (e edgeTarget) base() string { return "https://" + net.JoinHostPort(e.host, e.port()) }

func (e edgeTarget) tlsConfig() *tls.Config {
	return &tls.Config{ServerName: e.host, RootCAs: e.roots, MinVersion: tls.VersionTLS12}
}

// dial reaches the edge whatever address a client asks for: the name resolves nowhere else.
func (e edgeTarget) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, e.addr)
}

// get fetches path over HTTPS from the edge, verifying its certificate.
func (e edgeTarget) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: e.tlsConfig(), DialContext: e.dial, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(e.base() + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", e.base(), path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// iceConfig fetches /ice-config over the edge.
func (e edgeTarget) iceConfig(t *testing.T) credentials.ICEConfig {
	t.Helper()
	resp, body := e.get(t, "/ice-config")
	var c credentials.ICEConfig
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &c) != nil {
		t.Fatalf("/ice-config over the edge: %d %s", resp.StatusCode, body)
	}
	return c
}

// join connects to signaling over WSS on the edge and joins room.
func (e edgeTarget) join(t *testing.T, room string) *sigclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &websocket.Dialer{NetDialContext: e.dial, TLSClientConfig: e.tlsConfig(), HandshakeTimeout: 10 * time.Second}
	ws := strings.Replace(e.base(), "https", "wss", 1) + "/ws"
	c, err := sigclient.Dial(ctx, ws, sigclient.Options{Dialer: d})
	if err != nil {
		t.Fatalf("wss %s: %v", ws, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Join(ctx, room, map[string]any{}); err != nil {
		t.Fatalf("join over wss: %v", err)
	}
	return c
}

// turnConn connects a TURN client to the edge over network: "tls" (verified), "tcp" or "udp"
// (edge.udp_listen).
func (e edgeTarget) turnConn(t *testing.T, network string) net.Conn {
	t.Helper()
	var conn net.Conn
	var err error
	switch network {
	case "tls":
		conn, err = tls.Dial("tcp", e.addr, e.tlsConfig())
	case "tcp":
		conn, err = net.Dial("tcp", e.addr)
	case "udp":
		conn, err = net.Dial("udp4", e.udp)
	}
	if err != nil {
		t.Fatalf("TURN over %s to the edge: %v", network, err)
	}
	return conn
}

// allocate makes an allocation with icebox's test client over network on the edge.
func (e edgeTarget) allocate(t *testing.T, network string, cred credentials.ICEServer) {
	t.Helper()
	c := turntest.NewClient(t, network, e.turnConn(t, network))
	if _, err := c.Allocate(cred.Username, cred.Credential); err != nil {
		t.Fatalf("allocate over %s on the edge: %v", network, err)
	}
}

// pionRelay is pion's TURN client over TLS on the edge with an allocation, relaying to an
// echo peer.
type pionRelay struct {
	client *turn.Client
	relay  net.PacketConn
	echo   *net.UDPAddr
}

func (e edgeTarget) pionOverTLS(t *testing.T, cred credentials.ICEServer) *pionRelay {
	t.Helper()
	conn := e.turnConn(t, "tls")
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: e.addr, TURNServerAddr: e.addr, Conn: turn.NewSTUNConn(conn),
		Username: cred.Username, Password: cred.Credential,
		LoggerFactory: stunturn.NewLoggerFactory(slog.New(slog.NewTextHandler(io.Discard, nil)), 1, 1),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("pion: allocate over TLS on the edge: %v", err)
	}
	t.Cleanup(func() {
		_ = relay.Close()
		client.Close()
		_ = conn.Close()
	})
	echo, _ := turntest.Echo(t)
	return &pionRelay{client: client, relay: relay, echo: echo}
}

// roundtrip sends payload to the echo peer through the relay and waits for it back.
func (p *pionRelay) roundtrip(t *testing.T, payload string) {
	t.Helper()
	buf := make([]byte, 1500)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := p.relay.WriteTo([]byte(payload), p.echo); err != nil {
			t.Fatalf("relay write: %v", err)
		}
		_ = p.relay.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := p.relay.ReadFrom(buf)
		if err == nil && string(buf[:n]) == payload {
			return
		}
	}
	t.Fatalf("%q did not come back through the relay", payload)
}

// turnURIs are the URIs of the iceServers entry with a credential, and that credential.
func turnURIs(t *testing.T, c credentials.ICEConfig) ([]string, credentials.ICEServer) {
	t.Helper()
	for _, s := range c.ICEServers {
		if s.Username != "" {
			return s.URLs, s
		}
	}
	t.Fatalf("no TURN entry in %+v", c)
	return nil, credentials.ICEServer{}
}

// checkOrder fails unless every UDP URI comes before every TCP one, and those before TLS.
func checkOrder(t *testing.T, uris []string) {
	t.Helper()
	rank := func(u string) int {
		switch {
		case strings.HasPrefix(u, "turns:"):
			return 2
		case strings.HasSuffix(u, "transport=tcp"):
			return 1
		}
		return 0
	}
	for i := 1; i < len(uris); i++ {
		if rank(uris[i]) < rank(uris[i-1]) {
			t.Errorf("URIs %v: %s after %s, want UDP before TCP before TLS", uris, uris[i], uris[i-1])
		}
	}
}

// exercise uses every service of the edge port once, as the clients it is for do.
func (e edgeTarget) exercise(t *testing.T) {
	t.Helper()
	cfg := e.iceConfig(t)
	uris, cred := turnURIs(t, cfg)
	checkOrder(t, uris)
	turns := "turns:" + net.JoinHostPort(e.host, e.port()) + "?transport=tcp"
	want := []string{turns}
	if e.udp != "" {
		_, udpPort, _ := net.SplitHostPort(e.udp)
		want = append(want, "turn:"+net.JoinHostPort(e.host, udpPort)+"?transport=udp")
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(uris, " "), w) {
			t.Errorf("/ice-config lists %v, want %s among them", uris, w)
		}
	}

	t.Run("https page", func(t *testing.T) {
		resp, body := e.get(t, "/")
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("<html")) || resp.ProtoMajor != 2 {
			t.Errorf("demo page: %s %d, %d bytes", resp.Proto, resp.StatusCode, len(body))
		}
	})
	t.Run("wss signaling", func(t *testing.T) {
		c := e.join(t, "edge-room")
		if len(c.Welcome().ICEServers) == 0 {
			t.Errorf("welcome without iceServers")
		}
	})
	t.Run("turn over tls, pion", func(t *testing.T) { e.pionOverTLS(t, cred).roundtrip(t, "through the edge") })
	t.Run("turn over tcp", func(t *testing.T) { e.allocate(t, "tcp", cred) })
	if e.udp != "" {
		t.Run("turn over udp", func(t *testing.T) { e.allocate(t, "udp", cred) })
	}
	t.Run("tls without sni", func(t *testing.T) {
		// Firefox's turns: sends no SNI: the edge answers with public_host's certificate.
		conn, err := tls.Dial("tcp", e.addr, &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, //nolint:gosec // verified below, against public_host
			VerifyConnection: func(cs tls.ConnectionState) error {
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: e.host, Roots: e.roots, Intermediates: inter})
				return err
			}})
		if err != nil {
			t.Fatalf("TLS without SNI: %v", err)
		}
		c := turntest.NewClient(t, "tls", conn)
		if _, err := c.Allocate(cred.Username, cred.Credential); err != nil {
			t.Errorf("allocate over TLS without SNI: %v", err)
		}
	})
	t.Run("plain http redirected", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{DialContext: e.dial}, Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		defer c.CloseIdleConnections()
		resp, err := c.Get("http://" + net.JoinHostPort(e.host, e.port()) + "/?room=r1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || loc != e.base()+"/?room=r1" {
			t.Errorf("got %d to %q, want 308 to %s/?room=r1", resp.StatusCode, loc, e.base())
		}
	})
}

// edgeConfig is testConfig with the edge port on loopback, relays allowed to loopback peers.
func edgeConfig(t *testing.T) Config {
	t.Helper()
	cfg := testConfig()
	cfg.Edge.Listen = "127.0.0.1:0"
	cfg.Edge.UDPListen = "127.0.0.1:0"
	cfg.Credentials.Secrets = []string{"edge-secret"}
	cfg.TURN.AllowedPeerCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	return cfg
}

// TestEdgeCertificateFiles: with http.tls_cert, one edge port serves HTTPS (HTTP/2), WSS, TURN
// over TLS, TCP and (edge.udp_listen) UDP, a client without SNI, and redirects plain HTTP; icebox
// check tests it all and says what strict networks keep.
func TestEdgeCertificateFiles(t *testing.T) {
	cfg := edgeConfig(t)
	cfg.HTTP.TLSCert, cfg.HTTP.TLSKey = turntest.CertificateFiles(t)
	a, _, _ := startApp(t, cfg)
	pem, err := os.ReadFile(cfg.HTTP.TLSCert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	e := edgeTarget{addr: a.edge.Addr().String(), udp: a.edgeUDP.String(), host: "127.0.0.1", roots: roots}
	e.exercise(t)

	code, out := runCheck(t, "--insecure", e.base())
	if code != 0 {
		t.Fatalf("icebox check: exit %d:\n%s", code, out)
	}
	_, udpPort, _ := net.SplitHostPort(e.udp)
	for _, want := range []string{
		"ok    turns:127.0.0.1:" + e.port() + "?transport=tcp",
		"ok    turn:127.0.0.1:" + e.port() + "?transport=tcp", // the edge's plain TCP, not in /ice-config
		"ok    turn:127.0.0.1:" + udpPort + "?transport=udp",
		"paths on strict networks",
		"UDP blocked", "turns:127.0.0.1:" + e.port(),
		"only port 443 open                           none: calls from such networks fail",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("icebox check output lacks %q:\n%s", want, out)
		}
	}
}

// TestPageLogLines: icebox logs the URL to open, and warns in one line when the page there is
// no secure context for browsers on other machines.
func TestPageLogLines(t *testing.T) {
	cert, key := turntest.CertificateFiles(t)
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		url    string // the URL logged; ":EDGE" and ":HTTP" stand for the bound ports
		warn   string // "" for no warning
	}{
		{"localhost over http", func(*Config) {}, "http://127.0.0.1:HTTP/", ""},
		{"plain http for other machines", func(c *Config) { c.PublicHost = "turn.example.com" }, "http://turn.example.com:HTTP/",
			"the page is plain http: browsers on other machines refuse it camera and microphone"},
		{"https at an ip", func(c *Config) {
			c.PublicHost = "203.0.113.9"
			c.Edge.Listen = "127.0.0.1:0"
			c.HTTP.TLSCert, c.HTTP.TLSKey = cert, key
		}, "https://203.0.113.9:EDGE/", "the page is https at an IP address"},
		{"https at a name", func(c *Config) {
			c.PublicHost = "turn.example.com"
			c.Edge.Listen = "127.0.0.1:0"
			c.HTTP.TLSCert, c.HTTP.TLSKey = cert, key
		}, "https://turn.example.com:EDGE/", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.mutate(&cfg)
			var logs bytes.Buffer
			comp, err := cfg.compile()
			if err != nil {
				t.Fatal(err)
			}
			a, err := newApp(cfg, comp, slog.New(slog.NewJSONHandler(&logs, nil)), readBuildInfo())
			if err != nil {
				t.Fatal(err)
			}
			defer a.closeAll()
			a.logServing()
			want := strings.Replace(tc.url, "HTTP", portOf(a.http.addr()), 1)
			if a.edge != nil {
				want = strings.Replace(want, "EDGE", portOf(a.edge.Addr()), 1)
			}
			var opened, warnings []string
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if m["msg"] == "open in a browser" {
					opened = append(opened, m["url"].(string))
				}
				if msg, _ := m["msg"].(string); strings.HasPrefix(msg, "the page is") {
					warnings = append(warnings, msg)
				}
			}
			if len(opened) != 1 || opened[0] != want {
				t.Errorf("open in a browser: %v, want %s", opened, want)
			}
			switch {
			case tc.warn == "" && len(warnings) > 0:
				t.Errorf("warned %q, want no warning", warnings)
			case tc.warn != "" && (len(warnings) != 1 || !strings.HasPrefix(warnings[0], tc.warn)):
				t.Errorf("warnings %q, want one saying %q", warnings, tc.warn)
			}
		})
	}
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// TestCheckStrictNetworks: the strict-network summary of icebox check names what works without
// UDP, on port 443 alone and with TLS alone.
func TestCheckStrictNetworks(t *testing.T) {
	var out strings.Builder
	c := &checker{base: &url.URL{Scheme: "https", Host: "turn.example.com"}, out: &out}
	c.strictNetworks([]string{
		"turn:turn.example.com:3478?transport=udp", "turn:turn.example.com:443?transport=udp",
		"turn:turn.example.com:3478?transport=tcp", "turns:turn.example.com:443?transport=tcp",
		"turn:turn.example.com:443?transport=tcp",
	})
	for _, want := range []string{
		"UDP blocked                                  turn:turn.example.com:3478?transport=tcp, turns:turn.example.com:443?transport=tcp, turn:turn.example.com:443?transport=tcp",
		"only port 443 open                           turn:turn.example.com:443?transport=udp, turns:turn.example.com:443?transport=tcp, turn:turn.example.com:443?transport=tcp",
		"only TLS on port 443                         turns:turn.example.com:443?transport=tcp",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if got := c.edgePlainTCP([]string{"turns:turn.example.com:443?transport=tcp", "turns:turn.example.com:5349?transport=tcp"}); len(got) != 1 ||
		got[0] != "turn:turn.example.com:443?transport=tcp" {
		t.Errorf("edge plain TCP URIs: %v, want only the one on the URL's port 443", got)
	}
}
