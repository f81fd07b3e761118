//go:build unix

package stunturn_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/icebox-rtc/icebox/stunturn"
)

func TestListenUDP(t *testing.T) {
	conns, err := stunturn.ListenUDP("127.0.0.1:0", 3)
	if err != nil {
		t.Fatal(err)
	}
	want := 3
	if runtime.GOOS != "linux" {
		want = 1
	}
	if len(conns) != want {
		t.Fatalf("got %d sockets, want %d", len(conns), want)
	}
	addr := conns[0].LocalAddr().String()
	for _, c := range conns {
		if c.LocalAddr().String() != addr {
			t.Errorf("socket on %v, want every one on %v", c.LocalAddr(), addr)
		}
	}
	// The port is now ours: a second icebox (SO_REUSEPORT too) must not join it.
	if again, err := stunturn.ListenUDP(addr, 2); err == nil {
		for _, c := range again {
			c.Close()
		}
		t.Errorf("a second ListenUDP on %s succeeded, want address in use", addr)
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second ListenUDP: got %v, want address in use", err)
	}
	for _, c := range conns {
		c.Close()
	}
	if n, _ := stunturn.ListenUDP("127.0.0.1:0", 0); len(n) == 0 {
		t.Errorf("udp_sockets 0 bound no socket")
	} else {
		for _, c := range n {
			c.Close()
		}
	}
}

// TestListenUDPRefusesSharedPort: another process holding the port with SO_REUSEPORT would
// silently share the traffic; the check before binding refuses it.
func TestListenUDPRefusesSharedPort(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return errors.Join(err, serr)
	}}
	other, err := lc.ListenPacket(context.Background(), "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conns, err := stunturn.ListenUDP(other.LocalAddr().String(), 2)
	if err == nil {
		for _, c := range conns {
			c.Close()
		}
		t.Fatalf("ListenUDP joined a port another socket holds with SO_REUSEPORT")
	}
}
