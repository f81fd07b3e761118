package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/spf13/cobra"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
	"github.com/icebox-rtc/icebox/stunturn"
)

func newCheckCmd(stdout io.Writer) *cobra.Command {
	var token string
	var insecure bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check URL",
		Short: "Self-test a running icebox from the client side",
		Long: `Check a running icebox the way a client uses it: fetch /ice-config, a STUN Binding on
each stun: URI (printing the mapped address), a TURN Allocate on each turn:/turns: URI
(and plain TURN over TCP on the edge port, the port of URL that also serves turns:),
data between two of its own allocations through the relay, and a signaling join.
Prints one line per check and exits 1 naming every check that failed, then which of the
working paths a strict network (UDP blocked, only port 443, only TLS) would still leave.

URL is the icebox base URL, e.g. https://icebox.example.com (the edge port) or
http://icebox.example.com:8080.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			base, err := url.Parse(strings.TrimRight(args[0], "/"))
			if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
				return &configError{problems: []string{fmt.Sprintf("URL %q: want http(s)://host[:port]", args[0])}}
			}
			c := &checker{base: base, token: token, insecure: insecure, timeout: timeout, out: stdout}
			if failed := c.run(cmd.Context()); len(failed) > 0 {
				return &runtimeError{fmt.Errorf("%d check(s) failed: %s", len(failed), strings.Join(failed, ", "))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "API key or JWT, when auth.mode is token or jwt")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "skip TLS certificate verification (self-signed labs)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "time limit of each check")
	return cmd
}

// checker runs the checks of icebox check against one icebox.
type checker struct {
	base     *url.URL
	token    string
	insecure bool
	timeout  time.Duration
	out      io.Writer
	failed   []string
}

func (c *checker) report(name string, err error, format string, args ...any) {
	if err != nil {
		c.failed = append(c.failed, name)
		fmt.Fprintf(c.out, "FAIL  %-44s %v\n", name, err)
		return
	}
	fmt.Fprintf(c.out, "ok    %-44s %s\n", name, fmt.Sprintf(format, args...))
}

func (c *checker) tlsConfig(serverName string) *tls.Config {
	return &tls.Config{ServerName: serverName, InsecureSkipVerify: c.insecure, MinVersion: tls.VersionTLS12} //nolint:gosec // --insecure asks for it
}

// run runs every check and returns the names of those that failed.
func (c *checker) run(ctx context.Context) []string {
	cfg, err := c.iceConfig(ctx)
	c.report("ice-config", err, "%d iceServers, credential valid until %s", len(cfg.ICEServers), cfg.ExpiresAt.Format(time.RFC3339))
	if err == nil {
		var cred credentials.ICEServer
		var turnURIs []string
		for _, s := range cfg.ICEServers {
			for _, u := range s.URLs {
				if strings.HasPrefix(u, "stun:") {
					mapped, err := c.stunBinding(u)
					c.report(u, err, "mapped address %s", mapped)
				} else {
					turnURIs = append(turnURIs, u)
					cred = s
				}
			}
		}
		var working []string
		for _, u := range append(turnURIs, c.edgePlainTCP(turnURIs)...) {
			relayed, err := c.allocate(u, cred, nil)
			c.report(u, err, "relayed address %s", relayed)
			if err == nil {
				working = append(working, u)
			}
		}
		if len(working) > 0 {
			rtt, err := c.relayData(working[0], cred)
			c.report("relay data", err, "two allocations on %s exchanged data, round trip %v", working[0], rtt.Round(time.Microsecond))
		} else {
			c.report("relay data", errors.New("no TURN URI allocated"), "")
		}
		c.strictNetworks(working)
	}
	peer, room, err := c.signaling(ctx)
	c.report("signaling", err, "joined room %s as peer %s", room, peer)
	return c.failed
}

// basePort is the port of the URL checked.
func (c *checker) basePort() string {
	if p := c.base.Port(); p != "" {
		return p
	}
	if c.base.Scheme == "https" {
		return "443"
	}
	return "80"
}

// edgePlainTCP are the plain TURN over TCP URIs of the edge port: a turns: URI on the port of
// the URL checked is the edge port, which takes TURN without TLS too (not listed in
// /ice-config: browsers that reach TCP 443 reach TLS on it).
func (c *checker) edgePlainTCP(uris []string) []string {
	var out []string
	for _, u := range uris {
		t, err := parseICEURI(u)
		if err != nil || t.scheme != "turns" {
			continue
		}
		if _, port, _ := net.SplitHostPort(t.addr); port == c.basePort() {
			out = append(out, "turn:"+t.addr+"?transport=tcp")
		}
	}
	return out
}

// strictNetworks prints which of the TURN URIs that worked a network stricter than this one
// would still let through.
func (c *checker) strictNetworks(working []string) {
	var tcp, port443, tls443 []string
	for _, u := range working {
		t, err := parseICEURI(u)
		if err != nil {
			continue
		}
		_, port, _ := net.SplitHostPort(t.addr)
		if t.transport != "udp" {
			tcp = append(tcp, u)
		}
		if port == "443" {
			port443 = append(port443, u)
			if t.transport == "tls" {
				tls443 = append(tls443, u)
			}
		}
	}
	fmt.Fprintln(c.out, "paths on strict networks (of the TURN URIs that worked):")
	for _, n := range []struct {
		network string
		uris    []string
	}{
		{"UDP blocked", tcp},
		{"only port 443 open", port443},
		{"only TLS on port 443", tls443},
	} {
		what := strings.Join(n.uris, ", ")
		if len(n.uris) == 0 {
			what = "none: calls from such networks fail; serve TURN on the edge port (edge.listen \":443\", edge.udp_listen \":443\")"
		}
		fmt.Fprintf(c.out, "      %-44s %s\n", n.network, what)
	}
}

func (c *checker) httpClient() *http.Client {
	return &http.Client{Timeout: c.timeout, Transport: &http.Transport{TLSClientConfig: c.tlsConfig(c.base.Hostname())}}
}

func (c *checker) iceConfig(ctx context.Context) (credentials.ICEConfig, error) {
	var cfg credentials.ICEConfig
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/ice-config", nil)
	if err != nil {
		return cfg, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return cfg, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
			return cfg, fmt.Errorf("%d %s: %s", resp.StatusCode, e.Error.Code, e.Error.Message)
		}
		return cfg, fmt.Errorf("%s", resp.Status)
	}
	if err := json.Unmarshal(body, &cfg); err != nil {
		return cfg, fmt.Errorf("not an ice-config: %w", err)
	}
	if len(cfg.ICEServers) == 0 {
		return cfg, errors.New("no iceServers")
	}
	return cfg, nil
}

// turnURI is a parsed stun:/turn:/turns: URI.
type turnURI struct {
	scheme, addr, transport, host string
}

func parseICEURI(u string) (turnURI, error) {
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok {
		return turnURI{}, fmt.Errorf("%q is not a stun:/turn: URI", u)
	}
	hostport, query, _ := strings.Cut(rest, "?")
	t := turnURI{scheme: scheme, transport: "udp"}
	if scheme == "turns" {
		t.transport = "tls"
	}
	if q, err := url.ParseQuery(query); err == nil && q.Get("transport") == "tcp" && scheme == "turn" {
		t.transport = "tcp"
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), "3478"
		if scheme == "turns" {
			port = "5349"
		}
	}
	t.host, t.addr = host, net.JoinHostPort(host, port)
	return t, nil
}

func (c *checker) stunBinding(uri string) (string, error) {
	t, err := parseICEURI(uri)
	if err != nil {
		return "", err
	}
	conn, err := net.DialTimeout("udp", t.addr, c.timeout)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	deadline := time.Now().Add(c.timeout)
	buf := make([]byte, 1500)
	for rto := 250 * time.Millisecond; time.Now().Before(deadline); rto *= 2 {
		if _, err := conn.Write(req.Raw); err != nil {
			return "", err
		}
		_ = conn.SetReadDeadline(time.Now().Add(min(rto, time.Until(deadline))))
		n, err := conn.Read(buf)
		if err != nil {
			continue
		}
		resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if resp.Decode() != nil || resp.TransactionID != req.TransactionID {
			continue
		}
		var mapped stun.XORMappedAddress
		if err := mapped.GetFrom(resp); err != nil {
			return "", fmt.Errorf("binding response without XOR-MAPPED-ADDRESS: %w", err)
		}
		return mapped.String(), nil
	}
	return "", fmt.Errorf("no STUN response from %s within %v", t.addr, c.timeout)
}

// turnClient connects pion's TURN client over the URI's transport.
func (c *checker) turnClient(uri string, cred credentials.ICEServer) (*turn.Client, net.PacketConn, error) {
	t, err := parseICEURI(uri)
	if err != nil {
		return nil, nil, err
	}
	var conn net.PacketConn
	switch t.transport {
	case "udp":
		conn, err = net.ListenPacket("udp", ":0")
	case "tcp":
		var tc net.Conn
		if tc, err = net.DialTimeout("tcp", t.addr, c.timeout); err == nil {
			conn = turn.NewSTUNConn(tc)
		}
	case "tls":
		var tc *tls.Conn
		dialer := &net.Dialer{Timeout: c.timeout}
		if tc, err = tls.DialWithDialer(dialer, "tcp", t.addr, c.tlsConfig(t.host)); err == nil {
			conn = turn.NewSTUNConn(tc)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: t.addr, TURNServerAddr: t.addr, Conn: conn,
		Username: cred.Username, Password: cred.Credential,
		LoggerFactory: stunturn.NewLoggerFactory(slog.New(slog.NewTextHandler(io.Discard, nil)), 1, 1),
	})
	if err == nil {
		err = client.Listen()
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return client, conn, nil
}

// allocate makes one allocation on uri; keep, when set, receives it open (else it is closed).
func (c *checker) allocate(uri string, cred credentials.ICEServer, keep func(relay net.PacketConn, closeAll func())) (string, error) {
	client, conn, err := c.turnClient(uri, cred)
	if err != nil {
		return "", err
	}
	closeAll := func() {
		client.Close()
		_ = conn.Close()
	}
	type result struct {
		relay net.PacketConn
		err   error
	}
	done := make(chan result, 1)
	go func() {
		r, err := client.Allocate()
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			closeAll()
			return "", r.err
		}
		addr := r.relay.LocalAddr().String()
		if keep != nil {
			keep(r.relay, func() { _ = r.relay.Close(); closeAll() })
		} else {
			_ = r.relay.Close()
			closeAll()
		}
		return addr, nil
	case <-time.After(c.timeout):
		closeAll()
		return "", fmt.Errorf("no Allocate response within %v", c.timeout)
	}
}

// relayData makes two allocations on uri and sends data from one to the other and back, through
// the relay both ways: what two browsers behind NATs do.
func (c *checker) relayData(uri string, cred credentials.ICEServer) (time.Duration, error) {
	var relays []net.PacketConn
	var release []func()
	defer func() {
		for _, f := range release {
			f()
		}
	}()
	for range 2 {
		if _, err := c.allocate(uri, cred, func(r net.PacketConn, closeAll func()) {
			relays = append(relays, r)
			release = append(release, closeAll)
		}); err != nil {
			return 0, err
		}
	}
	a, b := relays[0], relays[1]
	ping := make([]byte, 16)
	_, _ = rand.Read(ping)
	deadline := time.Now().Add(c.timeout)
	buf := make([]byte, 1500)
	start := time.Now()
	for time.Now().Before(deadline) {
		// Each side's first write also creates its permission for the other.
		if _, err := b.WriteTo([]byte("hello"), a.LocalAddr()); err != nil {
			return 0, err
		}
		if _, err := a.WriteTo(ping, b.LocalAddr()); err != nil {
			return 0, err
		}
		_ = b.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := b.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], ping) {
			continue
		}
		if _, err := b.WriteTo(buf[:n], a.LocalAddr()); err != nil {
			return 0, err
		}
		_ = a.SetReadDeadline(time.Now().Add(time.Until(deadline)))
		for {
			n, _, err := a.ReadFrom(buf)
			if err != nil {
				return 0, fmt.Errorf("no answer through the relay: %w", err)
			}
			if bytes.Equal(buf[:n], ping) {
				return time.Since(start), nil
			}
		}
	}
	return 0, fmt.Errorf("no data crossed between %s and %s within %v", a.LocalAddr(), b.LocalAddr(), c.timeout)
}

func (c *checker) signaling(ctx context.Context) (peer, room string, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ws := *c.base
	ws.Scheme = strings.Replace(ws.Scheme, "http", "ws", 1)
	ws.Path += "/ws"
	dialer := *websocket.DefaultDialer
	dialer.TLSClientConfig = c.tlsConfig(c.base.Hostname())
	client, err := sigclient.Dial(ctx, ws.String(), sigclient.Options{Token: c.token, Dialer: &dialer})
	if err != nil {
		return "", "", err
	}
	defer func() { _ = client.CloseNormally() }()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	room = "icebox-check-" + hex.EncodeToString(b)
	if _, err := client.Join(ctx, room, map[string]any{"check": true}); err != nil {
		return "", "", err
	}
	if err := client.Leave(ctx); err != nil {
		return "", "", err
	}
	return client.Welcome().Peer, room, nil
}
