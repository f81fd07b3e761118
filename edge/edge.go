package edge

import (
	"cmp"
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is the edge section of icebox's configuration.
type Config struct {
	// Listen is the edge's TCP address, e.g. ":443"; "" turns the edge off.
	Listen string `mapstructure:"listen"`
	// UDPListen adds STUN/TURN over UDP on this address, e.g. ":443"; "" is off. The UDP side
	// is package stunturn's: this package serves the TCP port.
	UDPListen string `mapstructure:"udp_listen"`
}

// DefaultConfig is the edge turned off.
func DefaultConfig() Config { return Config{} }

// Validate checks the section; the addresses are checked by whoever binds them (cmd/icebox).
func (c Config) Validate() error {
	if c.Listen == "" && c.UDPListen != "" {
		return errors.New("udp_listen: needs edge.listen: the edge's UDP port serves TURN beside its TCP port")
	}
	return nil
}

// ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737): a handshake that negotiates it is
// a validation, over once the certificate was shown.
const acmeTLS1 = "acme-tls/1"

// Defaults of Options.
const (
	defaultHandshakeTimeout  = 10 * time.Second
	defaultFirstBytesTimeout = 10 * time.Second
	defaultMaxPending        = 1024
)

// Options is what New needs besides the bound listener.
type Options struct {
	// TLS is the server's TLS configuration: the certificate (GetCertificate: the public_host
	// one when the client sends no SNI) and NextProtos (h2, http/1.1, and acme-tls/1 while ACME
	// answers TLS-ALPN-01 challenges here). A client offering only other protocols (TURN's
	// stun.turn, say) is served without ALPN rather than refused.
	TLS *tls.Config

	Logger   *slog.Logger
	Registry prometheus.Registerer

	// HandshakeTimeout bounds the TLS handshake from the connection's accept; FirstBytesTimeout
	// bounds the wait for bytes that decide the route, before TLS and again after the
	// handshake. 0: 10 seconds each.
	HandshakeTimeout, FirstBytesTimeout time.Duration
	// MaxPending bounds the connections not yet routed (in their handshake or first bytes);
	// past it the oldest is closed to make room. 0: 1024.
	MaxPending int
}

// Edge is the edge port: it accepts every connection, routes it by its first bytes and hands it
// to one of its listeners.
type Edge struct {
	ln                         net.Listener
	tls                        *tls.Config
	log                        *slog.Logger
	metrics                    *metrics
	handshakeTimeout, firstLag time.Duration

	turnTCP, turnTLS, https, http *Listener

	pending  pending
	evictLog struct {
		sync.Mutex
		last time.Time
		held int
	}

	mu       sync.Mutex // guards closed and the WaitGroup's Add against Shutdown's Wait
	closed   bool
	conns    sync.WaitGroup // one per connection being routed
	done     chan struct{}
	doneOnce sync.Once
}

// New serves the edge on ln, which it owns from here on, once Serve runs.
func New(ln net.Listener, o Options) (*Edge, error) {
	if ln == nil || o.TLS == nil || o.Logger == nil || o.Registry == nil {
		return nil, errors.New("edge: a listener, TLS, Logger and Registry are required")
	}
	base := o.TLS.Clone()
	noALPN := o.TLS.Clone()
	noALPN.NextProtos = nil
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		for _, offered := range hello.SupportedProtos {
			for _, p := range base.NextProtos {
				if offered == p || (offered == "http/1.1" && p == "h2") {
					return nil, nil // Go negotiates (or falls back to HTTP/1.1 without ALPN)
				}
			}
		}
		// Only protocols icebox does not name (or none): go on without ALPN, where Go
		// would end the handshake with no_application_protocol.
		return noALPN, nil
	}
	addr := ln.Addr()
	e := &Edge{
		ln:               ln,
		tls:              base,
		log:              o.Logger.With("component", "edge"),
		metrics:          newMetrics(o.Registry),
		handshakeTimeout: cmp.Or(o.HandshakeTimeout, defaultHandshakeTimeout),
		firstLag:         cmp.Or(o.FirstBytesTimeout, defaultFirstBytesTimeout),
		turnTCP:          newListener(addr),
		turnTLS:          newListener(addr),
		https:            newListener(addr),
		http:             newListener(addr),
		pending:          pending{max: cmp.Or(o.MaxPending, defaultMaxPending)},
		done:             make(chan struct{}),
	}
	return e, nil
}

// Addr is the edge port's address.
func (e *Edge) Addr() net.Addr { return e.ln.Addr() }

// TURNTCP yields plain TURN over TCP connections, for stunturn.Options.EdgeTCP.
func (e *Edge) TURNTCP() *Listener { return e.turnTCP }

// TURNTLS yields TURN over TLS connections, past their handshake, for stunturn.Options.EdgeTLS.
func (e *Edge) TURNTLS() *Listener { return e.turnTLS }

// HTTPS yields HTTP over TLS connections, past their handshake, for an HTTP server that does not
// terminate TLS itself (Serve, not ServeTLS). A connection that negotiated h2 is the *tls.Conn
// itself, so net/http serves it HTTP/2; the others implement ConnectionState, so requests carry
// their TLS state.
func (e *Edge) HTTPS() *Listener { return e.https }

// HTTP yields plain HTTP connections, for a server that redirects them to https (Redirect).
func (e *Edge) HTTP() *Listener { return e.http }

// Serve accepts connections until Shutdown; it returns nil then, or the listener's failure.
func (e *Edge) Serve() error {
	backoff := 5 * time.Millisecond
	for {
		c, err := e.ln.Accept()
		if err != nil {
			select {
			case <-e.done:
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors, say: keep the port alive and try again.
			e.log.Warn("edge accept failed; retrying", "err", err, "backoff", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			_ = c.Close()
			continue
		}
		e.conns.Add(1)
		e.mu.Unlock()
		go e.handle(c)
	}
}

// Drain changes nothing here: the servers the edge hands connections to drain themselves.
func (e *Edge) Drain() {}

// Shutdown stops accepting, closes the connections not yet routed and waits for their
// goroutines. Routed connections belong to their servers, which shut down themselves.
func (e *Edge) Shutdown(ctx context.Context) error {
	e.doneOnce.Do(func() { close(e.done) })
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	err := e.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	e.pending.closeAll()
	waited := make(chan struct{})
	go func() {
		e.conns.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-ctx.Done():
		return ctx.Err()
	}
	return err
}

// handle routes one accepted connection, or closes it.
func (e *Edge) handle(raw net.Conn) {
	defer e.conns.Done()
	accepted := time.Now()
	entry, evicted := e.pending.add(raw)
	e.metrics.pending.Inc()
	if evicted != nil {
		_ = evicted.Close()
		e.logEviction(evicted)
	}
	routed, removed := false, false
	outcome := outShutdown
	defer func() {
		if !removed && !e.pending.remove(entry) {
			outcome = outEvicted // closed by add: another connection took its place
		}
		e.metrics.pending.Dec()
		e.metrics.connections.WithLabelValues(outcome).Inc()
		if !routed {
			_ = raw.Close()
		}
	}()

	_ = raw.SetDeadline(accepted.Add(e.firstLag))
	first, r, err := sniff(raw, true)
	if err != nil {
		outcome = e.readFailure(raw, "first bytes", err)
		return
	}
	var conn net.Conn = &prefixConn{Conn: raw, prefix: first}
	var to *Listener
	switch r {
	case routeTURN:
		to, outcome = e.turnTCP, outTURNTCP
	case routeHTTP:
		to, outcome = e.http, outHTTP
	case routeTLS:
		_ = raw.SetDeadline(accepted.Add(e.handshakeTimeout))
		tc := tls.Server(conn, e.tls)
		if err := tc.Handshake(); err != nil {
			if outcome = e.readFailure(raw, "TLS handshake", err); outcome == outUnknown {
				outcome = outHandshake
			}
			return
		}
		switch tc.ConnectionState().NegotiatedProtocol {
		case acmeTLS1:
			outcome = outACME
			return
		case "h2": // the client speaks HTTP/2: net/http serves it on the *tls.Conn itself
			to, outcome, conn = e.https, outHTTPS, tc
		default:
			_ = raw.SetDeadline(time.Now().Add(e.firstLag))
			first, r, err := sniff(tc, false)
			if err != nil {
				outcome = e.readFailure(raw, "first bytes after the TLS handshake", err)
				return
			}
			conn = &tlsPrefixConn{prefixConn: prefixConn{Conn: tc, prefix: first}, tls: tc}
			switch r {
			case routeTURN:
				to, outcome = e.turnTLS, outTURNTLS
			case routeHTTP:
				to, outcome = e.https, outHTTPS
			default:
				outcome = outUnknown
				e.log.Debug("edge: neither TURN nor HTTP after the TLS handshake; closed", "client", raw.RemoteAddr().String(), "first_bytes", fmt.Sprintf("%q", first))
				return
			}
		}
	default:
		outcome = outUnknown
		e.log.Debug("edge: neither TLS, TURN nor HTTP; closed", "client", raw.RemoteAddr().String(), "first_bytes", fmt.Sprintf("%q", first))
		return
	}
	// Whoever accepts sets its own deadlines (TURN's idle timeout, HTTP's read timeouts).
	_ = raw.SetDeadline(time.Time{})
	removed = true
	if !e.pending.remove(entry) {
		outcome = outEvicted // made room for another just now
		return
	}
	if routed = to.deliver(conn, e.done); !routed {
		outcome = outShutdown
	}
}

// sniff reads the first bytes of c until classify decides where it goes. The bytes read are
// returned, to be read again by whoever gets the connection.
func sniff(c net.Conn, plain bool) ([]byte, route, error) {
	buf := make([]byte, 0, 64)
	for {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if r := classify(buf, plain); r != routeMore {
			return buf, r, nil
		}
		if err != nil {
			return buf, routeMore, err
		}
		if len(buf) == cap(buf) { // cannot happen: classify decides within sniffBytes
			return buf, routeUnknown, nil
		}
	}
}

// readFailure names why reading a connection's first bytes (or its handshake) failed, and logs
// it at debug level: a client that goes away or sends nothing is no news.
func (e *Edge) readFailure(c net.Conn, what string, err error) string {
	outcome := outUnknown
	switch {
	case e.isClosed():
		outcome = outShutdown
	case errors.Is(err, os.ErrDeadlineExceeded):
		outcome = outTimeout
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF):
		outcome = outClosed
	}
	e.log.Debug("edge: connection closed before it was routed", "client", c.RemoteAddr().String(), "while", what, "outcome", outcome, "err", err)
	return outcome
}

func (e *Edge) isClosed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// logEviction logs a connection closed to make room, at most every 10 seconds with the count.
func (e *Edge) logEviction(c net.Conn) {
	l := &e.evictLog
	l.Lock()
	defer l.Unlock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < 10*time.Second {
		l.held++
		return
	}
	e.log.Warn("edge: too many connections in their TLS handshake or first bytes; closing the oldest to make room "+
		"(a flood of half-open connections, or raise the limit if this is real traffic)",
		"client", c.RemoteAddr().String(), "max_pending", e.pending.max, "closed_since_last_log", l.held)
	l.last, l.held = now, 0
}

// pending are the connections not yet routed, oldest first.
type pending struct {
	max int
	mu  sync.Mutex
	l   list.List // of *pendingConn
}

type pendingConn struct {
	net.Conn
	elem *list.Element // nil once out of the set; guarded by pending.mu
}

// add puts c in the set; when that goes past max, the oldest is taken out and returned, for
// the caller to close.
func (p *pending) add(c net.Conn) (*pendingConn, net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := &pendingConn{Conn: c}
	pc.elem = p.l.PushBack(pc)
	if p.l.Len() <= p.max {
		return pc, nil
	}
	oldest := p.l.Remove(p.l.Front()).(*pendingConn)
	oldest.elem = nil
	return pc, oldest.Conn
}

// remove takes pc out of the set; false when it was no longer there (taken out by add).
func (p *pending) remove(pc *pendingConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc.elem == nil {
		return false
	}
	p.l.Remove(pc.elem)
	pc.elem = nil
	return true
}

// closeAll closes every connection in the set (shutdown); they take themselves out.
func (p *pending) closeAll() {
	p.mu.Lock()
	var conns []net.Conn
	for e := p.l.Front(); e != nil; e = e.Next() {
		conns = append(conns, e.Value.(*pendingConn).Conn)
	}
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}
