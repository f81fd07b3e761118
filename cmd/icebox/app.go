package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/icebox-rtc/icebox/acme"
	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/edge"
	"github.com/icebox-rtc/icebox/httpapi"
	"github.com/icebox-rtc/icebox/signaling"
	"github.com/icebox-rtc/icebox/signaling/web"
	"github.com/icebox-rtc/icebox/stunturn"
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
	turn       *stunturn.Server
	turnAddrs  struct{ udp, tcp, tls net.Addr } // bound TURN listeners; nil when off
	edge       *edge.Edge                       // nil when edge.listen is off
	edgeUDP    net.Addr                         // bound edge.udp_listen; nil when off
	acme       *acme.Manager                    // nil when acme.enabled is off
	secrets    *credentials.Secrets
	auth       *credentials.Authenticator
	access     *httpapi.Access      // http.allowed_origins and trusted_proxies in force
	limiter    *httpapi.RateLimiter // http.rate_limit
	certs      *certReloader        // http.tls_cert and tls_key; nil without them
	creds      *credentials.Service
	hub        *signaling.Hub
	components []namedComponent
	// drainers learn that shutdown began, besides the components.
	drainers []interface{ Drain() }

	// shutdown is the shutdown section in force (a reload changes it).
	shutdown atomic.Pointer[ShutdownConfig]
	// reloader re-reads the configuration; nil until serve sets it up.
	reloader *reloader

	ready    atomic.Bool // every component serving and not draining: /readyz 200
	draining atomic.Bool
	// bound are listeners bound before their server exists, closed by closeAll when the start
	// fails (their servers close them otherwise).
	bound []net.Listener
	// readiness are what else /readyz waits for (the ACME certificate).
	readiness []readinessCheck
}

// readinessCheck is something /readyz waits for besides the listeners: check is nil when it is
// there, else says why not; code is the error code /readyz answers with meanwhile.
type readinessCheck struct {
	code  string
	check func() error
}

// notReady is the first readiness check that fails, if any.
func (a *app) notReady() (string, error) {
	for _, r := range a.readiness {
		if err := r.check(); err != nil {
			return r.code, err
		}
	}
	return "", nil
}

// newApp binds every listener and wires every component. Binding happens here, before anything
// serves, so an address in use fails the start with an error naming it. On error, whatever
// was already bound is closed again.
func newApp(cfg Config, comp compiled, log *slog.Logger, info buildInfo) (a *app, err error) {
	a = &app{
		cfg:      cfg,
		log:      log,
		public:   resolvePublicAddrs(cfg, interfaceAddrs),
		registry: prometheus.NewRegistry(),
		mux:      http.NewServeMux(),
	}
	a.shutdown.Store(&cfg.Shutdown)
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
			if _, err := a.notReady(); a.ready.Load() && err == nil {
				return 1
			}
			return 0
		}),
	)

	var source certSource // what TLS listeners serve: the files, or ACME's certificate
	if comp.cert != nil {
		a.certs = newCertReloader(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, comp.cert, log)
		source = a.certs
	}
	// The edge and ACME's HTTP-01 port are bound first: ACME answers its challenges on them.
	var edgeLn, acmeHTTPLn net.Listener
	if cfg.Edge.Listen != "" {
		if edgeLn, err = net.Listen("tcp", cfg.Edge.Listen); err != nil {
			return a, fmt.Errorf("edge.listen: %w", err)
		}
		a.bound = append(a.bound, edgeLn)
	}
	if cfg.ACME.HTTPListen != "" {
		if acmeHTTPLn, err = net.Listen("tcp", cfg.ACME.HTTPListen); err != nil {
			return a, fmt.Errorf("acme.http_listen: %w", err)
		}
		a.bound = append(a.bound, acmeHTTPLn)
	}
	if cfg.ACME.Enabled {
		if a.acme, err = a.newACME(edgeLn, acmeHTTPLn); err != nil {
			return a, err
		}
		source = a.acme
	}
	if edgeLn != nil {
		protos := []string{"h2", "http/1.1"}
		if a.acme != nil {
			protos = append(protos, acme.ALPNProtocol)
		}
		if a.edge, err = edge.New(edgeLn, edge.Options{TLS: serverTLS(source, protos...), Logger: log, Registry: a.registry}); err != nil {
			return a, err
		}
	}

	a.secrets = credentials.NewSecrets(cfg.Credentials.Secrets)
	if len(cfg.Credentials.Secrets) == 0 {
		a.secrets = credentials.NewSecrets([]string{credentials.RandomSecret()})
		log.Warn("credentials.secrets is empty: generated a random TURN secret; credentials will not " +
			"survive a restart and other nodes or apps cannot mint them. Set credentials.secrets for production")
	}

	if err := a.startTURN(source); err != nil {
		return a, err
	}
	a.auth = credentials.NewAuthenticator(cfg.Auth)
	a.access = httpapi.NewAccess(comp.origins, httpapi.Proxies(cfg.HTTP.TrustedProxies))
	a.limiter = httpapi.NewRateLimiter(cfg.HTTP.RateLimit)
	a.creds = credentials.NewService(credentials.ServiceOptions{
		Secrets:   a.secrets,
		TTL:       cfg.Credentials.TTL,
		Endpoints: a.endpoints(),
		Auth:      a.auth,
		Access:    a.access,
		Limiter:   a.limiter,
		Logger:    log.With("component", "credentials"),
		Registry:  a.registry,
	})
	a.creds.Register(a.mux)
	a.drainers = append(a.drainers, a.creds)

	var bus signaling.Bus
	var sessions signaling.SessionStore
	if cfg.Signaling.RedisURL != "" {
		rb, err := signaling.NewRedisBus(context.Background(), signaling.RedisOptions{
			URL: cfg.Signaling.RedisURL,
			NodeOptions: signaling.NodeOptions{
				ResumeGrace: cfg.Signaling.ResumeGrace,
				Logger:      log.With("component", "signaling"),
				Registry:    a.registry,
			},
		})
		if err != nil {
			return a, err
		}
		bus, sessions = rb, rb
		// Before signaling in the list: it shuts down after the hub, which may still hand
		// sessions to other nodes while its clients move there.
		a.components = append(a.components, namedComponent{"redis", &busComponent{rb, make(chan struct{})}})
	}
	if a.hub, err = signaling.New(cfg.Signaling, signaling.Options{
		Bus:       bus,
		Sessions:  sessions,
		Auth:      a.auth,
		Access:    a.access,
		ICE:       a.creds.WelcomeICE,
		MintLimit: a.creds.AllowMint,
		Logger:    log.With("component", "signaling"),
		Registry:  a.registry,
	}); err != nil {
		return a, err
	}
	a.mux.Handle("/ws", a.hub)
	web.Register(a.mux)
	a.components = append(a.components, namedComponent{"signaling", a.hub})

	if cfg.Debug.PprofListen != "" {
		pl, err := net.Listen("tcp", cfg.Debug.PprofListen)
		if err != nil {
			return a, fmt.Errorf("debug.pprof_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ps := newHTTPServer(pl, mux, nil, log)
		ps.srv.WriteTimeout = 0 // profiles take their time
		a.components = append(a.components, namedComponent{"pprof", ps})
		log.Warn("serving the Go profiler (debug.pprof_listen)", "listen", pl.Addr().String())
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return a, fmt.Errorf("http.listen: %w", err)
	}
	handler := instrument(a.mux, a.registry)
	a.http = newHTTPServer(ln, handler, a.certs, log)
	a.components = append(a.components, namedComponent{"http", a.http})
	if a.edge != nil {
		// The edge terminates TLS: its HTTPS listener yields connections past the handshake.
		https := newHTTPServer(a.edge.HTTPS(), handler, nil, log)
		https.https = true
		redirect := newHTTPServer(a.edge.HTTP(), a.redirectHandler(), nil, log)
		a.components = append(a.components, namedComponent{"edge-https", https}, namedComponent{"edge-http", redirect},
			namedComponent{"edge", a.edge})
	}
	if acmeHTTPLn != nil {
		a.components = append(a.components, namedComponent{"acme-http", newHTTPServer(acmeHTTPLn, a.redirectHandler(), nil, log)})
	}
	a.routeOps()
	return a, nil
}

// newACME prepares the certificate manager; the edge's port answers TLS-ALPN-01, acme.http_listen
// HTTP-01.
func (a *app) newACME(edgeLn, httpLn net.Listener) (*acme.Manager, error) {
	o := acme.Options{Host: a.cfg.PublicHost, Logger: a.log, Registry: a.registry}
	for _, l := range []struct {
		ln   net.Listener
		port *int
	}{{edgeLn, &o.TLSALPNPort}, {httpLn, &o.HTTPPort}} {
		if l.ln == nil {
			continue
		}
		host, port, _ := net.SplitHostPort(l.ln.Addr().String())
		*l.port, _ = strconv.Atoi(port)
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			o.ListenHost = host
		}
	}
	if a.cfg.ACME.CARoot != "" {
		roots, err := acme.LoadRoots(a.cfg.ACME.CARoot)
		if err != nil {
			return nil, &configError{problems: []string{fmt.Sprintf("acme.ca_root: %v", err)}}
		}
		o.Roots = roots
	}
	m, err := acme.New(a.cfg.ACME, o)
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	a.readiness = append(a.readiness, readinessCheck{"no-certificate", m.Ready})
	// A component from now on, so that a start failing later stops its certificate cache. (It
	// shuts down after the servers: a renewal may go on while they drain.)
	a.components = append(a.components, namedComponent{"acme", m})
	return m, nil
}

// redirectHandler answers plain HTTP on the edge port and acme.http_listen: ACME's HTTP-01
// challenges when ACME is on, else a redirect to the page.
func (a *app) redirectHandler() http.Handler {
	h := edge.Redirect(a.pageURL())
	if a.acme != nil {
		h = a.acme.HTTPChallenge(h)
	}
	return h
}

// pageURL is where a browser opens icebox: the edge port over HTTPS when it is on, else
// http.listen.
func (a *app) pageURL() string {
	if a.edge != nil {
		_, port, _ := net.SplitHostPort(a.edge.Addr().String())
		if port == "443" {
			return "https://" + hostForURL(a.public.Host)
		}
		return "https://" + net.JoinHostPort(a.public.Host, port)
	}
	return a.http.url(a.public.Host)
}

// hostForURL brackets an IPv6 literal.
func hostForURL(h string) string {
	if strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return h
}

// startTURN binds the TURN listeners and starts the relay on them, and on the edge's.
func (a *app) startTURN(source certSource) (err error) {
	c := a.cfg.TURN
	opts := stunturn.Options{
		Secrets:  a.secrets,
		MaxTTL:   a.cfg.Credentials.MaxTTL,
		PublicIP: a.public.IP,
		// Credentials of modes none and token name no one: the quota counts per client.
		QuotaByClient: a.cfg.Auth.Mode != credentials.AuthJWT,
		Logger:        a.log,
		Registry:      a.registry,
	}
	defer func() {
		if err == nil {
			return
		}
		for _, pc := range append(opts.UDP, opts.EdgeUDP...) {
			_ = pc.Close()
		}
		for _, ln := range []net.Listener{opts.TCP, opts.TLS} {
			if ln != nil {
				_ = ln.Close()
			}
		}
	}()
	if c.UDPListen != "" {
		if opts.UDP, err = stunturn.ListenUDP(c.UDPListen, c.UDPSockets); err != nil {
			return fmt.Errorf("turn.udp_listen: %w", err)
		}
		a.turnAddrs.udp = opts.UDP[0].LocalAddr()
	}
	if c.TCPListen != "" {
		if opts.TCP, err = net.Listen("tcp", c.TCPListen); err != nil {
			return fmt.Errorf("turn.tcp_listen: %w", err)
		}
		a.turnAddrs.tcp = opts.TCP.Addr()
	}
	if c.TLSListen != "" {
		ln, err := net.Listen("tcp", c.TLSListen)
		if err != nil {
			return fmt.Errorf("turn.tls_listen: %w", err)
		}
		a.turnAddrs.tls = ln.Addr()
		opts.TLS = tls.NewListener(ln, serverTLS(source))
	}
	if a.edge != nil {
		opts.EdgeTCP, opts.EdgeTLS = a.edge.TURNTCP(), a.edge.TURNTLS()
	}
	if a.cfg.Edge.UDPListen != "" {
		if opts.EdgeUDP, err = stunturn.ListenUDP(a.cfg.Edge.UDPListen, c.UDPSockets); err != nil {
			return fmt.Errorf("edge.udp_listen: %w", err)
		}
		a.edgeUDP = opts.EdgeUDP[0].LocalAddr()
	}
	a.turn, err = stunturn.New(c, opts)
	if err != nil {
		return fmt.Errorf("turn: %w", err)
	}
	a.components = append(a.components, namedComponent{"turn", a.turn})
	return nil
}

// endpoints is where clients reach the TURN listeners: public_host and the bound ports.
func (a *app) endpoints() credentials.Endpoints {
	port := func(addr net.Addr) int {
		if addr == nil {
			return 0
		}
		_, p, _ := net.SplitHostPort(addr.String())
		n, _ := strconv.Atoi(p)
		return n
	}
	e := credentials.Endpoints{Host: a.public.Host, UDP: port(a.turnAddrs.udp), TCP: port(a.turnAddrs.tcp), TLS: port(a.turnAddrs.tls),
		EdgeUDP: port(a.edgeUDP)}
	if a.edge != nil {
		e.EdgeTLS = port(a.edge.Addr())
	}
	return e
}

// closeAll releases what newApp bound when the start fails half-way.
func (a *app) closeAll() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nothing to wait for: nothing served yet
	for _, c := range a.components {
		_ = c.Shutdown(ctx)
	}
	for _, ln := range a.bound {
		_ = ln.Close()
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
	if a.cfg.Auth.Mode == credentials.AuthNone {
		a.warnOpenRelay()
	}
	e := a.endpoints()
	for _, l := range []struct {
		name string
		addr net.Addr
	}{{"udp", a.turnAddrs.udp}, {"tcp", a.turnAddrs.tcp}, {"tls", a.turnAddrs.tls}} {
		if l.addr != nil {
			a.log.Info("serving stun/turn", "transport", l.name, "listen", l.addr.String())
		}
	}
	a.log.Info("ice servers", "stun", e.STUNURIs(), "turn", e.TURNURIs())
	a.log.Info("turn relay", "relay_address", a.cfg.TURN.RelayAddress, "advertised", a.public.IP.String(),
		"ports", fmt.Sprintf("%d-%d/udp", a.cfg.TURN.RelayPortMin, a.cfg.TURN.RelayPortMax))
	base := a.http.url(a.public.Host)
	a.log.Info("serving http", "listen", a.http.addr().String(), "tls", a.cfg.HTTP.TLS(),
		"url", base+"/", "ice_config", base+"/ice-config", "ws", strings.Replace(base, "http", "ws", 1)+"/ws", "auth", a.cfg.Auth.Mode,
		"healthz", base+"/healthz", "readyz", base+"/readyz", "metrics", base+"/metrics")
	if a.edge != nil {
		certificate := "http.tls_cert"
		if a.acme != nil {
			certificate = "acme"
		}
		udp := ""
		if a.edgeUDP != nil {
			udp = a.edgeUDP.String()
		}
		a.log.Info("serving the edge port: https, wss, turns: and turn over tcp on one port; plain http redirected to https",
			"listen", a.edge.Addr().String(), "udp_listen", udp, "certificate", certificate)
	}
	if a.cfg.ACME.HTTPListen != "" {
		a.log.Info("serving acme http-01 challenges; other requests redirected to https", "listen", a.cfg.ACME.HTTPListen)
	}
	a.logPage()
}

// warnOpenRelay warns, when auth.mode is none, if the host is one others can reach.
func (a *app) warnOpenRelay() {
	if !isLoopbackHost(a.public.Host) {
		a.log.Warn("auth.mode is none on a host others can reach: anyone may take TURN credentials and use this relay. "+
			"Set auth.mode jwt (tokens your app server mints; icebox token --sub you, to try) or token",
			"public_host", a.public.Host)
	}
}

// logPage logs the URL to open in a browser, and warns when the page there would not be a
// secure context for browsers on other machines: they then give it no camera or microphone.
func (a *app) logPage() {
	page := a.pageURL() + "/"
	a.log.Info("open in a browser", "url", page)
	host := a.public.Host
	local := host == "localhost" || (isIP(host) && netip.MustParseAddr(strings.Trim(host, "[]")).IsLoopback())
	switch {
	case local:
	case strings.HasPrefix(page, "http://"):
		a.log.Warn("the page is plain http: browsers on other machines refuse it camera and microphone (no secure context). "+
			"Set public_host to a DNS name of this machine, acme.enabled: true, acme.email and edge.listen: \":443\" "+
			"(or http.tls_cert and http.tls_key)", "url", page)
	case isIP(host):
		a.log.Warn("the page is https at an IP address: browsers accept it only with a certificate issued for that IP, "+
			"else it is no secure context (no camera or microphone). Set public_host to a DNS name of this machine "+
			"(and acme.enabled: true with acme.email)", "url", page)
	}
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
	if _, err := a.notReady(); err != nil {
		a.log.Info("icebox serving; /readyz answers 503 until the certificate is in service", "waiting", err.Error())
	} else {
		a.log.Info("icebox ready")
	}

	sh := *a.shutdown.Load()
	drain := sh.Drain
	select {
	case <-ctx.Done():
		a.log.Info("shutting down: draining", "drain", formatDuration(drain), "timeout", formatDuration(sh.Timeout),
			"hint", "send the signal again to exit at once")
	case <-failed:
		a.log.Error("a server failed; shutting down")
		drain = 0
	}
	a.drain()
	if drain > 0 {
		t := time.NewTimer(drain)
		select {
		case <-t.C:
		case <-failed:
			t.Stop()
		}
	}

	// A fresh context: the one that started the shutdown is already done.
	sctx, cancel := context.WithTimeout(context.Background(), sh.Timeout)
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

// busComponent runs the Redis bus as a component of the lifecycle.
type busComponent struct {
	bus  *signaling.NodeBus
	done chan struct{}
}

func (b *busComponent) Serve() error {
	<-b.done
	return nil
}

// drain begins a shutdown: not ready, and every component refuses new work (joins,
// allocations, credentials) while what runs goes on.
func (a *app) drain() {
	a.ready.Store(false)
	a.draining.Store(true)
	for _, c := range a.components {
		c.Drain()
	}
	for _, d := range a.drainers {
		d.Drain()
	}
}

func (b *busComponent) Drain() {}

func (b *busComponent) Shutdown(context.Context) error {
	select {
	case <-b.done:
		return nil
	default:
	}
	close(b.done)
	return b.bus.Close()
}

// isLoopbackHost reports whether host (a name or an address) stays on this machine.
func isLoopbackHost(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback()
	}
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}
