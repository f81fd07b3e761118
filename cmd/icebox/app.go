package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
)

// component is one server icebox runs. It is built with its sockets already bound; Serve blocks
// until Shutdown and then returns nil; Drain tells it that shutdown has begun, so it refuses new
// work (allocations, joins, credentials) while what is in progress goes on.
type component interface {
	Serve() error
	Drain()
	Shutdown(ctx context.Context) error
}

type namedComponent struct {
	name string
	component
}

// app is a running icebox: every listener bound, every component wired.
type app struct {
	cfg        Config
	log        *slog.Logger
	public     publicAddrs
	registry   *prometheus.Registry
	mux        *http.ServeMux
	http       *httpServer
	components []namedComponent

	ready    atomic.Bool // every component serving and not draining: /readyz 200
	draining atomic.Bool
}

// newApp binds every listener and wires every component. Binding happens here, before anything
// serves, so an address in use fails the start with an error naming it. On error, whatever
// was already bound is closed again.
func newApp(cfg Config, log *slog.Logger, info buildInfo) (a *app, err error) {
	a = &app{
		cfg:      cfg,
		log:      log,
		public:   resolvePublicAddrs(cfg, interfaceAddrs),
		registry: prometheus.NewRegistry(),
		mux:      http.NewServeMux(),
	}
	defer func() {
		if err != nil {
			a.closeAll()
		}
	}()

	// The contract wants every metric name to start with icebox_, the Go and process ones too.
	prefixed := prometheus.WrapRegistererWithPrefix("icebox_", a.registry)
	prefixed.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	a.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "icebox_build_info",
			Help:        "Always 1; the labels say which icebox is running.",
			ConstLabels: prometheus.Labels{"version": info.Version, "commit": info.Commit, "goversion": info.GoVersion},
		}, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "icebox_ready",
			Help: "1 while every listener serves and icebox is not draining (as /readyz).",
		}, func() float64 {
			if a.ready.Load() {
				return 1
			}
			return 0
		}),
	)

	var certs *certReloader
	if cfg.HTTP.TLS() {
		if certs, err = newCertReloader(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, log); err != nil {
			return a, &configError{problems: []string{fmt.Sprintf("http.tls_cert: %v", err)}}
		}
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return a, fmt.Errorf("http.listen: %w", err)
	}
	a.http = newHTTPServer(ln, a.mux, certs, log)
	a.components = append(a.components, namedComponent{"http", a.http})
	a.routeOps()
	return a, nil
}

// closeAll releases what newApp bound when the start fails half-way.
func (a *app) closeAll() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nothing to wait for: nothing served yet
	for _, c := range a.components {
		_ = c.Shutdown(ctx)
	}
}

// logServing logs every address icebox serves, with the URL clients use.
func (a *app) logServing() {
	a.log.Info("public address",
		"public_host", a.public.Host, "detected", a.public.HostDetected,
		"public_ip", a.public.IP.String(), "ip_detected", a.public.IPDetected)
	if a.public.IPDetected && (a.public.IP.IsPrivate() || a.public.IP.IsLoopback()) {
		a.log.Warn("public_ip was detected as a private or loopback address: clients elsewhere cannot reach it; set public_host and public_ip",
			"public_ip", a.public.IP.String())
	}
	base := a.http.url(a.public.Host)
	a.log.Info("serving http", "listen", a.http.addr().String(), "tls", a.cfg.HTTP.TLS(),
		"url", base+"/", "healthz", base+"/healthz", "readyz", base+"/readyz", "metrics", base+"/metrics")
}

// run serves until ctx ends (the first SIGINT or SIGTERM) or a component fails, then shuts down:
// /readyz turns 503 and every component drains for shutdown.drain while existing work goes on,
// then everything closes within shutdown.timeout. It returns the first component failure.
func (a *app) run(ctx context.Context) error {
	var g errgroup.Group
	failed := make(chan struct{})
	var failOnce atomic.Bool
	for _, c := range a.components {
		g.Go(func() error {
			err := c.Serve()
			if err != nil {
				err = fmt.Errorf("%s: %w", c.name, err)
				if failOnce.CompareAndSwap(false, true) {
					close(failed)
				}
			}
			return err
		})
	}
	a.ready.Store(true)
	a.logServing()
	a.log.Info("icebox ready")

	drain := a.cfg.Shutdown.Drain
	select {
	case <-ctx.Done():
		a.log.Info("shutting down: draining", "drain", formatDuration(drain), "timeout", formatDuration(a.cfg.Shutdown.Timeout),
			"hint", "send the signal again to exit at once")
	case <-failed:
		a.log.Error("a server failed; shutting down")
		drain = 0
	}
	a.ready.Store(false)
	a.draining.Store(true)
	for _, c := range a.components {
		c.Drain()
	}
	if drain > 0 {
		t := time.NewTimer(drain)
		select {
		case <-t.C:
		case <-failed:
			t.Stop()
		}
	}

	// A fresh context: the one that started the shutdown is already done.
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Shutdown.Timeout)
	defer cancel()
	for i := len(a.components) - 1; i >= 0; i-- {
		c := a.components[i]
		if err := c.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			a.log.Warn("shutdown", "component", c.name, "err", err)
		} else if err != nil {
			a.log.Warn("shutdown timeout reached; closed what was left", "component", c.name)
		}
	}
	err := g.Wait()
	if err == nil {
		a.log.Info("icebox stopped")
	}
	return err
}
