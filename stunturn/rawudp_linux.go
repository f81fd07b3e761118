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

// send is sendto, as a clientOut.
func (r *rawUDP) send(b []byte, to netip.AddrPort) error { return r.sendto(b, to) }

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

func htons(p uint16) uint16 { return p<<8 | p>>8 }
func ntohs(p uint16) uint16 { return p<<8 | p>>8 }

// readLoop reads datagrams from r in batches (recvmmsg), and passes each to handle, until
// handle keeps one (returns true) or an error. Datagrams handle does not keep (relayed on the
// fast path) never leave the loop; when the socket has nothing to read, the goroutine parks in
// Go's poller. Each buffer has off bytes of headroom before the datagram.
type readLoop struct {
	r       *rawUDP
	off     int
	size    int
	batch   int // datagrams read at once, to begin with
	max     int // the batch grows up to this when reads fill it: memory only where traffic is
	bufs    [][]byte
	sas     []unix.RawSockaddrAny
	iovs    []unix.Iovec
	msgs    []unix.Mmsghdr
	cnt     int  // datagrams in the current batch
	idx     int  // the next one to look at
	drained bool // the current batch is smaller than it could be: the socket was empty
	readNow bool // the current batch was read during this call of next
	handle  func(b []byte, n int, from netip.AddrPort) bool
	fn      func(fd uintptr) bool // made once: no allocation per read

	cur  int // the kept datagram
	n    int
	from netip.AddrPort
	err  error
}

func newReadLoop(r *rawUDP, batch, maxBatch, off, size int, handle func(b []byte, n int, from netip.AddrPort) bool) *readLoop {
	l := &readLoop{r: r, off: off, size: size, batch: batch, max: max(batch, maxBatch), handle: handle}
	l.fn = l.read
	return l
}

// resize makes room for batch datagrams per read, keeping the buffers there are (a kept
// datagram stays valid).
//
//nolint:gosec // unsafe: the sockaddr buffers of the system call
func (l *readLoop) resize(batch int) {
	for len(l.bufs) < batch {
		l.bufs = append(l.bufs, make([]byte, l.off+l.size+relayTailroom))
	}
	l.sas = make([]unix.RawSockaddrAny, batch)
	l.iovs = make([]unix.Iovec, batch)
	l.msgs = make([]unix.Mmsghdr, batch)
	for i := range batch {
		l.iovs[i].Base = &l.bufs[i][l.off]
		l.iovs[i].SetLen(l.size)
		l.msgs[i].Hdr.Iov = &l.iovs[i]
		l.msgs[i].Hdr.SetIovlen(1)
		l.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&l.sas[i]))
	}
}

//nolint:gosec // unsafe: the message array for the system call, as package syscall does
func (l *readLoop) read(fd uintptr) bool {
	for {
		for l.idx < l.cnt {
			i := l.idx
			l.idx++
			n := int(l.msgs[i].Len)
			from := sockaddrAddrPort(&l.sas[i])
			if l.handle(l.bufs[i], n, from) {
				l.cur, l.n, l.from = i, n, from
				return true
			}
		}
		if l.drained && l.readNow {
			// The last read, in this same wait of the poller, took fewer datagrams than it could:
			// the socket was empty then. Wait for readability without asking again: a datagram
			// that arrived since has signalled the poller (every arrival wakes it), so the wait
			// returns at once. Saves the recvmmsg that would only answer EAGAIN, one system call
			// per wake-up. Not across calls of next: each starts by resetting the poller's
			// readiness (poll.FD.RawRead), which would lose such a signal.
			l.drained = false
			return false
		}
		if len(l.msgs) == 0 {
			// No buffers until a datagram is there: a relay socket nobody sends to holds none
			// (about 2 KiB for each idle allocation). Looking costs what the first read costs.
			if _, _, err := unix.Recvfrom(int(fd), nil, unix.MSG_PEEK|unix.MSG_DONTWAIT); errors.Is(err, unix.EAGAIN) {
				return false
			}
			l.resize(l.batch)
		}
		if l.cnt == len(l.msgs) && l.cnt < l.max { // the last read filled the batch
			l.resize(l.max)
		}
		for i := range l.msgs {
			l.msgs[i].Hdr.Namelen = unix.SizeofSockaddrAny
			l.msgs[i].Len = 0
		}
		cnt, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&l.msgs[0])), uintptr(len(l.msgs)),
			unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			l.cnt, l.idx = int(cnt), 0
			l.drained, l.readNow = l.cnt < len(l.msgs), true
		case syscall.EAGAIN:
			return false // wait until readable
		case syscall.EINTR:
		default:
			l.err = errno
			return true
		}
	}
}

// next returns the next datagram to hand over; it stays valid until the next call.
func (l *readLoop) next() ([]byte, netip.AddrPort, error) {
	l.err, l.readNow = nil, false
	if err := l.r.rc.Read(l.fn); err != nil {
		return nil, netip.AddrPort{}, err
	}
	if l.err != nil {
		return nil, netip.AddrPort{}, l.err
	}
	return l.bufs[l.cur][l.off : l.off+l.n], l.from, nil
}

func sockaddrAddrPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa)) //nolint:gosec // a sockaddr_in the kernel wrote
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), ntohs(in.Port))
	case unix.AF_INET6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa)) //nolint:gosec // a sockaddr_in6 the kernel wrote
		return netip.AddrPortFrom(netip.AddrFrom16(in.Addr), ntohs(in.Port))
	}
	return netip.AddrPort{}
}
