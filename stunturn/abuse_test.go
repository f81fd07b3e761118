package stunturn_test

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/icebox-rtc/icebox/stunturn/turnclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// Tests of what one client can do to everybody else on a public relay: each attack runs
// against a real server on loopback with icebox's raw TURN client, which sends exactly the
// requests an attacker would.

// publicPeers are n distinct public addresses (permissions only: nothing is ever sent to them).
func publicPeers(from, n int) []stun.Setter {
	peers := make([]stun.Setter, n)
	for i := range peers {
		k := from + i
		peers[i] = turnclient.PeerAddress{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{93, 184, byte(k >> 8), byte(k)}), 443)}
	}
	return peers
}

// TestPermissionFlood: one allocation cannot hold more than turn.max_permissions permissions,
// however many peers it asks for per request and however often; a refused request keeps
// nothing, not even the peers of it that were allowed; denied peers get 403.
func TestPermissionFlood(t *testing.T) {
	cfg := turntest.Config()
	cfg.MaxPermissions = 64
	srv := turntest.Start(t, turntest.Options{Config: &cfg})
	for _, tr := range []string{"udp", "tcp"} {
		t.Run(tr, func(t *testing.T) {
			c := turntest.Dial(t, tr, srv.Addr(tr), nil)
			cred := srv.Credential("flood-"+tr, time.Hour)
			if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
				t.Fatal(err)
			}
			perms := func() int {
				p, _ := srv.PermissionsAndChannels()
				return p
			}
			base := perms()
			createPermission := func(peers []stun.Setter) error {
				_, err := c.Authenticated(stun.MethodCreatePermission, peers...)
				return err
			}
			if err := createPermission(publicPeers(0, 100)); errorCode(err) != stun.CodeInsufficientCapacity {
				t.Fatalf("100 peers in one request: got %v, want 508", err)
			}
			denied := turnclient.PeerAddress{Addr: netip.MustParseAddrPort("10.0.0.1:9")}
			if err := createPermission(append(publicPeers(0, 10), denied)); errorCode(err) != stun.CodeForbidden {
				t.Fatalf("10 peers and a denied one: got %v, want 403", err)
			}
			if got := perms(); got != base {
				t.Fatalf("after refused requests: %d permissions, want %d (nothing kept)", got-base, 0)
			}
			for i := range 6 {
				if err := createPermission(publicPeers(10*i, 10)); err != nil {
					t.Fatalf("request %d of 10 peers: %v", i, err)
				}
			}
			if err := createPermission(publicPeers(60, 10)); errorCode(err) != stun.CodeInsufficientCapacity {
				t.Fatalf("60 + 10 permissions: got %v, want 508", err)
			}
			// 6 already held and 4 new ones: exactly the limit.
			if err := createPermission(publicPeers(54, 10)); err != nil {
				t.Fatalf("up to the limit: %v", err)
			}
			if err := createPermission(publicPeers(0, 64)); err != nil {
				t.Errorf("refreshing held permissions at the limit: %v", err)
			}
			if err := c.ChannelBind(0x4000, turnclient.PeerAddress{Addr: netip.MustParseAddrPort("93.185.0.1:443")}); errorCode(err) != stun.CodeInsufficientCapacity {
				t.Errorf("a channel to a new peer at the limit: got %v, want 508", err)
			}
			// The flood itself: every request refused, the count stays at the limit.
			for i := range 200 {
				if err := createPermission(publicPeers(1000+100*i, 100)); errorCode(err) != stun.CodeInsufficientCapacity {
					t.Fatalf("flood request %d: got %v, want 508", i, err)
				}
			}
			if got := perms() - base; got != 64 {
				t.Errorf("after the flood: %d permissions, want 64", got)
			}
		})
	}
	if got := metric(t, srv.Registry, "icebox_turn_permissions_denied_total", "reason", "max_permissions"); got < 2*201 {
		t.Errorf("icebox_turn_permissions_denied_total{reason=max_permissions}: got %v, want at least %d", got, 2*201)
	}
}

// TestPermissionsUnlimited: turn.max_permissions 0 lifts the limit.
func TestPermissionsUnlimited(t *testing.T) {
	cfg := turntest.Config()
	cfg.MaxPermissions = 0
	srv := turntest.Start(t, turntest.Options{Config: &cfg, NoTLS: true})
	c := turntest.Dial(t, "udp", srv.UDP, nil)
	cred := srv.Credential("many", time.Hour)
	if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Authenticated(stun.MethodCreatePermission, publicPeers(100*i, 100)...); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if p, _ := srv.PermissionsAndChannels(); p != 300 {
		t.Errorf("got %d permissions, want 300", p)
	}
}

// TestChannelBindChecks: channel numbers outside 0x4000-0x4FFF get 400, a denied peer 403,
// more channels than turn.max_channels 508, and none of them binds anything; bound channels
// keep relaying.
func TestChannelBindChecks(t *testing.T) {
	cfg := labConfig()
	cfg.MaxChannels = 64
	srv := turntest.Start(t, turntest.Options{Config: cfg, NoTLS: true})
	echo, _ := turntest.Echo(t)
	for _, tr := range []string{"udp", "tcp"} {
		t.Run(tr, func(t *testing.T) {
			c := turntest.Dial(t, tr, srv.Addr(tr), nil)
			cred := srv.Credential("binder-"+tr, time.Hour)
			if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
				t.Fatal(err)
			}
			state := func() [2]int {
				p, ch := srv.PermissionsAndChannels()
				return [2]int{p, ch}
			}
			base := state()
			for _, n := range []uint16{0x0000, 0x0001, 0x3FFF, 0x5000, 0x7FFF, 0x8000, 0xFFFF} {
				if err := c.ChannelBind(n, peer(echo)); errorCode(err) != stun.CodeBadRequest {
					t.Errorf("channel %#04x: got %v, want 400", n, err)
				}
			}
			denied := turnclient.PeerAddress{Addr: netip.MustParseAddrPort("169.254.169.254:80")}
			if err := c.ChannelBind(0x4001, denied); errorCode(err) != stun.CodeForbidden {
				t.Errorf("a channel to a denied peer: got %v, want 403", err)
			}
			if err := c.CreatePermission(denied); errorCode(err) != stun.CodeForbidden {
				t.Errorf("a permission to a denied peer: got %v, want 403", err)
			}
			if got := state(); got != base {
				t.Fatalf("refused requests left state behind: %v, want %v", got, base)
			}

			if err := c.ChannelBind(0x4000, peer(echo)); err != nil {
				t.Fatal(err)
			}
			for i := 1; i < 64; i++ { // more channels to other ports of the peer: one permission
				if err := c.ChannelBind(uint16(0x4000+i), turnclient.PeerAddress{Addr: netip.AddrPortFrom(echo.AddrPort().Addr(), uint16(20000+i))}); err != nil {
					t.Fatalf("channel %d: %v", i, err)
				}
			}
			if err := c.ChannelBind(0x4FFF, turnclient.PeerAddress{Addr: netip.AddrPortFrom(echo.AddrPort().Addr(), 30000)}); errorCode(err) != stun.CodeInsufficientCapacity {
				t.Errorf("channel 65: got %v, want 508", err)
			}
			if err := c.ChannelBind(0x4000, peer(echo)); err != nil {
				t.Errorf("refreshing a bound channel at the limit: %v", err)
			}
			if err := c.ChannelBind(0x4001, peer(echo)); errorCode(err) != stun.CodeBadRequest {
				t.Errorf("a bound number to another peer: got %v, want 400", err)
			}
			if got := state(); got != [2]int{base[0] + 1, base[1] + 64} {
				t.Errorf("got %v permissions and channels, want %v", got, [2]int{base[0] + 1, base[1] + 64})
			}
			if err := c.SendChannel(0x4000, []byte("still relayed")); err != nil {
				t.Fatal(err)
			}
			recvPayload(t, c, "still relayed")
		})
	}
}

// TestChannelFloodBystanders: while one client binds as many channels as it may and then
// deletes its allocation, 50 other allocations relaying audio-like traffic (50 packets a second
// of 172 bytes, over channels) lose nothing. With turn.max_channels 0 the attacker binds 2,000
// channels: the deletion is still answered at once and torn down off the listener's loop.
func TestChannelFloodBystanders(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxChannels int
		bind        int
	}{
		{"max_channels 64", 64, 1000},
		{"max_channels 0", 0, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := labConfig()
			cfg.MaxChannels = tc.maxChannels
			srv := turntest.Start(t, turntest.Options{Config: cfg, NoTLS: true})
			echo, _ := turntest.Echo(t)

			const bystanders, packets = 50, 100
			clients := make([]*turnclient.Client, bystanders)
			for i := range clients {
				c := turntest.Dial(t, "udp", srv.UDP, nil)
				cred := srv.Credential(fmt.Sprintf("bystander-%d", i), time.Hour)
				if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
					t.Fatal(err)
				}
				if err := c.ChannelBind(0x4000, peer(echo)); err != nil {
					t.Fatal(err)
				}
				clients[i] = c
			}

			var wg sync.WaitGroup
			attackErr := make(chan error, 1)
			bound := 0
			wg.Go(func() {
				a := turntest.Dial(t, "udp", srv.UDP, nil)
				cred := srv.Credential("attacker", time.Hour)
				if _, err := a.Allocate(cred.Username, cred.Password); err != nil {
					attackErr <- err
					return
				}
				for i := range tc.bind {
					err := a.ChannelBind(uint16(0x4000+i), turnclient.PeerAddress{Addr: netip.AddrPortFrom(echo.AddrPort().Addr(), uint16(10000+i))})
					if err != nil {
						if errorCode(err) != stun.CodeInsufficientCapacity || tc.maxChannels == 0 {
							attackErr <- fmt.Errorf("channel %d: %w", i, err)
							return
						}
						continue
					}
					bound++
				}
				attackErr <- a.Refresh(0)
			})
			payload := make([]byte, 172)
			for i, c := range clients {
				wg.Go(func() {
					tick := time.NewTicker(20 * time.Millisecond) // the pace of audio, not a wait
					defer tick.Stop()
					for seq := range packets {
						p := fmt.Appendf(nil, "%02d/%03d", i, seq)
						_ = c.SendChannel(0x4000, append(p, payload[len(p):]...))
						<-tick.C
					}
				})
			}
			wg.Wait()
			if err := <-attackErr; err != nil {
				t.Fatalf("attacker: %v", err)
			}
			want := tc.bind
			if tc.maxChannels > 0 {
				want = tc.maxChannels
			}
			if bound != want {
				t.Errorf("the attacker bound %d channels, want %d", bound, want)
			}

			// Every bystander gets every packet back; the deadline only bounds a failure.
			deadline := time.Now().Add(20 * time.Second)
			for i, c := range clients {
				seen := map[string]bool{}
				for len(seen) < packets {
					d, ok := c.Recv(time.Until(deadline))
					if !ok {
						t.Fatalf("bystander %d: %d of %d packets came back", i, len(seen), packets)
					}
					seen[string(d.Payload[:6])] = true
				}
			}
			for srv.Allocations() != bystanders {
				if time.Now().After(deadline) {
					t.Fatalf("the attacker's deleted allocation is still there: %d allocations", srv.Allocations())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestFileBudget: with a file descriptor limit of 200, TCP connections get at most half of
// what TURN may use (68 of 136: a quarter of the limit stays with the rest of icebox). A flood
// of idle connections only pushes out its own oldest: a client that allocates at once still
// gets in over TCP, and UDP allocations still succeed.
func TestFileBudget(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{NoTLS: true, MaxFiles: 200})
	const conns = 150
	for range conns {
		c, err := net.Dial("tcp", srv.TCP)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		open := metric(t, srv.Registry, "icebox_turn_connections", "transport", "tcp")
		shed := metric(t, srv.Registry, "icebox_turn_connections_shed_total", "transport", "tcp")
		if open+shed == conns {
			if open != 68 {
				t.Errorf("%v connections kept open, want 68", open)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v open and %v shed of %d connections", open, shed, conns)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, tr := range []string{"tcp", "tcp", "udp", "udp", "udp"} {
		c := turntest.Dial(t, tr, srv.Addr(tr), nil)
		cred := srv.Credential(fmt.Sprintf("user-%d", i), time.Hour)
		if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
			t.Fatalf("%s allocation %d beside the idle connections: %v", tr, i, err)
		}
	}
	if got := metric(t, srv.Registry, "icebox_turn_connections", "transport", "tcp"); got != 68 {
		t.Errorf("%v connections open, want 68", got)
	}
}
