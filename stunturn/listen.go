package stunturn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
)

// udpSocketBuffer is asked for as SO_RCVBUF/SO_SNDBUF of the listening UDP sockets, so a burst
// of media does not overflow them; the kernel caps it at net.core.rmem_max/wmem_max.
const udpSocketBuffer = 4 << 20

// ListenUDP binds the TURN UDP listener: n sockets on addr with SO_REUSEPORT, so the kernel
// spreads clients over n reading goroutines (n <= 0 means GOMAXPROCS; one socket where
// SO_REUSEPORT does not balance load). It first binds addr alone, without SO_REUSEPORT, which
// fails if any other process holds the port, so icebox never silently shares it.
func ListenUDP(addr string, n int) ([]net.PacketConn, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if !reusePortBalances {
		n = 1
	}
	conns, err := listenUDP(addr, n)
	// With port 0 the port is picked, freed and taken again: another socket may take it in
	// between. Another pick then does.
	if _, port, _ := net.SplitHostPort(addr); port == "0" {
		for range 10 {
			if !errors.Is(err, syscall.EADDRINUSE) {
				break
			}
			conns, err = listenUDP(addr, n)
		}
	}
	return conns, err
}

func listenUDP(addr string, n int) ([]net.PacketConn, error) {
	probe, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	// With port 0 the probe picked the port; every socket takes that one.
	bound := probe.LocalAddr().String()
	if n == 1 {
		setBuffers(probe)
		return []net.PacketConn{probe}, nil
	}
	if err := probe.Close(); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: setReusePort}
	conns := make([]net.PacketConn, 0, n)
	for range n {
		c, err := lc.ListenPacket(context.Background(), "udp", bound)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("listen udp %s: %w (taken between the check and the bind)", bound, err)
			}
			return nil, err
		}
		setBuffers(c)
		conns = append(conns, c)
	}
	return conns, nil
}

func setBuffers(c net.PacketConn) {
	if u, ok := c.(*net.UDPConn); ok {
		_ = u.SetReadBuffer(udpSocketBuffer) // best effort: capped by the kernel
		_ = u.SetWriteBuffer(udpSocketBuffer)
	}
}
