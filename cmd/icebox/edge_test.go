package main

import (
	"bytes"
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

	"github.com/pion/turn/v4"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/edge/edgetest"
	"github.com/icebox-rtc/icebox/stunturn"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// pionRelay is pion's TURN client over TLS on the edge with an allocation, relaying to an
// echo peer.
type pionRelay struct {
	client *turn.Client
	relay  net.PacketConn
	echo   *net.UDPAddr
}

func pionOverTLS(t *testing.T, e edgetest.Target, cred credentials.ICEServer) *pionRelay {
	t.Helper()
	conn := e.TURNConn(t, "tls")
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: e.Addr, TURNServerAddr: e.Addr, Conn: turn.NewSTUNConn(conn),
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
func exercise(t *testing.T, e edgetest.Target) {
	t.Helper()
	cfg := e.ICEConfig(t)
	uris, cred := edgetest.TURNURIs(t, cfg)
	checkOrder(t, uris)
	turns := "turns:" + net.JoinHostPort(e.Host, e.Port()) + "?transport=tcp"
	want := []string{turns}
	if e.UDP != "" {
		_, udpPort, _ := net.SplitHostPort(e.UDP)
		want = append(want, "turn:"+net.JoinHostPort(e.Host, udpPort)+"?transport=udp")
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(uris, " "), w) {
			t.Errorf("/ice-config lists %v, want %s among them", uris, w)
		}
	}

	t.Run("https page", func(t *testing.T) {
		resp, body := e.Get(t, "/")
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("<html")) || resp.ProtoMajor != 2 {
			t.Errorf("demo page: %s %d, %d bytes", resp.Proto, resp.StatusCode, len(body))
		}
	})
	t.Run("wss signaling", func(t *testing.T) {
		c := e.Join(t, "edge-room")
		if len(c.Welcome().ICEServers) == 0 {
			t.Errorf("welcome without iceServers")
		}
	})
	t.Run("turn over tls, pion", func(t *testing.T) { pionOverTLS(t, e, cred).roundtrip(t, "through the edge") })
	t.Run("turn over tcp", func(t *testing.T) { e.Allocate(t, "tcp", cred) })
	if e.UDP != "" {
		t.Run("turn over udp", func(t *testing.T) { e.Allocate(t, "udp", cred) })
	}
	t.Run("tls without sni", func(t *testing.T) {
		// Firefox's turns: sends no SNI: the edge answers with public_host's certificate.
		conn, err := tls.Dial("tcp", e.Addr, &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, //nolint:gosec // verified below, against public_host
			VerifyConnection: func(cs tls.ConnectionState) error {
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: e.Host, Roots: e.Roots, Intermediates: inter})
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
		c := &http.Client{Transport: &http.Transport{DialContext: e.Dial}, Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		defer c.CloseIdleConnections()
		resp, err := c.Get("http://" + net.JoinHostPort(e.Host, e.Port()) + "/?room=r1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || loc != e.Base()+"/?room=r1" {
			t.Errorf("got %d to %q, want 308 to %s/?room=r1", resp.StatusCode, loc, e.Base())
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
	e := edgetest.Target{Addr: a.edge.Addr().String(), UDP: a.edgeUDP.String(), Host: "127.0.0.1", Roots: roots}
	exercise(t, e)

	code, out := runCheck(t, "--insecure", e.Base())
	if code != 0 {
		t.Fatalf("icebox check: exit %d:\n%s", code, out)
	}
	_, udpPort, _ := net.SplitHostPort(e.UDP)
	for _, want := range []string{
		"ok    turns:127.0.0.1:" + e.Port() + "?transport=tcp",
		"ok    turn:127.0.0.1:" + e.Port() + "?transport=tcp", // the edge's plain TCP, not in /ice-config
		"ok    turn:127.0.0.1:" + udpPort + "?transport=udp",
		"paths on strict networks",
		"UDP blocked", "turns:127.0.0.1:" + e.Port(),
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
