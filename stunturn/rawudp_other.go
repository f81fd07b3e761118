//go:build !linux

package stunturn

import (
	"net"
	"net/netip"
)

// rawUDP elsewhere than Linux is the net package's socket I/O (see rawudp_linux.go).
type rawUDP struct {
	conn *net.UDPConn
}

func newRawUDP(c *net.UDPConn) (*rawUDP, error) { return &rawUDP{conn: c}, nil }

func (r *rawUDP) close() error { return r.conn.Close() }

func (r *rawUDP) send(b []byte, to netip.AddrPort) error { return r.sendto(b, to) }

func (r *rawUDP) sendto(b []byte, to netip.AddrPort) error {
	_, err := r.conn.WriteToUDPAddrPort(b, to)
	return err
}

type readLoop struct {
	r      *rawUDP
	off    int
	buf    []byte
	handle func(b []byte, n int, from netip.AddrPort) bool
}

func newReadLoop(r *rawUDP, _, _, off, size int, handle func([]byte, int, netip.AddrPort) bool) *readLoop {
	return &readLoop{r: r, off: off, buf: make([]byte, off+size+relayTailroom), handle: handle}
}

func (l *readLoop) next() ([]byte, netip.AddrPort, error) {
	for {
		n, from, err := l.r.conn.ReadFromUDPAddrPort(l.buf[l.off : len(l.buf)-relayTailroom])
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		if l.handle(l.buf, n, from) {
			return l.buf[l.off : l.off+n], from, nil
		}
	}
}
