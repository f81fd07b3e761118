package stunturn

import "github.com/prometheus/client_golang/prometheus"

// metrics are the icebox_turn_* series. Labels are bounded sets (transport, reason,
// direction); no user name or username ever becomes a label.
type metrics struct {
	allocations      *prometheus.GaugeVec
	created          *prometheus.CounterVec
	authFailures     *prometheus.CounterVec
	allocateRefused  *prometheus.CounterVec
	permissionDenied *prometheus.CounterVec
	connections      *prometheus.GaugeVec
	connShed         *prometheus.CounterVec

	// Resolved once: the per-packet path only adds to them.
	toPeerPackets, fromPeerPackets prometheus.Counter
	toPeerBytes, fromPeerBytes     prometheus.Counter
	toPeerDropped, fromPeerDropped prometheus.Counter
}

// Label values.
const (
	dirToPeer   = "to_peer"
	dirFromPeer = "from_peer"

	refusedUserQuota  = "user_quota"
	refusedTotalQuota = "total_quota"
	refusedNoPort     = "no_relay_port"
	refusedDraining   = "draining"
	refusedFileLimit  = "file_limit"

	shedEvicted = "idle_evicted"
	shedRefused = "refused"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	packets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_relayed_packets_total",
		Help: "Datagrams relayed between clients and peers, by direction.",
	}, []string{"direction"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_relayed_bytes_total",
		Help: "Payload bytes relayed between clients and peers, by direction.",
	}, []string{"direction"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_peer_packets_dropped_total",
		Help: "Datagrams dropped by the peer policy on a relay socket, by direction.",
	}, []string{"direction"})
	m := &metrics{
		allocations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "icebox_turn_allocations",
			Help: "Active TURN allocations, by the transport between client and server.",
		}, []string{"transport"}),
		created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_allocations_created_total",
			Help: "TURN allocations created, by transport.",
		}, []string{"transport"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_auth_failures_total",
			Help: "Authenticated TURN requests refused, by reason (bad_hmac, expired, ttl_too_long, malformed_username, wrong_username).",
		}, []string{"reason"}),
		allocateRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_allocate_refused_total",
			Help: "Allocate requests refused after authentication, by reason (user_quota 486; total_quota, no_relay_port, file_limit and draining 508).",
		}, []string{"reason"}),
		permissionDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_permissions_denied_total",
			Help: "CreatePermission and ChannelBind requests refused, by reason (peer policy: denied_range, ipv6, malformed; limits: max_permissions, max_channels; bad_request).",
		}, []string{"reason"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "icebox_turn_connections",
			Help: "Open TURN connections over TCP and TLS.",
		}, []string{"transport"}),
		connShed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_connections_shed_total",
			Help: "TURN TCP and TLS connections closed because the file descriptor budget was full, by transport and reason (idle_evicted: the oldest without an allocation made room; refused: the new one, every other holding an allocation).",
		}, []string{"transport", "reason"}),
		toPeerPackets:   packets.WithLabelValues(dirToPeer),
		fromPeerPackets: packets.WithLabelValues(dirFromPeer),
		toPeerBytes:     bytes.WithLabelValues(dirToPeer),
		fromPeerBytes:   bytes.WithLabelValues(dirFromPeer),
		toPeerDropped:   dropped.WithLabelValues(dirToPeer),
		fromPeerDropped: dropped.WithLabelValues(dirFromPeer),
	}
	reg.MustRegister(m.allocations, m.created, m.authFailures, m.allocateRefused, m.permissionDenied,
		m.connections, m.connShed, packets, bytes, dropped)
	return m
}
