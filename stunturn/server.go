package stunturn

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/credentials"
)

// Options is what New needs besides the turn section: already-bound sockets and what other
// sections decide.
type Options struct {
	// UDP are the listening UDP sockets (ListenUDP); TCP and TLS the stream listeners, TLS
	// already terminating TLS. Nil or empty means the transport is off.
	UDP []net.PacketConn
	TCP net.Listener
	TLS net.Listener
	// EdgeUDP, EdgeTCP and EdgeTLS are the edge port's share of TURN (package edge): its UDP
	// sockets, and listeners yielding the connections it routed to TURN, EdgeTLS's already
	// past their handshake. Each is a transport of its own ("edge-udp", "edge-tcp",
	// "edge-tls"): a browser allocates from one local socket on every TURN server it is given,
	// and a transport knows its clients by their address alone.
	EdgeUDP []net.PacketConn
	EdgeTCP net.Listener
	EdgeTLS net.Listener

	// Secrets verify TURN REST credentials; MaxTTL is credentials.max_ttl.
	Secrets *credentials.Secrets
	MaxTTL  time.Duration
	// PublicIP is advertised as the relay address (XOR-RELAYED-ADDRESS).
	PublicIP netip.Addr

	Logger   *slog.Logger
	Registry prometheus.Registerer

	// IdleTimeout closes a TCP or TLS connection that holds no allocation this long after it
	// opened or its last allocation ended, whatever it sends meanwhile; HandshakeTimeout
	// bounds the TLS handshake. 0: 30 seconds and 10 seconds.
	IdleTimeout, HandshakeTimeout time.Duration
	// MaxFiles is the file descriptor limit TURN's connections and relay sockets are budgeted
	// against (fileBudget); 0 reads the process's RLIMIT_NOFILE.
	MaxFiles int
}

// Server is icebox's STUN/TURN relay: one pion/turn server per transport, sharing the relay
// port range, the peer policy, the quotas and the credentials.
type Server struct {
	log      *slog.Logger
	secrets  *credentials.Secrets
	maxTTL   time.Duration
	policy   *peerPolicy
	relays   *relayAllocator
	quota    *quotas
	files    *fileBudget
	metrics  *metrics
	draining atomic.Bool

	maxPermissions, maxChannels int
	idle                        idleStreams // TCP and TLS connections without an allocation
	shedLog                     logEvery    // connections closed for the file budget, logged once a while

	idleTimeout, handshakeTimeout time.Duration

	transports []*transport
	pions      []*turn.Server
	done       chan struct{}
	closeOnce  sync.Once
}

// New starts serving STUN and TURN on the given sockets; it owns them from here on.
func New(c Config, o Options) (*Server, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if o.Secrets == nil || !o.PublicIP.Is4() || o.Logger == nil || o.Registry == nil {
		return nil, fmt.Errorf("%w: Secrets, an IPv4 PublicIP, Logger and Registry are required", ErrInvalidConfig)
	}
	s := &Server{
		log:     o.Logger,
		secrets: o.Secrets,
		maxTTL:  o.MaxTTL,
		quota:   &quotas{limit: c.UserQuota, n: map[string]int{}},
		files:   newFileBudget(o.MaxFiles),
		metrics: newMetrics(o.Registry),
		done:    make(chan struct{}),

		maxPermissions: c.MaxPermissions,
		maxChannels:    c.MaxChannels,
		shedLog:        logEvery{interval: 10 * time.Second},

		idleTimeout:      cmp.Or(o.IdleTimeout, defaultIdleTimeout),
		handshakeTimeout: cmp.Or(o.HandshakeTimeout, defaultHandshakeTimeout),
	}
	s.policy = newPeerPolicy(c, &portSet{}, o.PublicIP)
	s.relays = newRelayAllocator(c, o.PublicIP, s.policy, s.files, s.metrics, o.Logger)
	// pion logs some failures once per packet: 20 lines a second at most, bursts of 100.
	loggers := NewLoggerFactory(o.Logger.With("component", "turn"), 20, 100)

	config := func(t *transport) turn.ServerConfig {
		return turn.ServerConfig{
			Realm:         c.Realm,
			LoggerFactory: loggers,
			AuthHandler:   t.authHandler,
			QuotaHandler:  t.quotaHandler,
			EventHandler: turn.EventHandler{
				OnAllocationCreated: t.onAllocationCreated,
				OnAllocationDeleted: t.onAllocationDeleted,
				OnPermissionCreated: t.onPermissionCreated,
				OnPermissionDeleted: t.onPermissionDeleted,
				OnChannelCreated:    t.onChannelCreated,
				OnChannelDeleted:    t.onChannelDeleted,
			},
		}
	}
	start := func(t *transport, sc turn.ServerConfig) error {
		srv, err := turn.NewServer(sc)
		if err != nil {
			return fmt.Errorf("turn %s: %w", t.name, err)
		}
		s.transports = append(s.transports, t)
		s.pions = append(s.pions, srv)
		return nil
	}
	var err error
	for _, u := range []struct {
		name  string
		conns []net.PacketConn
	}{{"udp", o.UDP}, {"edge-udp", o.EdgeUDP}} {
		if len(u.conns) == 0 || err != nil {
			continue
		}
		t := newTransport(u.name, s)
		if _, ok := u.conns[0].(*net.UDPConn); ok {
			t.fast = &bindings{}
		}
		sc := config(t)
		for _, pc := range u.conns {
			c := newPacketConn(pc, t)
			if t.out == nil {
				t.out = c.raw
			}
			sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{
				PacketConn:            c,
				RelayAddressGenerator: s.relays,
				PermissionHandler:     t.permissionHandler,
			})
		}
		err = errors.Join(err, start(t, sc))
	}
	for _, l := range []struct {
		name string
		ln   net.Listener
	}{{"tcp", o.TCP}, {"tls", o.TLS}, {"edge-tcp", o.EdgeTCP}, {"edge-tls", o.EdgeTLS}} {
		if l.ln == nil || err != nil {
			continue
		}
		t := newTransport(l.name, s)
		sc := config(t)
		sc.ListenerConfigs = []turn.ListenerConfig{{
			Listener:              &streamListener{Listener: l.ln, t: t},
			RelayAddressGenerator: s.relays,
			PermissionHandler:     t.permissionHandler,
		}}
		err = errors.Join(err, start(t, sc))
	}
	if err != nil || len(s.pions) == 0 {
		_ = s.close()
		for _, pc := range append(o.UDP, o.EdgeUDP...) {
			_ = pc.Close()
		}
		for _, ln := range []net.Listener{o.TCP, o.TLS, o.EdgeTCP, o.EdgeTLS} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		if err == nil {
			err = fmt.Errorf("%w: no listener", ErrInvalidConfig)
		}
		return nil, err
	}
	return s, nil
}

// Serve blocks until Shutdown: pion serves on its own goroutines.
func (s *Server) Serve() error {
	<-s.done
	return nil
}

// Drain refuses new allocations (508) from now on; existing allocations keep relaying.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown closes every listener, every TCP and TLS connection, and with them every
// allocation and relay socket.
func (s *Server) Shutdown(context.Context) error {
	return s.close()
}

func (s *Server) close() error {
	var err error
	s.closeOnce.Do(func() {
		for _, p := range s.pions {
			err = errors.Join(err, p.Close())
		}
		for _, t := range s.transports {
			t.closeStreams()
		}
		close(s.done)
	})
	return err
}

// Allocations is the number of live allocations on every transport (one deleted by its client
// no longer counts, even while pion is still tearing it down).
func (s *Server) Allocations() int {
	n := 0
	for _, t := range s.transports {
		t.mu.Lock()
		for _, a := range t.allocs {
			if !a.closing {
				n++
			}
		}
		t.mu.Unlock()
	}
	return n
}
