package stunturn

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawUDP does the fast path's socket I/O with raw system calls on the socket's descriptor.
//
// The net package wraps each read and write in the scheduler's syscall bookkeeping; when a
// loopback sendto runs long (it delivers the packet to the receiving socket in the same call),
// the runtime hands the P to another thread, and those thread switches cost more than the
// packet. Non-blocking UDP calls never block, so they can run as raw system calls. Reads still
// wait for readability through Go's poller (RawConn.Read); sends take a read lock that Close
// takes for writing, so a descriptor number is never used after its socket is closed.
type rawUDP struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	fd   int
	v6   bool // an AF_INET6 (dual-stack) socket: addresses are IPv4-mapped

	mu     sync.RWMutex
	closed bool
}

// errRawClosed is a send on a socket that has been closed.
var errRawClosed = errors.New("socket closed")

func newRawUDP(c *net.UDPConn) (*rawUDP, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawUDP{conn: c, rc: rc, fd: -1}
	if err := rc.Control(func(fd uintptr) { r.fd = int(fd) }); err != nil {
		return nil, err
	}
	domain, err := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, err
	}
	r.v6 = domain == unix.AF_INET6
	return r, nil
}

// close marks the socket closed for senders, then closes it.
func (r *rawUDP) close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return r.conn.Close()
}

// sendto sends b to to; a full socket buffer drops the datagram, as a network would.
//
//nolint:gosec // unsafe: the addresses of b and the sockaddr for the system call, as package syscall does
func (r *rawUDP) sendto(b []byte, to netip.AddrPort) error {
	if len(b) == 0 {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return errRawClosed
	}
	var errno syscall.Errno
	if r.v6 {
		var sa unix.RawSockaddrInet6
		sa.Family = unix.AF_INET6
		sa.Port = htons(to.Port())
		sa.Addr = to.Addr().As16()
		_, _, errno = unix.RawSyscall6(unix.SYS_SENDTO, uintptr(r.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet6)
	} else {
		a := to.Addr().Unmap()
		if !a.Is4() {
			return errRawFamily
		}
		var sa unix.RawSockaddrInet4
		sa.Family = unix.AF_INET
		sa.Port = htons(to.Port())
		sa.Addr = a.As4()
		_, _, errno = unix.RawSyscall6(unix.SYS_SENDTO, uintptr(r.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// errRawFamily is an IPv6 destination on an IPv4 socket.
var errRawFamily = errors.New("not an IPv4 address")

// recvfrom reads one datagram into b without blocking: syscall.EAGAIN when there is none.
// It runs inside RawConn.Read, which holds the descriptor.
//
//nolint:gosec // unsafe: the addresses of b and the sockaddr for the system call, as package syscall does
func recvfrom(fd uintptr, b []byte, sa *unix.RawSockaddrAny) (int, netip.AddrPort, error) {
	salen := uint32(unix.SizeofSockaddrAny)
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&salen)))
	if errno != 0 {
		return 0, netip.AddrPort{}, errno
	}
	switch sa.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return int(n), netip.AddrPortFrom(netip.AddrFrom4(in.Addr), ntohs(in.Port)), nil
	case unix.AF_INET6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		return int(n), netip.AddrPortFrom(netip.AddrFrom16(in.Addr), ntohs(in.Port)), nil
	}
	return int(n), netip.AddrPort{}, nil
}

func htons(p uint16) uint16 { return p<<8 | p>>8 }
func ntohs(p uint16) uint16 { return p<<8 | p>>8 }

// readLoop reads datagrams from r into buf until handle keeps one (returns true), or an error.
// Datagrams handle does not keep (relayed on the fast path) never leave the loop; when the
// socket has nothing to read, the goroutine parks in Go's poller.
type readLoop struct {
	r      *rawUDP
	buf    []byte
	sa     unix.RawSockaddrAny
	handle func(b []byte, n int, from netip.AddrPort) bool // true: return this datagram
	fn     func(fd uintptr) bool                           // made once: no allocation per read
	n      int
	from   netip.AddrPort
	err    error
}

func newReadLoop(r *rawUDP, buf []byte, handle func([]byte, int, netip.AddrPort) bool) *readLoop {
	l := &readLoop{r: r, buf: buf, handle: handle}
	l.fn = func(fd uintptr) bool {
		for {
			n, from, err := recvfrom(fd, l.buf, &l.sa)
			switch {
			case err == syscall.EAGAIN:
				return false // wait until readable
			case err == syscall.EINTR:
				continue
			case err != nil:
				l.err = err
				return true
			}
			if l.handle(l.buf, n, from) {
				l.n, l.from = n, from
				return true
			}
		}
	}
	return l
}

// next returns the next datagram to hand over.
func (l *readLoop) next() (int, netip.AddrPort, error) {
	l.err = nil
	if err := l.r.rc.Read(l.fn); err != nil {
		return 0, netip.AddrPort{}, err
	}
	return l.n, l.from, l.err
}
