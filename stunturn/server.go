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
	// QuotaByClient counts turn.user_quota per client address (an IPv4 address, an IPv6 /64)
	// instead of per credential user: for auth modes whose credentials name no one, where each
	// request gets a fresh random user. SetQuotaByClient changes it.
	QuotaByClient bool
	// Now is the time credentials are checked against (their expiry, max_ttl); nil: the
	// system clock. Tests move it to expire a credential without waiting.
	Now func() time.Time
}

// Server is icebox's STUN/TURN relay: one pion/turn server per transport, sharing the relay
// port range, the peer policy, the quotas and the credentials.
type Server struct {
	log      *slog.Logger
	secrets  *credentials.Secrets
	now      func() time.Time
	limits   limits
	policy   *peerPolicy
	relays   *relayAllocator
	quota    *quotas
	files    *fileBudget
	metrics  *metrics
	draining atomic.Bool

	idle    idleStreams // TCP and TLS connections without an allocation
	shedLog logEvery    // connections closed for the file budget, logged once a while

	mu  sync.Mutex
	cfg Config // the running configuration, for reloads

	idleTimeout, handshakeTimeout time.Duration

	listeners []*listener
	pions     []*turn.Server
	done      chan struct{}
	closeOnce sync.Once
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
		now:     o.Now,
		quota:   &quotas{limit: c.UserQuota, n: map[string]int{}},
		cfg:     c,
		files:   newFileBudget(o.MaxFiles),
		metrics: newMetrics(o.Registry),
		done:    make(chan struct{}),

		shedLog: logEvery{interval: 10 * time.Second},

		idleTimeout:      cmp.Or(o.IdleTimeout, defaultIdleTimeout),
		handshakeTimeout: cmp.Or(o.HandshakeTimeout, defaultHandshakeTimeout),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.limits.set(c, o.MaxTTL)
	s.quota.byClient.Store(o.QuotaByClient)
	s.policy = newPeerPolicy(c, &portSet{}, o.PublicIP)
	s.relays = newRelayAllocator(c, o.PublicIP, s.policy, s.files, s.metrics, o.Logger)
	o.Registry.MustRegister(newRelayCollector(s.relays), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_turn_relay_capacity",
		Help: "Relay sockets this node may hold: turn.total_quota, or the size of the relay port range (the allocations past it get 508).",
	}, func() float64 { return float64(s.relays.capacity()) }))
	// pion logs some failures once per packet: 20 lines a second at most, bursts of 100.
	loggers := NewLoggerFactory(o.Logger.With("component", "turn"), 20, 100)

	config := func(t *listener) turn.ServerConfig {
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
	start := func(t *listener, sc turn.ServerConfig) error {
		srv, err := turn.NewServer(sc)
		if err != nil {
			return fmt.Errorf("turn %s: %w", t.name, err)
		}
		s.listeners = append(s.listeners, t)
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
		t := newListener(u.name, s)
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
		t := newListener(l.name, s)
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

// limits are the turn keys (and credentials.max_ttl) read per request, changed in place by a
// reload.
type limits struct {
	maxTTL                      atomic.Int64 // a time.Duration
	maxPermissions, maxChannels atomic.Int64
}

func (l *limits) set(c Config, maxTTL time.Duration) {
	l.maxTTL.Store(int64(maxTTL))
	l.maxPermissions.Store(int64(c.MaxPermissions))
	l.maxChannels.Store(int64(c.MaxChannels))
}

// Reload applies what can change while icebox runs: user_quota, total_quota, max_permissions,
// max_channels, the peer lists, and maxTTL (credentials.max_ttl). Nothing open is closed:
// lowered quotas and limits refuse only what comes next, and the bound channels are judged
// again by the new peer lists, so a newly denied peer gets no more datagrams (pion's path checks
// every datagram anyway). The keys RestartKeys names keep their running value.
func (s *Server) Reload(c Config, maxTTL time.Duration) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits.set(c, maxTTL)
	s.quota.setLimit(c.UserQuota)
	s.relays.setTotalQuota(c.TotalQuota)
	s.policy.set(c)
	for _, t := range s.listeners {
		t.fast.rejudge(s.policy)
	}
	s.relays.each((*relayConn).rejudgePermissions)
	running := s.cfg // the keys of RestartKeys keep their running values
	s.cfg = c
	s.cfg.Realm, s.cfg.UDPListen, s.cfg.TCPListen, s.cfg.TLSListen = running.Realm, running.UDPListen, running.TCPListen, running.TLSListen
	s.cfg.UDPSockets, s.cfg.RelayAddress = running.UDPSockets, running.RelayAddress
	s.cfg.RelayPortMin, s.cfg.RelayPortMax = running.RelayPortMin, running.RelayPortMax
	return nil
}

// SetQuotaByClient changes Options.QuotaByClient (auth.mode reloaded): allocations from now on
// count against the new key; those held keep counting against theirs until they end.
func (s *Server) SetQuotaByClient(on bool) { s.quota.byClient.Store(on) }

// RunningConfig is the running configuration: the last reload's, with the keys that need a restart as
// they were at start.
func (s *Server) RunningConfig() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// RestartKeys names the keys (without the turn. prefix) whose change from old to c takes effect
// only after a restart: the listeners, their sockets, and the relay port range and address.
func RestartKeys(old, c Config) []string {
	var keys []string
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"realm", old.Realm != c.Realm},
		{"udp_listen", old.UDPListen != c.UDPListen},
		{"tcp_listen", old.TCPListen != c.TCPListen},
		{"tls_listen", old.TLSListen != c.TLSListen},
		{"udp_sockets", old.UDPSockets != c.UDPSockets},
		{"relay_address", old.RelayAddress != c.RelayAddress},
		{"relay_port_min", old.RelayPortMin != c.RelayPortMin},
		{"relay_port_max", old.RelayPortMax != c.RelayPortMax},
	} {
		if k.changed {
			keys = append(keys, k.key)
		}
	}
	return keys
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
		for _, t := range s.listeners {
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
	for _, t := range s.listeners {
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
