package edge

import "github.com/prometheus/client_golang/prometheus"

// Outcomes of a connection on the edge port: where it went, or why it was closed. The values
// of icebox_edge_connections_total's label.
const (
	outTURNTCP   = "turn_tcp"      // plain TURN over TCP
	outTURNTLS   = "turn_tls"      // TURN over TLS
	outHTTPS     = "https"         // HTTP over TLS (pages, /ws, JSON endpoints)
	outHTTP      = "http"          // plain HTTP: redirected to https
	outACME      = "acme_tls_alpn" // an ACME TLS-ALPN-01 validation: its handshake was all
	outUnknown   = "unrecognized"  // neither TURN nor HTTP
	outTimeout   = "timeout"       // no decisive first bytes (or no handshake) within the deadline
	outClosed    = "closed"        // the client closed or reset before it was routed
	outHandshake = "tls_failed"    // the TLS handshake failed
	outEvicted   = "evicted"       // closed to make room: too many connections not yet routed
	outShutdown  = "shutdown"      // icebox was shutting down
)

type metrics struct {
	connections *prometheus.CounterVec
	pending     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_edge_connections_total",
			Help: "Connections on the edge port, by outcome: turn_tcp, turn_tls, https, http (redirected), acme_tls_alpn, " +
				"or closed: unrecognized, timeout, closed, tls_failed, evicted, shutdown.",
		}, []string{"outcome"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "icebox_edge_pending_connections",
			Help: "Connections on the edge port in their TLS handshake or first bytes, not yet routed.",
		}),
	}
	reg.MustRegister(m.connections, m.pending)
	for _, o := range []string{outTURNTCP, outTURNTLS, outHTTPS, outHTTP, outACME, outUnknown, outTimeout, outClosed, outHandshake, outEvicted, outShutdown} {
		m.connections.WithLabelValues(o)
	}
	return m
}
