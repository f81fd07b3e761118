package stunturn

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortBalances: Linux spreads datagrams over SO_REUSEPORT sockets by flow hash.
const reusePortBalances = true

func setReusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
