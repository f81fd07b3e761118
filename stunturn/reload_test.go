package stunturn_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/icebox-rtc/icebox/stunturn"
	"github.com/icebox-rtc/icebox/stunturn/turnclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// TestReload: quotas, limits, max_ttl and the peer lists change in place. A newly denied peer
// gets no more datagrams over a channel bound before (the fast path) nor by Send indication,
// while an allowed one keeps relaying; nothing open is closed; the keys that need a restart
// keep their running value.
func TestReload(t *testing.T) {
	cfg := turntest.Config()
	cfg.AllowedPeerCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.UserQuota = 2
	srv := turntest.Start(t, turntest.Options{Config: &cfg, NoTLS: true, MaxTTL: time.Hour})
	echo1, got1 := turntest.EchoOn(t, netip.MustParseAddr("127.0.0.3")) // 127.0.0.1 is the relay's own address
	echo2, _ := turntest.EchoOn(t, netip.MustParseAddr("127.0.0.2"))

	c := turntest.Dial(t, "udp", srv.UDP, nil)
	cred := srv.Credential("u", 30*time.Minute)
	if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
		t.Fatal(err)
	}
	if err := c.ChannelBind(0x4001, peer(echo1)); err != nil {
		t.Fatal(err)
	}
	if err := c.ChannelBind(0x4002, peer(echo2)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendChannel(0x4001, []byte("before")); err != nil {
		t.Fatal(err)
	}
	recvPayload(t, c, "before")
	<-got1

	next := cfg
	next.AllowedPeerCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("127.0.0.4/32")} // 127.0.0.3 is denied from now on
	next.UserQuota = 3
	next.MaxPermissions = 2
	next.RelayPortMin = cfg.RelayPortMin + 1 // needs a restart
	if err := srv.Reload(next, 3*time.Hour); err != nil {
		t.Fatal(err)
	}
	before := metric(t, srv.Registry, "icebox_turn_peer_packets_dropped_total", "direction", "to_peer")
	_ = c.SendChannel(0x4001, []byte("over the channel to a newly denied peer"))
	_ = c.Send(echo1.AddrPort(), []byte("by Send indication to a newly denied peer"))
	if err := c.SendChannel(0x4002, []byte("marker")); err != nil { // behind them on the same path
		t.Fatal(err)
	}
	recvPayload(t, c, "marker")
	select {
	case b := <-got1:
		t.Errorf("the newly denied peer received %q", b)
	default:
	}
	if got := metric(t, srv.Registry, "icebox_turn_peer_packets_dropped_total", "direction", "to_peer"); got != before+2 {
		t.Errorf("datagrams dropped toward the newly denied peer: got %v, want 2", got-before)
	}
	if err := c.CreatePermission(peer(echo1)); errorCode(err) != stun.CodeForbidden {
		t.Errorf("a new permission to the newly denied peer: got %v, want 403", err)
	}

	// max_permissions 2: the allocation holds two already.
	if err := c.CreatePermission(turnclient.PeerAddress{Addr: netip.MustParseAddrPort("127.0.0.4:9")}); errorCode(err) != stun.CodeInsufficientCapacity {
		t.Errorf("a third permission under max_permissions 2: got %v, want 508", err)
	}
	// user_quota 3 and max_ttl 3h.
	for i := range 2 {
		if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(cred.Username, cred.Password); err != nil {
			t.Fatalf("allocation %d of 3: %v", i+2, err)
		}
	}
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(cred.Username, cred.Password); errorCode(err) != stun.CodeAllocQuotaReached {
		t.Errorf("a fourth allocation under user_quota 3: got %v, want 486", err)
	}
	long := srv.Credential("v", 2*time.Hour)
	if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(long.Username, long.Password); err != nil {
		t.Errorf("a credential of 2h under max_ttl 3h: %v", err)
	}

	if got := stunturn.RestartKeys(cfg, next); !slices.Equal(got, []string{"relay_port_min"}) {
		t.Errorf("RestartKeys: got %v, want [relay_port_min]", got)
	}
	if running := srv.RunningConfig(); running.RelayPortMin != cfg.RelayPortMin || running.UserQuota != 3 {
		t.Errorf("running config: relay_port_min %d (want %d, until a restart), user_quota %d (want 3)",
			running.RelayPortMin, cfg.RelayPortMin, running.UserQuota)
	}
	bad := next
	bad.MaxChannels = -1
	if err := srv.Reload(bad, time.Hour); err == nil {
		t.Errorf("an invalid configuration was applied")
	}
	if srv.RunningConfig().MaxPermissions != 2 {
		t.Errorf("a refused reload changed the running configuration")
	}
}
