// Package edgetest reaches an icebox edge port (edge.listen) in tests, on loopback whatever
// name it serves: HTTPS, WSS and TURN over TLS, TCP and UDP, verifying its certificate.
package edgetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// Target is an icebox edge port under test, reached on loopback whatever its name.
type Target struct {
	Addr  string         // the edge port, 127.0.0.1:PORT
	UDP   string         // edge.UDP_listen's address; "" when off
	Host  string         // public_host: the name in SNI, in the certificate and in the URIs
	Roots *x509.CertPool // trusts the certificate the edge serves
}

// Port is the edge port.
func (e Target) Port() string {
	_, p, _ := net.SplitHostPort(e.Addr)
	return p
}

// Base is the edge's URL, as a browser writes it.
func (e Target) Base() string { return "https://" + net.JoinHostPort(e.Host, e.Port()) }

// TLSConfig verifies the edge's certificate for its name.
func (e Target) TLSConfig() *tls.Config {
	return &tls.Config{ServerName: e.Host, RootCAs: e.Roots, MinVersion: tls.VersionTLS12}
}

// Dial reaches the edge whatever address a client asks for: the name resolves nowhere else.
func (e Target) Dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, e.Addr)
}

// Get fetches path over HTTPS from the edge, verifying its certificate; the body is read and
// closed.
func (e Target) Get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: e.TLSConfig(), DialContext: e.Dial, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(e.Base() + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", e.Base(), path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, body
}

// ICEConfig fetches /ice-config over the edge.
func (e Target) ICEConfig(t *testing.T) credentials.ICEConfig {
	t.Helper()
	resp, body := e.Get(t, "/ice-config") //nolint:bodyclose // Get read and closed it
	var c credentials.ICEConfig
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &c) != nil {
		t.Fatalf("/ice-config over the edge: %d %s", resp.StatusCode, body)
	}
	return c
}

// Join connects to signaling over WSS on the edge and joins room.
func (e Target) Join(t *testing.T, room string) *sigclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &websocket.Dialer{NetDialContext: e.Dial, TLSClientConfig: e.TLSConfig(), HandshakeTimeout: 10 * time.Second}
	ws := strings.Replace(e.Base(), "https", "wss", 1) + "/ws"
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

// TURNConn connects a TURN client to the edge over network: "tls" (verified), "tcp" or "udp"
// (edge.UDP_listen).
func (e Target) TURNConn(t *testing.T, network string) net.Conn {
	t.Helper()
	var conn net.Conn
	var err error
	switch network {
	case "tls":
		conn, err = tls.Dial("tcp", e.Addr, e.TLSConfig())
	case "tcp":
		conn, err = net.Dial("tcp", e.Addr)
	case "udp":
		conn, err = net.Dial("udp4", e.UDP)
	}
	if err != nil {
		t.Fatalf("TURN over %s to the edge: %v", network, err)
	}
	return conn
}

// Allocate makes an allocation with icebox's test client over network on the edge.
func (e Target) Allocate(t *testing.T, network string, cred credentials.ICEServer) {
	t.Helper()
	c := turntest.NewClient(t, network, e.TURNConn(t, network))
	if _, err := c.Allocate(cred.Username, cred.Credential); err != nil {
		t.Fatalf("allocate over %s on the edge: %v", network, err)
	}
}

// TURNURIs are the URIs of the iceServers entry with a credential, and that credential.
func TURNURIs(t *testing.T, c credentials.ICEConfig) ([]string, credentials.ICEServer) {
	t.Helper()
	for _, s := range c.ICEServers {
		if s.Username != "" {
			return s.URLs, s
		}
	}
	t.Fatalf("no TURN entry in %+v", c)
	return nil, credentials.ICEServer{}
}
