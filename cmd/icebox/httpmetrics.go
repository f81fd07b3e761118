package main

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpRoutes are the route labels of the HTTP metrics: a bounded set, whatever paths clients
// ask for.
var httpRoutes = []string{"/ws", "/ice-config", "/turn-credentials", "/healthz", "/readyz", "/metrics", "/sdk", "/demo", "/", "other"}

// route is the label of path.
func route(path string) string {
	switch {
	case path == "/":
		return "/"
	case strings.HasPrefix(path, "/sdk/"):
		return "/sdk"
	case strings.HasPrefix(path, "/demo/"):
		return "/demo"
	}
	for _, r := range httpRoutes[:6] {
		if path == r {
			return r
		}
	}
	return "other"
}

// instrument counts every request of h by route and status class
// (icebox_http_requests_total{route,code}) and times it
// (icebox_http_request_duration_seconds{route}: for /ws, the upgrade).
func instrument(h http.Handler, reg prometheus.Registerer) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_http_requests_total",
		Help: "HTTP requests, by route and status class (2xx, 3xx, 4xx, 5xx; 101 counts as 1xx: WebSocket upgrades).",
	}, []string{"route", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "icebox_http_request_duration_seconds",
		Help:    "Time to answer HTTP requests, by route (for /ws, until the upgrade).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route"})
	reg.MustRegister(requests, duration)
	for _, r := range httpRoutes {
		duration.WithLabelValues(r)
		for _, c := range []string{"2xx", "4xx", "5xx"} {
			requests.WithLabelValues(r, c)
		}
	}
	requests.WithLabelValues("/ws", "1xx")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		rt := route(r.URL.Path)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		requests.WithLabelValues(rt, strconv.Itoa(status/100)+"xx").Inc()
		duration.WithLabelValues(rt).Observe(time.Since(start).Seconds())
	})
}

// statusWriter remembers the status a handler wrote; it passes hijacking (WebSocket) and
// flushing through.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *statusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
