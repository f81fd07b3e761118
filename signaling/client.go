package signaling

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// WebSocket close codes icebox sends besides the standard ones.
const (
	// CloseReplaced: a resume of the same session took over from this connection.
	CloseReplaced = 4001
)

// writeTimeout bounds one write: a client that does not read for this long is dropped.
const writeTimeout = 10 * time.Second

// conn is one WebSocket connection: a reader goroutine that decodes and dispatches, and a
// writer goroutine that drains the session's mailbox and sends pings. Neither ever blocks the
// other, a room, or the hub.
type conn struct {
	ws    *websocket.Conn
	h     *Hub
	ip    netip.Addr
	s     *session // set before the goroutines start
	hello []byte   // the welcome, written before anything from the mailbox

	limit   *rate.Limiter // signaling.rate_limit
	strikes *rate.Limiter // how many rate-limited messages are tolerated before closing with 1008

	closeOnce  sync.Once
	closing    chan struct{}
	closeCode  int
	closeText  string
	closeFrame []byte // written just before the close frame (bye)
	dropReason string

	readerDone chan struct{} // the reader stopped reading
	writerDone chan struct{}
	done       sync.WaitGroup // reader and writer, and the hub told of the end
}

func newConn(h *Hub, ws *websocket.Conn, ip netip.Addr) *conn {
	c := &conn{ws: ws, h: h, ip: ip, closing: make(chan struct{}),
		readerDone: make(chan struct{}), writerDone: make(chan struct{})}
	if r := h.cfg.RateLimit; r > 0 {
		c.limit = rate.NewLimiter(rate.Limit(r), max(int(2*r), 1))
	}
	// Ten rate-limited messages at once, then one a second, are tolerated; past that the client
	// is not slowing down and is closed.
	c.strikes = rate.NewLimiter(1, 10)
	return c
}

// start runs the reader and writer (counted in c.done by the caller).
func (c *conn) start() {
	go c.readLoop()
	go c.writeLoop()
}

// close asks the writer to send a close frame with code (after final, when set) and to end the
// connection. The first call wins; reason is the drop reason for metrics.
func (c *conn) close(code int, text string, final []byte, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText, c.closeFrame, c.dropReason = code, text, final, reason
		close(c.closing)
	})
}

func (c *conn) readLoop() {
	defer c.done.Done()
	defer func() {
		<-c.writerDone // it may still be flushing frames
		c.h.dropped(c)
	}()
	timeout := c.h.cfg.PongTimeout
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	c.ws.SetPongHandler(func(data string) error {
		_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
		if seq, err := strconv.ParseUint(data, 10, 64); err == nil {
			c.h.acked(c, seq)
		}
		return nil
	})
	for {
		kind, frame, err := c.ws.ReadMessage()
		if err != nil {
			c.close(websocket.CloseNormalClosure, "", nil, readDropReason(err))
			close(c.readerDone)
			break
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
		if c.limit != nil && !c.limit.Allow() {
			m, _ := decode(frame)
			c.answer(m, protoErr(CodeRateLimited, "more than %v messages a second", c.h.cfg.RateLimit))
			if !c.strikes.Allow() { // it keeps going: close with 1008
				c.close(websocket.ClosePolicyViolation, "rate limit exceeded again and again", nil, "policy")
			}
			continue
		}
		if kind != websocket.TextMessage {
			c.answer(inbound{}, protoErr(CodeBadMessage, "messages are JSON text frames"))
			continue
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
}

// answer sends the error message for m.
func (c *conn) answer(m inbound, perr *protocolError) {
	c.h.metrics.errors.WithLabelValues(perr.Code).Inc()
	c.h.reply(c.s, errorFrame(perr, m.ID))
}

func errorFrame(perr *protocolError, re []byte) []byte {
	return encode(errorMsg{Type: TypeError, Code: perr.Code, Message: perr.Message, Re: re})
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

func (c *conn) writeLoop() {
	defer c.done.Done()
	defer close(c.writerDone)
	defer func() { _ = c.ws.Close() }() // ends the reader too
	ping := time.NewTicker(c.h.cfg.PingInterval)
	defer ping.Stop()
	if !c.write(c.hello) {
		c.close(websocket.CloseNormalClosure, "", nil, "write_error")
	}
	for {
		for {
			f, ok := c.s.next(c)
			if !ok {
				break
			}
			if !c.writeSeq(f) {
				c.close(websocket.CloseNormalClosure, "", nil, "write_error")
				break
			}
			c.s.wrote(c, f.seq)
		}
		select {
		case <-c.s.wake:
		case <-ping.C:
			seq := strconv.FormatUint(c.s.lastWritten(), 10)
			if c.ws.WriteControl(websocket.PingMessage, []byte(seq), time.Now().Add(writeTimeout)) != nil {
				c.close(websocket.CloseNormalClosure, "", nil, "write_error")
			}
		case <-c.closing:
			// Within a second: what is still due (the answers that led to a 1008, say), the
			// bye, then the close frame. What does not fit stays in the mailbox for a resume.
			deadline := time.Now().Add(time.Second)
			for {
				f, ok := c.s.next(c)
				if !ok || !c.writeSeqBy(f, deadline) {
					break
				}
				c.s.wrote(c, f.seq)
			}
			if c.closeFrame != nil {
				_ = c.ws.SetWriteDeadline(deadline)
				_ = c.ws.WriteMessage(websocket.TextMessage, c.closeFrame)
			}
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText), deadline)
			// The closing handshake: wait for the client's close before cutting TCP, or it may
			// get a reset instead of the close frame.
			select {
			case <-c.readerDone:
			case <-time.After(time.Second):
			}
			return
		}
	}
}

func (c *conn) write(b []byte) bool {
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, b) == nil
}

// writeSeq writes f with its seq spliced in front: {"seq":N,"type":...}.
func (c *conn) writeSeq(f frame) bool {
	return c.writeSeqBy(f, time.Now().Add(writeTimeout))
}

func (c *conn) writeSeqBy(f frame, deadline time.Time) bool {
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
