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
	lifetime         prometheus.Histogram
	allocationBytes  prometheus.Histogram
	// The relayed packets, bytes and drops are counted per relay socket (stats.go) and
	// collected when scraped.
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
		lifetime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "icebox_turn_allocation_lifetime_seconds",
			Help:    "How long allocations lived, observed when their relay socket closes.",
			Buckets: []float64{1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600},
		}),
		allocationBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "icebox_turn_allocation_relayed_bytes",
			Help:    "Payload bytes an allocation relayed in both directions over its lifetime, observed when it ends.",
			Buckets: prometheus.ExponentialBuckets(1000, 10, 8), // 1 kB to 10 GB
		}),
	}
	reg.MustRegister(m.allocations, m.created, m.authFailures, m.allocateRefused, m.permissionDenied,
		m.connections, m.connShed, m.lifetime, m.allocationBytes)
	// Every known label value from the start, so that dashboards show 0 rather than nothing.
	for _, tr := range []string{"udp", "tcp", "tls"} {
		m.allocations.WithLabelValues(tr)
		m.created.WithLabelValues(tr)
		if tr != "udp" {
			m.connections.WithLabelValues(tr)
			m.connShed.WithLabelValues(tr, shedEvicted)
			m.connShed.WithLabelValues(tr, shedRefused)
		}
	}
	for _, r := range []string{authBadHMAC, authExpired, authTooLong, authMalformed, authWrongUsername} {
		m.authFailures.WithLabelValues(r)
	}
	for _, r := range []string{refusedUserQuota, refusedTotalQuota, refusedNoPort, refusedDraining, refusedFileLimit} {
		m.allocateRefused.WithLabelValues(r)
	}
	for _, r := range []string{refusedDenied, refusedIPv6, refusedOwnPort, refusedMalformed, refusedMaxPermissions, refusedMaxChannels, refusedBadRequest} {
		m.permissionDenied.WithLabelValues(r)
	}
	return m
}
