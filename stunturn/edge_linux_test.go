package stunturn_test

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/stunturn"
	"github.com/icebox-rtc/icebox/stunturn/turnclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// TestEdgeUDPBesideUDP: a browser allocates from one local socket on every TURN server it is
// given, so one client address holds an allocation on turn.udp_listen and another on the edge
// port's UDP at once: both work, and deleting one leaves the other.
func TestEdgeUDPBesideUDP(t *testing.T) {
	udp, err := stunturn.ListenUDP("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	edgeUDP, err := stunturn.ListenUDP("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	secrets := credentials.NewSecrets([]string{"secret"})
	reg := prometheus.NewRegistry()
	cfg := turntest.Config()
	srv, err := stunturn.New(cfg, stunturn.Options{UDP: udp, EdgeUDP: edgeUDP, Secrets: secrets, MaxTTL: time.Hour,
		PublicIP: netip.MustParseAddr("127.0.0.1"), Logger: discardLogger(), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	// Two sockets on one local port (SO_REUSEPORT), each connected to one server port: the
	// kernel delivers by the full address pair, as to a browser's one unconnected socket.
	reuse := func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}
	var local *net.UDPAddr
	var clients []*turnclient.Client
	for _, server := range []net.Addr{udp[0].LocalAddr(), edgeUDP[0].LocalAddr()} {
		d := net.Dialer{Control: reuse}
		if local != nil {
			d.LocalAddr = local
		}
		conn, err := d.Dial("udp4", server.String())
		if err != nil {
			t.Fatal(err)
		}
		local = conn.LocalAddr().(*net.UDPAddr)
		clients = append(clients, turntest.NewClient(t, "udp", conn))
	}
	cred := secrets.Mint("browser", time.Hour, time.Now())
	for i, c := range clients {
		if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
			t.Fatalf("allocation %d from %s: %v", i, local, err)
		}
	}
	for _, tr := range []string{"udp", "edge-udp"} {
		if got := turntest.Metric(t, reg, "icebox_turn_allocations", "transport", tr); got != 1 {
			t.Errorf("allocations on %s: got %v, want 1", tr, got)
		}
	}
	if err := clients[0].Refresh(0); err != nil {
		t.Fatalf("delete on udp: %v", err)
	}
	if err := clients[1].Refresh(10 * time.Minute); err != nil {
		t.Errorf("refresh on the edge after the udp allocation was deleted: %v", err)
	}
	if got := srv.Allocations(); got != 1 {
		t.Errorf("allocations: got %d, want the edge's one", got)
	}
}
