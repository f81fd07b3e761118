package stunturn

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// packetConn wraps one listening UDP socket: every datagram goes through transport.inspect
// before pion reads it.
type packetConn struct {
	net.PacketConn
	t   *listener
	cur atomic.Pointer[request] // the authenticated request pion is handling, if any

	// UDP sockets read with raw calls: ChannelData of bound channels is relayed in the read
	// loop (fastpath.go); the rest is copied to pion.
	raw  *rawUDP
	loop *readLoop
}

// newPacketConn wraps a listening socket of transport t.
func newPacketConn(pc net.PacketConn, t *listener) *packetConn {
	c := &packetConn{PacketConn: pc, t: t}
	if u, ok := pc.(*net.UDPConn); ok {
		if raw, err := newRawUDP(u); err == nil {
			c.raw = raw
			c.loop = newReadLoop(raw, listenBatch, listenBatch, 0, relayMTU, func(b []byte, n int, from netip.AddrPort) bool {
				return !t.fast.fromClient(b[:n], from)
			})
		}
	}
	return c
}

// Close closes the socket (fast-path senders first see it closed).
func (c *packetConn) Close() error {
	if c.raw != nil {
		return c.raw.close()
	}
	return c.PacketConn.Close()
}

func (c *packetConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.done(c.cur.Load())
		var n int
		var from net.Addr
		var err error
		if c.loop != nil {
			data, ap, err := c.loop.next()
			if err != nil {
				return 0, nil, err
			}
			n = copy(p, data)
			from = net.UDPAddrFromAddrPort(ap)
		} else if n, from, err = c.PacketConn.ReadFrom(p); err != nil {
			return n, from, err
		}
		v, r, ans := c.t.inspect(from, p[:n])
		if v == reply {
			if ans.b != nil {
				_, _ = c.WriteTo(ans.b, from) // no request in flight: straight to the socket
			}
			ans.done()
			continue
		}
		c.cur.Store(r)
		return n, from, nil
	}
}

// WriteTo sends for pion; a response to the request in flight finishes it, before it goes
// out, so a client that reads the response sees the quota it left.
func (c *packetConn) WriteTo(p []byte, to net.Addr) (int, error) {
	if r := c.cur.Load(); r != nil && isResponse(p) && to.String() == r.src {
		c.done(r)
	}
	if ap, ok := addrPort(to); ok && c.raw != nil {
		if err := c.raw.sendto(p, ap); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, to)
}

func (c *packetConn) done(r *request) {
	if r != nil && c.cur.CompareAndSwap(r, nil) {
		c.t.finish(r)
	}
}

// Limits of TURN over TCP and TLS.
const (
	// defaultHandshakeTimeout bounds a TLS client that connects and says nothing.
	defaultHandshakeTimeout = 10 * time.Second
	// defaultIdleTimeout closes a connection that holds no allocation this long after it opened
	// or its allocation ended, even if it keeps sending (STUN Bindings, say): browsers allocate
	// at once over TCP and TLS, and an open connection is a file descriptor.
	defaultIdleTimeout = 30 * time.Second
	// maxChannelFrame is the largest ChannelData frame accepted on a stream: pion reads frames
	// into 1600-byte buffers and drops larger ones.
	maxChannelFrame = 1600
)

// streamListener wraps the TCP or TLS listener pion accepts from: its connections are framed
// and inspected like UDP datagrams, tracked so that shutdown can close them (pion's Close does
// not), and ones without an allocation are closed after the idle timeout. A connection that
// would use a file descriptor kept for the rest of icebox is closed at once (fileBudget).
type streamListener struct {
	net.Listener
	t *listener
}

// Accept retries on temporary failures such as running out of file descriptors: pion's accept
// loop ends at the first error, which would leave the listener dead.
func (l *streamListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if l.t.admitConn(c) {
				return l.t.track(c), nil
			}
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		l.t.s.log.Warn("turn accept failed; retrying", "transport", l.t.name, "err", err, "backoff", backoff)
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// admitConn takes a file descriptor of the budget for connection c. When there is none, the
// oldest connection without an allocation is closed to make room; when every connection holds
// an allocation, c is closed. Both are counted, and logged at most every 10 seconds.
func (t *listener) admitConn(c net.Conn) bool {
	files := t.s.files
	if files.openStream() {
		return true
	}
	if old := t.s.idle.oldest(); old != nil {
		_ = old.Close()
		if files.openStream() {
			t.shed(shedEvicted, old)
			return true
		}
	}
	_ = c.Close()
	t.shed(shedRefused, c)
	return false
}

// shed counts and logs a connection closed for the file budget.
func (t *listener) shed(reason string, c net.Conn) {
	t.s.metrics.connShed.WithLabelValues(t.name, reason).Inc()
	if ok, held := t.s.shedLog.allow(time.Now()); ok {
		t.s.log.Warn("turn connections over the file descriptor budget: closing the oldest without an allocation, "+
			"or the new one when all hold one (raise LimitNOFILE / ulimit -n if this is real traffic)",
			"transport", t.name, "reason", reason, "client", c.RemoteAddr().String(), "connections", t.s.files.streams.Load(),
			"relay_sockets", t.s.files.relays.Load(), "file_limit", t.s.files.limit, "shed_since_last_log", held)
	}
}

// idleStreams are the TCP and TLS connections that hold no allocation, oldest first. When the
// file budget has no room for a new connection, the oldest of them makes room: a flood of idle
// connections only pushes out its own, and a client that allocates at once (every browser
// does) is not turned away.
type idleStreams struct {
	mu sync.Mutex
	l  list.List // of *streamConn
}

func (q *idleStreams) add(c *streamConn) {
	q.mu.Lock()
	if c.idle == nil && !c.closed.Load() {
		c.idle = q.l.PushBack(c)
	}
	q.mu.Unlock()
}

func (q *idleStreams) remove(c *streamConn) {
	q.mu.Lock()
	if c.idle != nil {
		q.l.Remove(c.idle)
		c.idle = nil
	}
	q.mu.Unlock()
}

// oldest takes the oldest idle connection off the list (nil when there is none).
func (q *idleStreams) oldest() *streamConn {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.l.Front()
	if e == nil {
		return nil
	}
	c := q.l.Remove(e).(*streamConn)
	c.idle = nil
	return c
}

// track wraps an accepted connection and remembers it. Its idle timeout runs from now.
func (t *listener) track(c net.Conn) *streamConn {
	sc := &streamConn{Conn: c, t: t, key: c.RemoteAddr().String(), raw: rawStream(c)}
	sc.in.key = sc.key
	sc.client, _ = addrPort(c.RemoteAddr())
	sc.setAllocated(false)
	t.mu.Lock()
	t.streams[sc.key] = sc
	t.mu.Unlock()
	t.s.metrics.connections.WithLabelValues(t.name).Inc()
	return sc
}

// closeStreams closes every open connection of the transport (shutdown).
func (t *listener) closeStreams() {
	t.mu.Lock()
	conns := make([]*streamConn, 0, len(t.streams))
	for _, sc := range t.streams {
		conns = append(conns, sc)
	}
	t.mu.Unlock()
	for _, sc := range conns {
		_ = sc.Close()
	}
}

// streamConn is one TURN connection over TCP or TLS. Read returns exactly one STUN or
// ChannelData frame per call, so the frame can be inspected, and pion's own framing
// (turn.STUNConn) sees the same frames.
type streamConn struct {
	net.Conn
	t         *listener
	key       string
	client    netip.AddrPort  // the fast path's key
	raw       syscall.RawConn // plain TCP: read by readRaw
	in        streamFrames
	handshook bool
	closed    atomic.Bool
	cur       atomic.Pointer[request]
	idle      *list.Element // in Server.idle while it holds no allocation; guarded by its mu
}

// setAllocated lifts the read deadline while the connection holds an allocation, and sets it
// to the idle timeout from now when it holds none.
func (c *streamConn) setAllocated(allocated bool) {
	if allocated {
		c.t.s.idle.remove(c)
		_ = c.SetReadDeadline(time.Time{})
	} else {
		c.t.s.idle.add(c)
		_ = c.SetReadDeadline(time.Now().Add(c.t.s.idleTimeout))
	}
}

func (c *streamConn) Read(p []byte) (int, error) {
	if !c.handshook {
		if err := c.handshake(); err != nil {
			return 0, err
		}
		c.handshook = true
	}
	c.done(c.cur.Load())
	if c.raw != nil {
		return c.readRaw(p)
	}
	for {
		frame, err := c.readFrame()
		if err != nil {
			return 0, err
		}
		if n, ok := c.take(frame, p); ok {
			return n, nil
		}
	}
}

// take handles a frame from the client: relayed on the fast path, answered here, or for pion,
// copied into p (true).
func (c *streamConn) take(frame, p []byte) (int, bool) {
	if c.t.fast.fromClient(frame, c.client) {
		return 0, false // relayed on the fast path
	}
	if len(frame) >= len(p) {
		return 0, false // larger than pion reads: it would drop it as truncated anyway
	}
	v, r, ans := c.t.inspect(c.RemoteAddr(), frame)
	if v == reply {
		if ans.b != nil {
			_, _ = c.Conn.Write(ans.b)
		}
		ans.done()
		return 0, false
	}
	c.cur.Store(r)
	return copy(p, frame), true
}

// handshake completes TLS within the handshake timeout, in the connection's own goroutine.
func (c *streamConn) handshake() error {
	tc, ok := c.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.t.s.handshakeTimeout)
	defer cancel()
	return tc.HandshakeContext(ctx)
}

// readFrame reads the next frame through net.Conn (TLS).
func (c *streamConn) readFrame() ([]byte, error) {
	for {
		frame, err := c.in.next()
		if frame != nil || err != nil {
			return frame, err
		}
		space := c.in.space()
		n, err := c.Conn.Read(space)
		c.in.w += n
		if err != nil && (n == 0 || !errors.Is(err, io.EOF)) {
			return nil, err
		}
	}
}

// send writes a message for the client (the fast path's clientOut): one Write, so that it never
// interleaves with pion's.
func (c *streamConn) send(b []byte, _ netip.AddrPort) error {
	_, err := c.Conn.Write(b)
	return err
}

// Write sends for pion; a response to the request in flight finishes it, before it goes out.
func (c *streamConn) Write(p []byte) (int, error) {
	if r := c.cur.Load(); r != nil && isResponse(p) {
		c.done(r)
	}
	return c.Conn.Write(p)
}

func (c *streamConn) done(r *request) {
	if r != nil && c.cur.CompareAndSwap(r, nil) {
		c.t.finish(r)
	}
}

// Close closes the connection; the first call also gives back its file descriptor budget
// before it returns, so that a connection evicted to make room has made it.
func (c *streamConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.Conn.Close()
	}
	c.t.s.idle.remove(c)
	err := c.Conn.Close()
	if err != nil && strings.HasPrefix(err.Error(), "tls: failed to send closeNotify alert") {
		err = nil // the client went first; the connection is closed all the same (crypto/tls)
	}
	c.done(c.cur.Load())
	c.t.mu.Lock()
	if c.t.streams[c.key] == c {
		delete(c.t.streams, c.key)
	}
	c.t.mu.Unlock()
	c.t.s.metrics.connections.WithLabelValues(c.t.name).Dec()
	c.t.s.files.closeStream()
	return err
}
