//go:build linux

package stunturn

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawStream is the socket of a plain TCP connection, read by readRaw; nil for TLS.
func rawStream(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// readRaw is Read on a plain TCP connection: the frames are cut and handled within one wait of
// Go's poller, so a read that emptied the socket is followed by a wait, not by another read
// that would only answer EAGAIN: one system call less per wake-up (the same as the UDP read
// loops). take handles a frame and reports whether it is for pion, copied into p.
func (c *streamConn) readRaw(p []byte) (int, error) {
	var n int
	var err error
	drained := false // the last read, in this same wait, emptied the socket
	rerr := c.raw.Read(func(fd uintptr) bool {
		for {
			frame, ferr := c.in.next()
			if ferr != nil {
				err = ferr
				return true
			}
			if frame != nil {
				if m, ok := c.take(frame, p); ok {
					n = m
					return true
				}
				continue
			}
			if drained {
				// A byte that arrived since has signalled the poller, so the wait returns at
				// once. Not across calls of Read: each begins by resetting the poller's readiness.
				drained = false
				return false
			}
			space := c.in.space() // never empty
			// The socket does not block (Go's poller set it so): a raw system call, without
			// telling the scheduler, as the UDP reads and writes do.
			m, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&space[0])), uintptr(len(space))) //nolint:gosec // the buffer for the system call
			switch {
			case errno == unix.EAGAIN:
				return false
			case errno == unix.EINTR:
				continue
			case errno != 0:
				err = &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
				return true
			case m == 0:
				err = io.EOF
				return true
			}
			c.in.w += int(m)
			drained = int(m) < len(space)
		}
	})
	if rerr != nil {
		return 0, rerr
	}
	return n, err
}
