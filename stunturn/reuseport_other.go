//go:build !linux

package stunturn

import "syscall"

// reusePortBalances: elsewhere SO_REUSEPORT does not spread load (BSDs give every datagram to
// the last socket bound), so ListenUDP binds one socket.
const reusePortBalances = false

func setReusePort(string, string, syscall.RawConn) error { return nil }
