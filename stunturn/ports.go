package stunturn

import "sync/atomic"

// portSet is the set of UDP ports icebox holds as relay sockets right now: a bitmap with one
// bit per port, read without a lock on every datagram to or from the server's own relay
// address, written when a relay socket is bound or closed.
type portSet struct {
	bits [65536 / 64]atomic.Uint64
}

func (s *portSet) add(port uint16) { s.bits[port/64].Or(1 << (port % 64)) }

func (s *portSet) remove(port uint16) { s.bits[port/64].And(^(uint64(1) << (port % 64))) }

func (s *portSet) has(port uint16) bool { return s.bits[port/64].Load()&(1<<(port%64)) != 0 }
