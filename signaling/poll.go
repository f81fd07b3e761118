package signaling

import (
	"bufio"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Reads without a goroutine per idle connection.
//
// A connection waiting for its client holds no goroutine, hence no stack: the hub's poller
// (epoll on Linux, poll_linux.go) watches its socket and starts a reader when bytes arrive. The
// reader reads whole frames until gorilla's read buffer is empty, then parks the connection
// again. gorilla/websocket does not say whether its buffer holds more, so icebox gives it the
// buffer: the upgrade's hijack returns a bufio.Reader of ours, which gorilla keeps as its read
// buffer (Upgrader.ReadBufferSize 0). Pings and pongs are read here, not by gorilla, whose
// NextReader handles them and then waits for a data frame, which an idle client never sends.
//
// Connections with TLS terminated here (tls.Conn buffers what it decrypts) keep a reader
// goroutine of their own (readLoop), as do all connections where there is no poller.

// What a connection's reader is doing (conn.readsNow).
const (
	reading int32 = iota + 1 // a goroutine reads
	woken                    // a goroutine reads, and bytes have arrived since it began
	parked                   // the poller watches the socket
	over                     // the reader has ended
)

// readBufferSize is each connection's read buffer; a longer message is read through it.
const readBufferSize = 512

// hijacker hands gorilla's upgrader a read buffer of ours, over the socket as a sock, and
// keeps the socket.
type hijacker struct {
	http.ResponseWriter
	br   *bufio.Reader
	sock *sock
	nc   net.Conn
}

// Hijack implements http.Hijacker.
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		return nc, brw, err // the upgrader refuses bytes sent before the handshake's end
	}
	h.nc, h.sock = nc, &sock{Conn: nc}
	h.br = bufio.NewReaderSize(h.sock, readBufferSize)
	return h.sock, bufio.NewReadWriter(h.br, brw.Writer), nil
}

// sock is the connection as gorilla reads it: it notes whether the last read filled what it
// was given, in which case more may wait in the socket.
type sock struct {
	net.Conn
	full bool // only the reader touches it
}

func (s *sock) Read(p []byte) (int, error) {
	n, err := s.Conn.Read(p)
	s.full = n == len(p)
	return n, err
}

// pollable is the socket of a connection the poller can watch: a plain TCP connection whose
// every byte not in the socket is in br.
func (h *hijacker) pollable() syscall.RawConn {
	tc, ok := h.nc.(*net.TCPConn)
	if !ok || h.br == nil {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// readReady reads what the client has sent, frame by frame, until gorilla's buffer is empty,
// then parks the connection on the poller. A frame begun is finished within pong_timeout.
func (c *conn) readReady() {
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(c.h.cfg.PongTimeout))
		if err := c.readFrame(); err != nil {
			c.readsNow.Store(over)
			c.stopReading(err)
			return
		}
		if c.br.Buffered() == 0 && c.park() {
			return
		}
	}
}

// park hands the connection, whose buffer is empty, to the poller, and reports whether it
// did: false means bytes came in while the reader read, and are still in the socket.
//
// The poller's registration is edge-triggered: it signals arrivals, not unread bytes. So an
// arrival while a reader reads marks the connection woken, and the reader, instead of
// parking, looks whether what arrived is still to be read (it may have read it already).
func (c *conn) park() bool {
	// A read that filled its buffer may have left bytes in the socket, and their arrival was
	// signalled before. A shorter read emptied the socket: what arrives after is signalled.
	if c.sock.full && c.h.poller.unread(c) {
		return false
	}
	for !c.readsNow.CompareAndSwap(reading, parked) {
		c.readsNow.Store(reading) // from woken: only the reader leaves it
		if c.h.poller.unread(c) {
			return false
		}
	}
	return true // from here the poller may start the next reader, or the closer end the reading
}

// watch has the poller watch c's socket, which gorilla's buffer has nothing of yet: the
// poller starts c's first reader when the client sends something.
func (c *conn) watch() {
	c.readsNow.Store(parked)
	// A failed registration means the socket is closed; whoever moves the connection from
	// parked to over ends the reading.
	if err := c.h.poller.watch(c); err != nil && c.readsNow.CompareAndSwap(parked, over) {
		c.stopReading(err)
	}
}

// readFrame reads the next frame: a ping or a pong here; anything else through gorilla (a
// message, with the control frames between its fragments; a close; what gorilla refuses).
func (c *conn) readFrame() error {
	head, err := c.br.Peek(2)
	if err != nil {
		return err
	}
	n, ok := pingOrPong(head[0], head[1])
	if !ok {
		return c.readMessage()
	}
	f, err := c.br.Peek(6 + n)
	if err != nil {
		return err
	}
	payload := f[6:]
	for i := range payload {
		payload[i] ^= f[2+i%4] // unmask
	}
	if int(f[0]&0x0f) == websocket.PongMessage {
		_ = c.pongHandler(string(payload))
	} else {
		// As gorilla's default ping handler: a failed write shows on the next one.
		_ = c.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(writeTimeout))
	}
	_, err = c.br.Discard(len(f))
	return err
}

// pingOrPong reports whether a frame whose header starts with b0 b1 is a well-formed ping or
// pong from a client (final, no extension bits, masked, at most 125 bytes), and its length.
func pingOrPong(b0, b1 byte) (int, bool) {
	op := int(b0 & 0x0f)
	if b0&0xf0 != 0x80 || (op != websocket.PingMessage && op != websocket.PongMessage) || b1&0x80 == 0 {
		return 0, false
	}
	n := int(b1 & 0x7f)
	return n, n <= 125
}

// stopReading ends the reader after err, which ends the connection.
func (c *conn) stopReading(err error) {
	c.close(websocket.CloseNormalClosure, "", nil, readDropReason(err))
	c.h.poller.forget(c)
	close(c.readerDone)
	c.ended()
}

// unpark ends the reader of a parked connection once the closer has closed its socket: nothing
// will come to wake it.
func (c *conn) unpark() {
	if c.readsNow.CompareAndSwap(parked, over) {
		c.h.poller.forget(c)
		close(c.readerDone)
		c.ended()
	}
}
