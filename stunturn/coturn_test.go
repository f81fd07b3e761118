package stunturn_test

import (
	"net"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// TestCoturnClient: coturn's own test client, turnutils_uclient with a TURN REST secret (-W),
// relays through icebox to coturn's echo peer, turnutils_peer, without loss, with Send
// indications over UDP, TCP and TLS. (Debian's uclient, coturn 4.6, picks channel numbers up
// to 0x7FFF, which RFC 8656 no longer allows: icebox, like coturn since 4.16, answers 400.
// TestChannelNumbers covers that; channels are relayed by the other tests with icebox's own
// client and pion's.)
func TestCoturnClient(t *testing.T) {
	tools := turntest.RequireTools(t, "turnutils_uclient", "turnutils_peer")
	uclient, peerTool := tools[0], tools[1]
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"udp", []string{"-s"}},
		{"tcp", []string{"-s", "-t"}},
		{"tls", []string{"-s", "-t", "-S"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := turntest.Start(t, turntest.Options{Config: labConfig(), Secrets: []string{"coturn-interop"}})
			peerPort := startCoturnPeer(t, peerTool)
			_, port, _ := net.SplitHostPort(srv.UDP)
			if slices.Contains(tc.flags, "-S") {
				_, port, _ = net.SplitHostPort(srv.TLS)
			} else if slices.Contains(tc.flags, "-t") {
				_, port, _ = net.SplitHostPort(srv.TCP)
			}
			args := append([]string{"-W", "coturn-interop", "-u", "uclient", "-e", "127.0.0.1",
				"-r", strconv.Itoa(peerPort), "-p", port, "-n", "30", "-m", "2", "-c", "-X"}, tc.flags...)
			turntest.Uclient(t, uclient, append(args, "127.0.0.1")...)
			if got := metric(t, srv.Registry, "icebox_turn_relayed_packets_total", "direction", "from_peer"); got < 60 {
				t.Errorf("packets relayed from the peer: got %v, want at least 60", got)
			}
		})
	}
}

// startCoturnPeer runs turnutils_peer (a UDP echo) on 127.0.0.1 and returns its port once it
// answers.
func startCoturnPeer(t *testing.T, path string) int {
	t.Helper()
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()
	cmd := exec.Command(path, "-L", "127.0.0.1", "-p", strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	c, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	for range 100 {
		_, _ = c.Write([]byte("ping"))
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ping" {
			return port
		}
		time.Sleep(50 * time.Millisecond) // "connection refused" until it listens
	}
	t.Fatalf("turnutils_peer on port %d does not echo", port)
	return 0
}
