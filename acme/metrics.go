package acme

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	issuance   *prometheus.CounterVec
	challenges *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, notAfter func() float64) *metrics {
	m := &metrics{
		issuance: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_acme_certificates_total",
			Help: "Certificates asked of the ACME CA, by kind (obtain, renew) and result (ok, failed).",
		}, []string{"kind", "result"}),
		challenges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_acme_challenges_total",
			Help: "ACME validation requests answered, by challenge type (tls-alpn-01, http-01).",
		}, []string{"type"}),
	}
	reg.MustRegister(m.issuance, m.challenges, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_acme_certificate_expiry_timestamp_seconds",
		Help: "When the certificate in service expires (Unix seconds); 0 while there is none.",
	}, notAfter))
	for _, kind := range []string{"obtain", "renew"} {
		for _, result := range []string{"ok", "failed"} {
			m.issuance.WithLabelValues(kind, result)
		}
	}
	for _, typ := range []string{"tls-alpn-01", "http-01"} {
		m.challenges.WithLabelValues(typ)
	}
	return m
}
