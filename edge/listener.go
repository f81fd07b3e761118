package edge

import (
	"crypto/tls"
	"net"
	"sync"
)

// Listener yields the connections the edge routed one way (TURN over TCP or TLS, HTTPS, plain
// HTTP), for the server of that kind to Accept. Closing it is for that server: connections
// routed here afterwards are closed by the edge.
type Listener struct {
	addr      net.Addr
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newListener(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept waits for the next connection routed here.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept return net.ErrClosed.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// Addr is the edge port's address.
func (l *Listener) Addr() net.Addr { return l.addr }

// deliver hands c to whoever accepts; false when the listener or the edge (done) is closed.
func (l *Listener) deliver(c net.Conn, done <-chan struct{}) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
	case <-done:
	}
	return false
}

// prefixConn is a connection whose first bytes were read to route it: Read returns them
// again before what follows.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// tlsPrefixConn is a prefixConn over TLS. ConnectionState lets net/http fill Request.TLS, as
// it does for a *tls.Conn.
type tlsPrefixConn struct {
	prefixConn
	tls *tls.Conn
}

// ConnectionState is the TLS connection's.
func (c *tlsPrefixConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }
