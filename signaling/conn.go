package signaling

import (
	"bufio"
	"errors"
	"io"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// writeTimeout bounds one write: a client that does not read for this long is dropped.
const writeTimeout = 10 * time.Second

// conn is one WebSocket connection. Its reader decodes and dispatches: a goroutine that the
// hub's poller starts when the client has sent something and that ends once gorilla's buffer is
// empty (poll.go), or, where the poller cannot watch the socket, a goroutine of its own. Writes
// happen only when there is something to write: a flush, run by the hub's workers when a frame
// lands in the session's mailbox and done once the mailbox is empty, and a timer for pings. An idle
// connection costs no goroutine, which is what lets one node hold tens of thousands; nothing a
// connection does ever blocks another one, a room, or the hub.
type conn struct {
	ws *websocket.Conn
	h  *Hub
	s  *session // set before start

	limit   atomic.Pointer[rate.Limiter] // signaling.rate_limit
	strikes *rate.Limiter                // how many rate-limited messages are tolerated before closing with 1008

	wmu      sync.Mutex  // serialises writes
	flushing atomic.Bool // a flush goroutine is running
	ping     Timer

	closeOnce  sync.Once
	closing    chan struct{}
	closeCode  int
	closeText  string
	closeFrame []byte // written just before the close frame (bye)
	closeSeq   uint64 // the last frame queued when the close began: the closer writes up to it
	dropReason string

	readerDone chan struct{} // the reader stopped reading
	heard      atomic.Int64  // when the client last sent a message or a pong (Unix ns)

	// Reads without a goroutine between messages (poll.go).
	br       *bufio.Reader   // gorilla's read buffer: what it holds is read before parking
	sock     *sock           // what br reads from
	raw      syscall.RawConn // the TCP socket, watched by the hub's poller while parked
	pollID   uint64          // the connection's key in the poller
	readsNow atomic.Int32    // reading, woken, parked or over
	running  atomic.Int32    // the reader and the closer: the last to end reports the drop
	done     sync.WaitGroup  // the reader and the closer
}

func newConn(h *Hub, ws *websocket.Conn) *conn {
	c := &conn{ws: ws, h: h, closing: make(chan struct{}), readerDone: make(chan struct{})}
	c.heard.Store(time.Now().UnixNano())
	// Both readers: gorilla calls it for a pong it reads (a parked connection's reader reads
	// pongs itself, but not those between the fragments of a message).
	ws.SetPongHandler(c.pongHandler)
	c.setRate(h.limits.Load().rateLimit)
	// Ten rate-limited messages at once, then one a second, are tolerated; past that the client
	// is not slowing down and is closed.
	c.strikes = rate.NewLimiter(1, 10)
	c.ping = h.clock.AfterFunc(h.cfg.PingInterval, c.sendPing) // waits for c.wmu: after the welcome
	return c
}

// setRate puts signaling.rate_limit (messages a second, burst twice that; 0 is off) in force
// for this connection's next messages.
func (c *conn) setRate(r float64) {
	lim := rate.Limit(r)
	if r <= 0 {
		lim = rate.Inf
	}
	if old := c.limit.Load(); old == nil || old.Limit() != lim {
		c.limit.Store(rate.NewLimiter(lim, max(int(2*r), 1)))
	}
}

// hello writes the welcome, before anything from the mailbox: the caller holds c.wmu from
// before the session is attached until this is written.
func (c *conn) hello(welcome []byte) bool {
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, welcome) == nil
}

// start runs the reader and the pings, and writes what the mailbox holds (counted in c.done
// by the caller: the reader and the closer). The reader is the poller's when it can watch the
// socket, else a goroutine of its own.
func (c *conn) start() {
	if c.raw != nil && c.h.poller != nil {
		c.watch()
	} else {
		go c.readLoop()
	}
	c.kick()
}

// kick makes sure a flush goroutine writes what the mailbox holds.
func (c *conn) kick() {
	select {
	case <-c.closing:
		return
	default:
	}
	if c.flushing.CompareAndSwap(false, true) {
		c.h.workers.run(c.flush)
	}
}

// flush writes the mailbox until it is empty.
func (c *conn) flush() {
	for {
		c.wmu.Lock()
		ok := c.writeAll(time.Time{}, math.MaxUint64)
		c.wmu.Unlock()
		if !ok {
			c.flushing.Store(false)
			c.close(websocket.CloseNormalClosure, "", nil, "write_error")
			return
		}
		c.flushing.Store(false)
		// A frame pushed after the last look but before the flag dropped found a flusher
		// running and did not start one: look once more.
		if _, more := c.s.next(c); !more || !c.flushing.CompareAndSwap(false, true) {
			return
		}
	}
}

// writeAll writes the mailbox's frames for c up to seq upTo, each within writeTimeout and
// all by deadline (zero: none); c.wmu is held. False means a write failed.
func (c *conn) writeAll(deadline time.Time, upTo uint64) bool {
	for {
		select {
		case <-c.closing:
			if deadline.IsZero() {
				return true // the closer flushes what is left, within its own time
			}
		default:
		}
		f, ok := c.s.next(c)
		if !ok || f.seq > upTo {
			return true
		}
		d := time.Now().Add(writeTimeout)
		if !deadline.IsZero() && deadline.Before(d) {
			d = deadline
		}
		if !c.writeSeq(f, d) {
			return false
		}
		c.s.wrote(c, f.seq)
	}
}

// sendPing sends a WebSocket ping carrying the last seq written: its pong acknowledges
// every frame up to it. A client silent for pong_timeout is dropped here: a parked connection
// has no read, hence no read deadline, to notice it.
func (c *conn) sendPing() {
	select {
	case <-c.closing:
		return
	default:
	}
	silent := time.Since(time.Unix(0, c.heard.Load()))
	if silent >= c.h.cfg.PongTimeout {
		c.close(websocket.CloseNormalClosure, "", nil, "pong_timeout")
		return
	}
	c.wmu.Lock()
	if c.s == nil { // never started
		c.wmu.Unlock()
		return
	}
	seq := strconv.FormatUint(c.s.lastWritten(), 10)
	err := c.ws.WriteControl(websocket.PingMessage, []byte(seq), time.Now().Add(writeTimeout))
	c.wmu.Unlock()
	if err != nil {
		c.close(websocket.CloseNormalClosure, "", nil, "write_error")
		return
	}
	c.ping.Reset(min(c.h.cfg.PingInterval, c.h.cfg.PongTimeout-silent))
}

// closeWait bounds the closing handshake: how long the closer waits for the client's close
// frame before it cuts TCP.
const closeWait = 2 * time.Second

// close ends the connection: the first call starts the closer, which writes everything
// queued until now (within closeFlush), final (bye) when set, and a close frame with code,
// then waits for the client's close before cutting TCP. The reader handles nothing more.
// reason is the drop reason for metrics.
func (c *conn) close(code int, text string, final []byte, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText, c.closeFrame, c.dropReason = code, text, final, reason
		if c.s != nil {
			c.closeSeq = c.s.lastQueued()
		}
		close(c.closing)
		go c.closer()
	})
}

// closeFlush bounds how long the closer writes what was queued before the close (each write
// also by writeTimeout, as any write).
const closeFlush = 3 * writeTimeout

func (c *conn) closer() {
	defer c.ended()
	c.ping.Stop()
	deadline := time.Now().Add(closeFlush)
	c.wmu.Lock()
	if c.writeAll(deadline, c.closeSeq) && c.closeFrame != nil {
		_ = c.ws.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.ws.WriteMessage(websocket.TextMessage, c.closeFrame)
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText), time.Now().Add(time.Second))
	c.wmu.Unlock()
	// The closing handshake: wait for the client's close (the reader reads, and drops, what
	// comes until then) before cutting TCP, or it may get a reset instead of the close frame.
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-t.C:
	}
	_ = c.ws.Close() // ends the reader too
	c.unpark()
}

// ended is called by the reader and the closer as they end; the last one reports the drop,
// so that the session keeps this connection until everything queued before the close is
// written.
func (c *conn) ended() {
	if c.running.Add(-1) == 0 {
		c.h.dropped(c)
	}
	c.done.Done()
}

// readBufs hold frames while they are decoded: the decoded message copies what it keeps.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// readLoop reads with a goroutine of its own, blocked between messages: for connections the
// poller cannot watch (TLS terminated here, or a platform without epoll).
func (c *conn) readLoop() {
	defer c.ended()
	timeout := c.h.cfg.PongTimeout
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	for {
		if err := c.readMessage(); err != nil {
			c.close(websocket.CloseNormalClosure, "", nil, readDropReason(err))
			close(c.readerDone)
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	}
}

// pongHandler takes a pong: the client is there, and has every frame up to the seq the ping
// carried.
func (c *conn) pongHandler(data string) error {
	c.heard.Store(time.Now().UnixNano())
	_ = c.ws.SetReadDeadline(time.Now().Add(c.h.cfg.PongTimeout))
	if seq, err := strconv.ParseUint(data, 10, 64); err == nil {
		c.h.acked(c, seq)
	}
	return nil
}

// readMessage reads one message and, unless the connection is closing, handles it.
func (c *conn) readMessage() error {
	kind, r, err := c.ws.NextReader()
	if err != nil {
		return err
	}
	bp := readBufs.Get().(*[]byte)
	frame, err := readAll(r, (*bp)[:0])
	if err != nil {
		readBufs.Put(bp)
		return err
	}
	c.heard.Store(time.Now().UnixNano())
	select {
	case <-c.closing: // closing: nothing more is handled or answered
	default:
		c.dispatch(kind, frame)
	}
	if cap(frame) <= 64<<10 {
		*bp = frame[:0]
		readBufs.Put(bp)
	}
	return nil
}

func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// dispatch handles one frame.
func (c *conn) dispatch(kind int, frame []byte) {
	if !c.limit.Load().Allow() {
		m, _ := decode(frame)
		c.answer(m, protoErr(protocol.CodeRateLimited, "more than %v messages a second", float64(c.limit.Load().Limit())))
		if !c.strikes.Allow() { // it keeps going: close with 1008
			c.close(websocket.ClosePolicyViolation, "rate limit exceeded again and again", nil, "policy")
		}
		return
	}
	if kind != websocket.TextMessage {
		c.answer(protocol.Message{}, protoErr(protocol.CodeBadMessage, "messages are JSON text frames"))
		return
	}
	m, perr := decode(frame)
	c.h.metrics.messages.WithLabelValues(messageLabel(m.Type, perr)).Inc()
	if perr == nil {
		perr = c.h.handle(c.s, m)
	}
	if perr != nil {
		c.answer(m, perr)
	}
}

// answer sends the error message for m.
func (c *conn) answer(m protocol.Message, perr *protocolError) {
	c.h.metrics.errors.WithLabelValues(perr.Code).Inc()
	c.h.reply(c.s, errorFrame(perr, m.ID))
}

func errorFrame(perr *protocolError, re []byte) []byte {
	return encode(protocol.Error{Type: protocol.TypeError, Code: perr.Code, Message: perr.Message, Re: re})
}

func readDropReason(err error) string {
	var ne net.Error
	var ce *websocket.CloseError
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		return "too_large"
	case errors.As(err, &ne) && ne.Timeout():
		return "pong_timeout"
	case errors.As(err, &ce):
		return "closed_by_client"
	}
	return "network"
}

// writeSeq writes f with its seq spliced in front: {"seq":N,"type":...}; c.wmu is held.
func (c *conn) writeSeq(f frame, deadline time.Time) bool {
	_ = c.ws.SetWriteDeadline(deadline)
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return false
	}
	var head [32]byte
	b := append(head[:0], `{"seq":`...)
	b = strconv.AppendUint(b, f.seq, 10)
	b = append(b, ',')
	if _, err := w.Write(b); err != nil {
		return false
	}
	if _, err := w.Write(f.data[1:]); err != nil {
		return false
	}
	return w.Close() == nil
}
