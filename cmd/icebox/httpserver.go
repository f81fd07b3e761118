package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/icebox-rtc/icebox/httpapi"
)

// httpServer serves every HTTP endpoint on http.listen. Its timeouts bound what a slow or idle
// client can hold; WebSocket connections are hijacked and leave these limits behind.
type httpServer struct {
	ln  net.Listener
	srv *http.Server
	// https: clients use https:// (this server's TLS, or the edge's in front of it).
	https bool
}

func newHTTPServer(ln net.Listener, h http.Handler, certs *certReloader, log *slog.Logger) *httpServer {
	s := &httpServer{
		ln: ln,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelDebug),
		},
	}
	if certs != nil {
		s.srv.TLSConfig = serverTLS(certs)
		s.https = true
	}
	return s
}

func (s *httpServer) addr() net.Addr { return s.ln.Addr() }

// url is the base URL clients use to reach this server at host.
func (s *httpServer) url(host string) string {
	scheme := "http"
	if s.https {
		scheme = "https"
	}
	_, port, _ := net.SplitHostPort(s.ln.Addr().String())
	return scheme + "://" + net.JoinHostPort(host, port)
}

func (s *httpServer) Serve() error {
	var err error
	if s.srv.TLSConfig != nil {
		err = s.srv.ServeTLS(s.ln, "", "")
	} else {
		err = s.srv.Serve(s.ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Drain turns keep-alive off, so clients open new connections, which a load balancer sends to a
// node that is not draining.
func (s *httpServer) Drain() { s.srv.SetKeepAlivesEnabled(false) }

func (s *httpServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close() // the timeout is reached: cut what is left
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	// Shutdown closes the listener only once serving began; a start that failed half-way
	// never served.
	if cerr := s.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = cerr
	}
	return err
}

// routeOps adds the operations endpoints: /healthz, /readyz and /metrics.
func (a *app) routeOps() {
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	a.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case a.draining.Load():
			httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: "draining",
				Message: "icebox is shutting down", RetryAfter: a.shutdown.Load().Drain + time.Second})
		case !a.ready.Load():
			httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: "starting",
				Message: "icebox is starting"})
		default:
			if code, err := a.notReady(); err != nil {
				httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: code, Message: err.Error()})
				return
			}
			body := struct {
				Status string        `json:"status"`
				Reload *reloadResult `json:"reload,omitempty"` // the last configuration reload
			}{Status: "ready"}
			if a.reloader != nil {
				body.Reload = a.reloader.lastResult()
			}
			httpapi.WriteJSON(w, http.StatusOK, body)
		}
	})
	// Every other path: the contract's JSON error, not net/http's plain text.
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusNotFound, Code: httpapi.CodeNotFound,
			Message: "no such endpoint: " + r.URL.Path})
	})
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{EnableOpenMetrics: true}))
}
