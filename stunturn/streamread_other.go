//go:build !linux

package stunturn

import (
	"errors"
	"net"
	"syscall"
)

// rawStream is Linux's; elsewhere every stream is read through net.Conn.
func rawStream(net.Conn) syscall.RawConn { return nil }

func (c *streamConn) readRaw([]byte) (int, error) { return 0, errors.ErrUnsupported }
