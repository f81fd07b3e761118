package stunturn

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// relayAllocator is icebox's turn.RelayAddressGenerator. It binds relay sockets on
// turn.relay_address and finds a free port by scanning the whole relay range from a random
// start (pion's stock generator gives up after 10 random tries, so a busy node refuses
// allocations long before its range is full). It advertises public_ip as the relay address,
// enforces turn.total_quota, and wraps every relay socket in the peer policy.
type relayAllocator struct {
	bind       netip.Addr
	public     net.IP
	min, max   int
	totalQuota int
	policy     *peerPolicy
	held       *portSet    // the ports of conns, for the peer policy's per-packet check
	files      *fileBudget // each relay socket is a file descriptor
	metrics    *metrics
	log        *slog.Logger
	refusals   logEvery // a full node logs once a while, not once per Allocate

	mu     sync.Mutex
	conns  map[int]*relayConn // open relay sockets by port
	closed totals             // what the closed ones relayed
}

func newRelayAllocator(c Config, public netip.Addr, policy *peerPolicy, files *fileBudget, m *metrics, log *slog.Logger) *relayAllocator {
	r := &relayAllocator{
		bind:     netip.MustParseAddr(c.RelayAddress),
		public:   public.AsSlice(),
		min:      c.RelayPortMin,
		max:      c.RelayPortMax,
		policy:   policy,
		held:     policy.relays,
		files:    files,
		metrics:  m,
		log:      log,
		refusals: logEvery{interval: 10 * time.Second},
		conns:    map[int]*relayConn{},
	}
	r.setTotalQuota(c.TotalQuota)
	return r
}

// setTotalQuota changes turn.total_quota (0: as many as the relay ports); relay sockets above a
// lowered quota stay until their allocations end.
func (r *relayAllocator) setTotalQuota(total int) {
	if size := r.max - r.min + 1; total == 0 || total > size {
		total = size
	}
	r.mu.Lock()
	r.totalQuota = total
	r.mu.Unlock()
}

// Validate is part of turn.RelayAddressGenerator.
func (r *relayAllocator) Validate() error {
	if r.min < 1 || r.max > 65535 || r.min > r.max {
		return fmt.Errorf("relay port range %d-%d: %w", r.min, r.max, ErrInvalidConfig)
	}
	return nil
}

// AllocateConn is part of turn.RelayAddressGenerator: TCP relays (RFC 6062) are not offered.
func (r *relayAllocator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, ErrTCPRelay
}

// AllocatePacketConn binds a relay socket: on requestedPort when the client asked for one
// (EVEN-PORT), else on the first free port of the range after a random start.
func (r *relayAllocator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	if network != "udp4" {
		return nil, nil, fmt.Errorf("%w: %s", ErrTCPRelay, network)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.conns) >= r.totalQuota {
		r.refuse(refusedTotalQuota)
		return nil, nil, ErrTotalQuota
	}
	if !r.files.openRelay() {
		r.refuse(refusedFileLimit)
		return nil, nil, ErrFileLimit
	}
	conn, addr, err := r.allocate(requestedPort)
	if err != nil {
		r.files.closeRelay()
	}
	return conn, addr, err
}

// allocate binds a relay socket; r.mu is held.
func (r *relayAllocator) allocate(requestedPort int) (net.PacketConn, net.Addr, error) {
	if requestedPort != 0 {
		if requestedPort < r.min || requestedPort > r.max || r.conns[requestedPort] != nil {
			return nil, nil, fmt.Errorf("%w: port %d", ErrNoRelayPort, requestedPort)
		}
		return r.bindPort(requestedPort)
	}
	size := r.max - r.min + 1
	start := rand.IntN(size) //nolint:gosec // spreading ports, not a secret
	for i := range size {
		port := r.min + (start+i)%size
		if r.conns[port] != nil {
			continue
		}
		conn, addr, err := r.bindPort(port)
		if errors.Is(err, syscall.EADDRINUSE) {
			continue // held by another process
		}
		return conn, addr, err
	}
	r.refuse(refusedNoPort)
	return nil, nil, ErrNoRelayPort
}

// bindPort binds one relay socket; r.mu is held.
func (r *relayAllocator) bindPort(port int) (net.PacketConn, net.Addr, error) {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.bind, uint16(port))))
	if err != nil {
		return nil, nil, err
	}
	raw, err := newRawUDP(conn)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	rc := &relayConn{UDPConn: conn, raw: raw, alloc: r, port: port, policy: r.policy, metrics: r.metrics, txSalt: newTxSalt()}
	rc.stats.created = time.Now()
	rc.loop = newReadLoop(raw, 1, relayBatch, relayHeadroom, relayMTU, rc.fromPeer)
	r.conns[port] = rc
	r.held.add(uint16(port))
	return rc, &net.UDPAddr{IP: r.public, Port: port}, nil
}

// release gives back the port of a closed relay socket (once per socket), and records what
// it relayed in its lifetime.
func (r *relayAllocator) release(c *relayConn) {
	r.mu.Lock()
	delete(r.conns, c.port)
	r.held.remove(uint16(c.port))
	r.closed.add(&c.stats)
	r.mu.Unlock()
	r.files.closeRelay()
	st := &c.stats
	r.metrics.lifetime.Observe(time.Since(st.created).Seconds())
	r.metrics.allocationBytes.Observe(float64(st.toPeer.bytes.Load() + st.fromPeer.bytes.Load()))
}

// capacity is the number of relay sockets allowed (turn.total_quota, or the port range).
func (r *relayAllocator) capacity() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.totalQuota
}

// each calls f for every open relay socket.
func (r *relayAllocator) each(f func(*relayConn)) {
	r.mu.Lock()
	conns := make([]*relayConn, 0, len(r.conns))
	for _, c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	for _, c := range conns {
		f(c)
	}
}

// totals is what every relay socket, closed or open, has relayed so far.
func (r *relayAllocator) totals() totals {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.closed
	for _, c := range r.conns {
		t.add(&c.stats)
	}
	return t
}

// conn is the open relay socket on port, if any.
func (r *relayAllocator) conn(port int) *relayConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[port]
}

// refuse counts a refused allocation and logs at most once every 10 seconds; r.mu is held.
func (r *relayAllocator) refuse(reason string) {
	r.metrics.allocateRefused.WithLabelValues(reason).Inc()
	if ok, held := r.refusals.allow(time.Now()); ok {
		r.log.Warn("relay allocation refused: node full (508)", "reason", reason,
			"relay_sockets", len(r.conns), "limit", r.totalQuota, "file_limit", r.files.limit,
			"refused_since_last_log", held)
	}
}

// relayConn is one allocation's relay socket. The peer policy is applied to every datagram in
// both directions; a refused one is dropped silently, because an error from ReadFrom would end
// the allocation and an error from WriteTo is logged by pion per packet.
type relayConn struct {
	*net.UDPConn
	alloc   *relayAllocator
	port    int
	policy  *peerPolicy
	metrics *metrics
	closed  atomic.Bool

	// The fast path (fastpath.go): raw socket I/O, reading with room for a ChannelData or
	// Data indication header in front of each datagram; the client to send to, the bound
	// channels by peer and the permitted peer IPs. Only pion's reading goroutine of the
	// allocation reads.
	raw    *rawUDP
	loop   *readLoop
	route  atomic.Pointer[route]
	peers  sync.Map // netip.AddrPort -> *binding: the bound channels of this relay by peer
	npeers atomic.Int64
	perms  sync.Map // netip.Addr -> *verdict: the peer IPs with a permission
	nperms atomic.Int64
	txid   atomic.Uint64 // Data indications' transaction IDs: a count and a random salt
	txSalt uint32
	stats  relayStats
}

const (
	// relayMTU is the largest datagram relayed, as pion's own reader takes.
	relayMTU = 1600
	// relayBatch datagrams at most are read from a relay socket at once: few, since a socket
	// serves one allocation and its buffers are memory held for each. A relay socket starts
	// with one buffer and grows to relayBatch only once a read fills its batch (a busy peer).
	relayBatch = 4
	// listenBatch datagrams are read from a listening socket at once: it carries every client.
	listenBatch = 32
)

// ReadFrom returns the next datagram from an allowed peer, with a *net.UDPAddr as pion needs.
// Datagrams from the peer of a bound channel go straight to the client (fast path) and are
// not returned.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	data, from, err := c.loop.next()
	if err != nil {
		return 0, nil, err
	}
	return copy(p, data), net.UDPAddrFromAddrPort(netip.AddrPortFrom(from.Addr().Unmap(), from.Port())), nil
}

// fromPeer handles one datagram read into b[relayHeadroom:relayHeadroom+n]: relayed to the
// client (fast path), dropped by the peer policy, or kept for pion (true).
func (c *relayConn) fromPeer(b []byte, n int, from netip.AddrPort) bool {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if c.forwardToClient(b, n, from) {
		return false
	}
	if c.policy.packet(from) != "" {
		c.stats.fromPeer.dropped.Add(1)
		return false
	}
	c.stats.fromPeer.relayed(n)
	return true
}

// WriteTo sends p to an allowed peer (a UDP address); to any other address it sends nothing.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	_, udp := addr.(*net.UDPAddr)
	to, ok := addrPort(addr)
	if !ok || !udp || c.policy.packet(to) != "" {
		c.stats.toPeer.dropped.Add(1)
		return len(p), nil
	}
	if err := c.raw.sendto(p, netip.AddrPortFrom(to.Addr().Unmap(), to.Port())); err != nil {
		return 0, err
	}
	c.stats.toPeer.relayed(len(p))
	return len(p), nil
}

// Close closes the socket and gives its port back to the range. A second Close does nothing:
// icebox closes the socket of an allocation it deletes (Refresh with lifetime 0), and pion
// closes it again when it tears the allocation down.
func (c *relayConn) Close() error {
	if !c.retire() {
		return nil
	}
	return c.raw.close()
}

// retire gives the socket's port, quota slot and file budget back, once, ahead of closing it:
// a deleted allocation's port is free before its deletion is answered, and the socket closes
// after (a close waits for the socket's reader, on whose goroutine pion then tears the
// allocation down).
func (c *relayConn) retire() bool {
	if !c.closed.CompareAndSwap(false, true) {
		return false
	}
	c.alloc.release(c)
	return true
}
