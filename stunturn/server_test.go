package stunturn_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/stunturn"
	"github.com/icebox-rtc/icebox/stunturn/turnclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var transports = []string{"udp", "tcp", "tls"}

// labConfig allows peers on 127.0.0.1, as a lab would with allowed_peer_cidrs.
func labConfig() *stunturn.Config {
	c := turntest.Config()
	c.AllowedPeerCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	return &c
}

func peer(a *net.UDPAddr) turnclient.PeerAddress {
	return turnclient.PeerAddress{Addr: a.AddrPort()}
}

// recvPayload waits for data from the relay and checks it.
func recvPayload(t *testing.T, c *turnclient.Client, want string) turnclient.Data {
	t.Helper()
	d, ok := c.Recv(5 * time.Second)
	if !ok {
		t.Fatalf("nothing came back through the relay, want %q", want)
	}
	if string(d.Payload) != want {
		t.Fatalf("got %q back, want %q", d.Payload, want)
	}
	return d
}

func TestRelayEveryTransport(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := turntest.Start(t, turntest.Options{Config: labConfig()})
			echo, echoed := turntest.Echo(t)
			c := turntest.Dial(t, tr, srv.Addr(tr), srv.TLSConfig)
			cred := srv.Credential("alice", time.Hour)
			relay, err := c.Allocate(cred.Username, cred.Password)
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			if relay.Addr() != netip.MustParseAddr("127.0.0.1") || relay.Port() < 49152 {
				t.Errorf("relayed address %v: want 127.0.0.1 and a port of the relay range", relay)
			}
			if err := c.CreatePermission(peer(echo)); err != nil {
				t.Fatalf("CreatePermission: %v", err)
			}

			// Send indication out, Data indication back.
			if err := c.Send(echo.AddrPort(), []byte("via indication")); err != nil {
				t.Fatal(err)
			}
			d := recvPayload(t, c, "via indication")
			if d.Peer != echo.AddrPort() || d.Channel != 0 {
				t.Errorf("got data from %v channel %#x, want a Data indication from %v", d.Peer, d.Channel, echo)
			}
			if got := <-echoed; string(got) != "via indication" {
				t.Errorf("the peer got %q", got)
			}

			// A bound channel both ways.
			if err := c.ChannelBind(0x4001, peer(echo)); err != nil {
				t.Fatalf("ChannelBind: %v", err)
			}
			if err := c.SendChannel(0x4001, []byte("via channel")); err != nil {
				t.Fatal(err)
			}
			if d := recvPayload(t, c, "via channel"); d.Channel != 0x4001 {
				t.Errorf("got data on channel %#x, want ChannelData on 0x4001", d.Channel)
			}
			if got := srv.Allocations(); got != 1 {
				t.Errorf("allocations: got %d, want 1", got)
			}
			if got := metric(t, srv.Registry, "icebox_turn_allocations", "transport", tr); got != 1 {
				t.Errorf("icebox_turn_allocations{transport=%q}: got %v, want 1", tr, got)
			}
			// Counted after the write returns, which may be after the echo came back.
			if got := waitMetric(t, srv.Registry, "icebox_turn_relayed_packets_total", "direction", "to_peer", 2); got != 2 {
				t.Errorf("relayed packets to the peer: got %v, want 2", got)
			}
			if err := c.Refresh(0); err != nil {
				t.Fatalf("Refresh 0: %v", err)
			}
			if got := srv.Allocations(); got != 0 {
				t.Errorf("allocations after Refresh 0: got %d, want 0", got)
			}
		})
	}
}

// pionClient connects pion's TURN client over transport.
func pionClient(t *testing.T, srv *turntest.Server, tr string, cred credentials.Credential) *turn.Client {
	t.Helper()
	var conn net.PacketConn
	switch tr {
	case "udp":
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = pc
	case "tcp":
		c, err := net.Dial("tcp", srv.TCP)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	case "tls":
		c, err := tls.Dial("tcp", srv.TLS, srv.TLSConfig)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: srv.Addr(tr),
		TURNServerAddr: srv.Addr(tr),
		Conn:           conn,
		Username:       cred.Username,
		Password:       cred.Password,
		Realm:          "icebox",
		LoggerFactory:  stunturn.NewLoggerFactory(discardLogger(), 1, 1),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		conn.Close()
	})
	return client
}

// TestPionClient: pion's own TURN client allocates and relays on every transport; it binds
// a channel after the first packets, so the later ones go over ChannelData.
func TestPionClient(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := turntest.Start(t, turntest.Options{Config: labConfig()})
			echo, _ := turntest.Echo(t)
			client := pionClient(t, srv, tr, srv.Credential("pion", time.Hour))
			relay, err := client.Allocate()
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			defer relay.Close()
			buf := make([]byte, 1500)
			for i := range 20 {
				msg := []byte{byte(i), 'p', 'i', 'o', 'n'}
				if _, err := relay.WriteTo(msg, echo); err != nil {
					t.Fatalf("WriteTo: %v", err)
				}
				_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := relay.ReadFrom(buf)
				if err != nil {
					t.Fatalf("packet %d: ReadFrom: %v", i, err)
				}
				if !bytes.Equal(buf[:n], msg) || from.String() != echo.String() {
					t.Fatalf("packet %d: got %q from %v, want %q from %v", i, buf[:n], from, msg, echo)
				}
				if i == 0 { // the rest go over the channel pion binds after the first packet
					waitFor(t, "pion's client binds a channel", func() bool {
						_, channels := srv.PermissionsAndChannels()
						return channels > 0
					})
				}
			}
		})
	}
}

func TestBindingWithoutCredentials(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			c := turntest.Dial(t, tr, srv.Addr(tr), srv.TLSConfig)
			mapped, resp, err := c.Binding()
			if err != nil {
				t.Fatalf("Binding: %v", err)
			}
			if want := c.LocalAddr().String(); mapped.String() != want {
				t.Errorf("XOR-MAPPED-ADDRESS: got %v, want %v", mapped, want)
			}
			if resp.Contains(stun.AttrSoftware) {
				t.Errorf("the response carries SOFTWARE")
			}
		})
	}
}

// TestUnauthenticated: a request without credentials gets 401 with REALM and NONCE, no
// SOFTWARE, and leaves nothing behind.
func TestUnauthenticated(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{})
	for _, tr := range transports {
		c := turntest.Dial(t, tr, srv.Addr(tr), srv.TLSConfig)
		resp, err := c.Roundtrip(stun.NewType(stun.MethodAllocate, stun.ClassRequest))
		if err != nil {
			t.Fatal(err)
		}
		var code stun.ErrorCodeAttribute
		if code.GetFrom(resp) != nil || code.Code != stun.CodeUnauthorized {
			t.Errorf("%s: got %v, want 401", tr, resp)
		}
		if !resp.Contains(stun.AttrRealm) || !resp.Contains(stun.AttrNonce) || resp.Contains(stun.AttrSoftware) {
			t.Errorf("%s: 401 must carry REALM and NONCE and no SOFTWARE: %v", tr, resp)
		}
	}
	if n := srv.PendingRequests(); n != 0 {
		t.Errorf("pending requests: got %d, want 0", n)
	}
	if srv.Allocations() != 0 || srv.QuotaUsers() != 0 {
		t.Errorf("state left: %d allocations, %d quota users", srv.Allocations(), srv.QuotaUsers())
	}
}

func TestCredentials(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{})
	now := time.Now()
	good := srv.Credential("carol", time.Hour)
	farUser := credentials.Username(now.Add(200*time.Hour), "carol")
	expiredUser := credentials.Username(now.Add(-time.Minute), "carol")
	for _, tc := range []struct {
		name, username, password, reason string
	}{
		{"wrong HMAC", good.Username, credentials.Password("not-the-secret", good.Username), "bad_hmac"},
		{"password of another username", good.Username, credentials.Password("secret", good.Username+"x"), "bad_hmac"},
		{"expired", expiredUser, credentials.Password("secret", expiredUser), "expired"},
		{"beyond max_ttl", farUser, credentials.Password("secret", farUser), "ttl_too_long"},
		{"not a REST username", "carol", credentials.Password("secret", "carol"), "malformed_username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, srv.Registry, "icebox_turn_auth_failures_total", "reason", tc.reason)
			c := turntest.Dial(t, "udp", srv.UDP, nil)
			if _, err := c.Allocate(tc.username, tc.password); !isErrorResponse(err) {
				t.Fatalf("Allocate: got %v, want an error response", err)
			}
			if got := metric(t, srv.Registry, "icebox_turn_auth_failures_total", "reason", tc.reason); got != before+1 {
				t.Errorf("auth failures %q: got %v, want %v", tc.reason, got, before+1)
			}
		})
	}
	c := turntest.Dial(t, "udp", srv.UDP, nil)
	if _, err := c.Allocate(good.Username, good.Password); err != nil {
		t.Fatalf("a good credential: %v", err)
	}
	if n := srv.PendingRequests(); n != 0 {
		t.Errorf("pending requests after the answers: got %d, want 0", n)
	}
}

func isErrorResponse(err error) bool {
	var e *turnclient.ErrorResponse
	return errors.As(err, &e)
}

func errorCode(err error) stun.ErrorCode {
	var e *turnclient.ErrorResponse
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// TestSecretRotation: a credential from the second secret allocates while that secret is listed,
// not after it is removed.
func TestSecretRotation(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{Secrets: []string{"new", "old"}})
	old := credentials.NewSecrets([]string{"old"}).Mint("dave", time.Hour, time.Now())
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(old.Username, old.Password); err != nil {
		t.Fatalf("a credential of the second secret: %v", err)
	}
	srv.Secrets.Set([]string{"new"})
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(old.Username, old.Password); !isErrorResponse(err) {
		t.Fatalf("after the old secret is removed: got %v, want an error response", err)
	}
	cur := srv.Credential("dave", time.Hour)
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(cur.Username, cur.Password); err != nil {
		t.Fatalf("a credential of the first secret: %v", err)
	}
}

func TestUserQuota(t *testing.T) {
	cfg := turntest.Config()
	cfg.UserQuota = 2
	srv := turntest.Start(t, turntest.Options{Config: &cfg})

	var erin []*turnclient.Client
	for i := range 2 {
		cred := srv.Credential("erin", time.Duration(i+1)*time.Hour) // two usernames, one user
		c := turntest.Dial(t, "udp", srv.UDP, nil)
		if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		erin = append(erin, c)
	}
	third := srv.Credential("erin", time.Hour)
	c3 := turntest.Dial(t, "udp", srv.UDP, nil)
	if _, err := c3.Allocate(third.Username, third.Password); errorCode(err) != stun.CodeAllocQuotaReached {
		t.Fatalf("third allocation of erin: got %v, want 486", err)
	}
	other := srv.Credential("frank", time.Hour)
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(other.Username, other.Password); err != nil {
		t.Fatalf("another user is not limited by erin's quota: %v", err)
	}
	if err := erin[0].Refresh(0); err != nil {
		t.Fatal(err)
	}
	if _, err := c3.Allocate(third.Username, third.Password); err != nil {
		t.Fatalf("after one of erin's allocations ended: %v", err)
	}

	// A username without USER part counts as itself.
	bare := credentials.Username(time.Now().Add(time.Hour), "")
	for i := range 2 {
		if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(bare, credentials.Password("secret", bare)); err != nil {
			t.Fatalf("bare username, allocation %d: %v", i+1, err)
		}
	}
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(bare, credentials.Password("secret", bare)); errorCode(err) != stun.CodeAllocQuotaReached {
		t.Fatalf("bare username, third allocation: got %v, want 486", err)
	}
	other2 := credentials.Username(time.Now().Add(2*time.Hour), "")
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(other2, credentials.Password("secret", other2)); err != nil {
		t.Fatalf("another bare username is another user: %v", err)
	}
}

func TestTotalQuota(t *testing.T) {
	cfg := turntest.Config()
	cfg.TotalQuota = 2
	srv := turntest.Start(t, turntest.Options{Config: &cfg})
	var clients []*turnclient.Client
	for i := range 2 {
		cred := srv.Credential("user"+string(rune('a'+i)), time.Hour)
		c := turntest.Dial(t, "udp", srv.UDP, nil)
		if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		clients = append(clients, c)
	}
	cred := srv.Credential("userc", time.Hour)
	c := turntest.Dial(t, "tcp", srv.TCP, nil)
	if _, err := c.Allocate(cred.Username, cred.Password); errorCode(err) != stun.CodeInsufficientCapacity {
		t.Fatalf("beyond total_quota: got %v, want 508", err)
	}
	if srv.QuotaUsers() != 2 {
		t.Errorf("quota users after a refused Allocate: got %d, want 2 (no slot leaked)", srv.QuotaUsers())
	}
	if err := clients[0].Refresh(0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
		t.Fatalf("after one allocation ended: %v", err)
	}
}

// TestRelayPortRange: the allocator scans the whole range, skipping ports other processes hold,
// and answers 508 when it is full.
func TestRelayPortRange(t *testing.T) {
	held, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	hp := held.LocalAddr().(*net.UDPAddr).Port
	cfg := turntest.Config()
	cfg.RelayPortMin, cfg.RelayPortMax = hp-1, hp+1 // three ports, the middle one taken
	srv := turntest.Start(t, turntest.Options{Config: &cfg})
	var ports []int
	for i := range 2 {
		cred := srv.Credential("u", time.Hour)
		relay, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(cred.Username, cred.Password)
		if err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		ports = append(ports, int(relay.Port()))
	}
	slices.Sort(ports)
	if want := []int{hp - 1, hp + 1}; !slices.Equal(ports, want) {
		t.Errorf("relay ports: got %v, want %v (the free ones)", ports, want)
	}
	cred := srv.Credential("u", time.Hour)
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(cred.Username, cred.Password); errorCode(err) != stun.CodeInsufficientCapacity {
		t.Fatalf("full range: got %v, want 508", err)
	}
	if got := metric(t, srv.Registry, "icebox_turn_allocate_refused_total", "reason", "no_relay_port"); got != 1 {
		t.Errorf("refusals for no relay port: got %v, want 1", got)
	}
}

// TestExpiredCredentialKeepsAllocation: once the credential of an allocation expires, the
// allocation still refreshes, creates permissions, binds channels and relays; a new Allocate
// with it is refused.
func TestExpiredCredentialKeepsAllocation(t *testing.T) {
	var later atomic.Int64 // how far the server's clock is ahead of the real one
	srv := turntest.Start(t, turntest.Options{Config: labConfig(),
		Now: func() time.Time { return time.Now().Add(time.Duration(later.Load())) }})
	echo1, _ := turntest.Echo(t)
	echo2, _ := turntest.Echo(t)
	cred := srv.Credential("gina", time.Hour)
	for _, tr := range []string{"udp", "tcp"} {
		c := turntest.Dial(t, tr, srv.Addr(tr), nil)
		if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
			t.Fatalf("%s: Allocate: %v", tr, err)
		}
		if err := c.CreatePermission(peer(echo1)); err != nil {
			t.Fatal(err)
		}
		defer func(tr string, c *turnclient.Client) {
			if err := c.Refresh(10 * time.Minute); err != nil {
				t.Errorf("%s: Refresh after expiry: %v", tr, err)
			}
			if err := c.CreatePermission(peer(echo2)); err != nil {
				t.Errorf("%s: CreatePermission to a new peer after expiry: %v", tr, err)
			}
			if err := c.ChannelBind(0x4002, peer(echo2)); err != nil {
				t.Errorf("%s: ChannelBind after expiry: %v", tr, err)
			}
			if err := c.SendChannel(0x4002, []byte("still here")); err != nil {
				t.Fatal(err)
			}
			recvPayload(t, c, "still here")
			if err := c.Send(echo1.AddrPort(), []byte("and here")); err != nil {
				t.Fatal(err)
			}
			recvPayload(t, c, "and here")
		}(tr, c)
	}
	later.Store(int64(2 * time.Hour)) // the credential expired
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(cred.Username, cred.Password); !isErrorResponse(err) {
		t.Fatalf("new Allocate with the expired credential: got %v, want an error response", err)
	}
}

func TestDrain(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{Config: labConfig()})
	echo, _ := turntest.Echo(t)
	cred := srv.Credential("hank", time.Hour)
	c := turntest.Dial(t, "udp", srv.UDP, nil)
	if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
		t.Fatal(err)
	}
	if err := c.CreatePermission(peer(echo)); err != nil {
		t.Fatal(err)
	}
	srv.Drain()
	for _, tr := range transports {
		if _, err := turntest.Dial(t, tr, srv.Addr(tr), srv.TLSConfig).Allocate(cred.Username, cred.Password); errorCode(err) != stun.CodeInsufficientCapacity {
			t.Errorf("%s: Allocate while draining: got %v, want 508", tr, err)
		}
	}
	if err := c.Refresh(10 * time.Minute); err != nil {
		t.Errorf("Refresh while draining: %v", err)
	}
	if err := c.Send(echo.AddrPort(), []byte("draining")); err != nil {
		t.Fatal(err)
	}
	recvPayload(t, c, "draining")
}

// TestShutdownClosesConnections: pion's Close leaves accepted connections open; icebox closes them.
func TestShutdownClosesConnections(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{})
	cred := srv.Credential("ivy", time.Hour)
	var clients []*turnclient.Client
	for _, tr := range []string{"tcp", "tls"} {
		c := turntest.Dial(t, tr, srv.Addr(tr), srv.TLSConfig)
		if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if _, _, err := c.Binding(); err == nil {
			t.Errorf("a connection still answers after shutdown")
		}
	}
}

// metric reads one series from reg: the sum over series whose label has the value.
func metric(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	return turntest.Metric(t, reg, name, label, value)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitFor polls cond until it holds, or fails the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// waitMetric polls a metric until it reaches want or 10 seconds pass, and returns its value.
func waitMetric(t *testing.T, reg *prometheus.Registry, name, label, value string, want float64) float64 {
	t.Helper()
	return turntest.WaitMetric(t, reg, name, label, value, want)
}

// TestUserQuotaByClient: with credentials that name no one (auth.mode none, token) the quota
// counts per client address, so fresh identities from one address share it; another address
// has its own; switched off (auth.mode reloaded to jwt), the user counts again, and the
// allocations held under the address still give their slot back when they end.
func TestUserQuotaByClient(t *testing.T) {
	cfg := turntest.Config()
	cfg.UserQuota = 2
	srv := turntest.Start(t, turntest.Options{Config: &cfg, QuotaByClient: true})
	from := func(addr string) *turnclient.Client {
		c, err := turnclient.Dial("udp", srv.UDP, turnclient.Options{LocalAddr: netip.MustParseAddr(addr)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	fresh := func(c *turnclient.Client) error {
		cred := srv.Credential(credentials.RandomUser(), time.Hour)
		_, err := c.Allocate(cred.Username, cred.Password)
		return err
	}
	var held []*turnclient.Client
	for i := range 2 {
		c := from("127.0.0.1")
		if err := fresh(c); err != nil {
			t.Fatalf("allocation %d from 127.0.0.1: %v", i+1, err)
		}
		held = append(held, c)
	}
	if err := fresh(from("127.0.0.1")); errorCode(err) != stun.CodeAllocQuotaReached {
		t.Fatalf("a third fresh identity from 127.0.0.1: got %v, want 486", err)
	}
	if err := fresh(from("127.0.0.2")); err != nil {
		t.Fatalf("another address has its own quota: %v", err)
	}
	srv.SetQuotaByClient(false)
	if err := fresh(from("127.0.0.1")); err != nil {
		t.Fatalf("counted per user again: %v", err)
	}
	srv.SetQuotaByClient(true)
	if err := held[0].Refresh(0); err != nil {
		t.Fatal(err)
	}
	if err := fresh(from("127.0.0.1")); err != nil {
		t.Fatalf("after one of the address's allocations ended: %v", err)
	}
	if err := fresh(from("127.0.0.1")); errorCode(err) != stun.CodeAllocQuotaReached {
		t.Fatalf("the address at its quota again: got %v, want 486", err)
	}
}
