//go:build linux

package signaling

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller watches the sockets of connections with one epoll instance, and starts a reader for a
// parked one when bytes arrive. The epoll descriptor is itself in Go's poller (it is
// readable while it has events), so waiting for it holds no thread: a goroutine blocked in
// epoll_wait would hold its P until sysmon took it back, which on one core delays every other
// goroutine by up to milliseconds.
type poller struct {
	epfd int
	file *os.File        // epfd, for Go's poller
	rc   syscall.RawConn // of file
	done chan struct{}

	mu    sync.Mutex
	conns map[uint64]*conn // by key; guarded by mu
	last  uint64           // the last key given; guarded by mu
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &poller{epfd: epfd, file: f, rc: rc, done: make(chan struct{}), conns: map[uint64]*conn{}}
	go p.run()
	return p, nil
}

func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		var n int
		err := p.rc.Read(func(fd uintptr) bool {
			var werr error
			for {
				n, werr = unix.EpollWait(int(fd), events, 0)
				if !errors.Is(werr, unix.EINTR) {
					break
				}
			}
			return n > 0 || werr != nil // nothing ready: Go's poller waits for the descriptor
		})
		if err != nil || n <= 0 {
			return // closed; epoll_wait on a valid descriptor fails no other way
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			key := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if c := p.conns[key]; c != nil {
				p.woke(c)
			}
		}
		p.mu.Unlock()
	}
}

// watch registers c's socket, edge-triggered: every arrival of bytes is signalled once.
func (p *poller) watch(c *conn) error {
	p.mu.Lock()
	p.last++
	c.pollID = p.last
	p.conns[c.pollID] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(uint32(c.pollID)), Pad: int32(uint32(c.pollID >> 32))}
	var err error
	if cerr := c.raw.Control(func(fd uintptr) { err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); cerr != nil {
		return cerr // closed
	}
	return err
}

// woke is an arrival on c's socket: a reader for a parked connection; a mark for a reading
// one, whose reader looks again before it parks.
func (p *poller) woke(c *conn) {
	for {
		switch c.readsNow.Load() {
		case parked:
			if c.readsNow.CompareAndSwap(parked, reading) {
				c.h.workers.run(c.readReady)
				return
			}
		case reading:
			if c.readsNow.CompareAndSwap(reading, woken) {
				return
			}
		default: // woken already, or over
			return
		}
	}
}

// unread reports whether c's socket holds bytes not read yet (or an end or an error to read),
// without waiting.
func (p *poller) unread(c *conn) bool {
	var b [1]byte
	var n int
	var err error
	if cerr := c.raw.Control(func(fd uintptr) {
		n, _, err = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	}); cerr != nil {
		return true // closed: the reader finds out
	}
	return n > 0 || !errors.Is(err, unix.EAGAIN)
}

// forget drops c, whose reader has ended. Its registration, disarmed or armed on a closed
// socket, goes with the socket.
func (p *poller) forget(c *conn) {
	p.mu.Lock()
	delete(p.conns, c.pollID)
	p.mu.Unlock()
}

// close ends the poller, after every connection has ended.
func (p *poller) close() {
	_ = p.file.Close() // ends run's wait
	<-p.done
}
