package acme

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
)

// ALPNProtocol is TLS-ALPN-01's protocol (RFC 8737): a TLS server answering those challenges
// lists it in NextProtos.
const ALPNProtocol = "acme-tls/1"

// Defaults of Options.
const (
	defaultRetry      = time.Minute
	defaultMaxRetry   = time.Hour
	defaultRenewCheck = 10 * time.Second
)

// Options is what New needs besides the acme section.
type Options struct {
	// Host is the DNS name the certificate is for (public_host); handshakes without SNI, or
	// for a name icebox has no certificate for, get this one.
	Host string
	// TLSALPNPort is the port of the TLS server that answers TLS-ALPN-01 with GetCertificate
	// (the edge port; 0: none), HTTPPort the one that answers HTTP-01 with HTTPChallenge
	// (acme.http_listen; 0: none), both bound on ListenHost ("" all addresses). The CA
	// connects to 443 and 80: other ports work only behind a forward to them, or with a test CA.
	TLSALPNPort, HTTPPort int
	ListenHost            string
	// Roots verify the ACME server's HTTPS certificate; nil: the system's (LoadRoots for
	// acme.ca_root).
	Roots *x509.CertPool

	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Getenv reads $STATE_DIRECTORY for the default storage (os.Getenv when nil).
	Getenv func(string) string

	// Retry is the wait after the first failed attempt to get a certificate, doubling up to
	// MaxRetry: 0, 1 minute and 1 hour (a CA limits failed validations per hour). RenewCheck
	// is how often the certificate in service is checked for renewal (0: 10 seconds; its
	// expiry check is cheap, and a short-lived certificate needs it).
	Retry, MaxRetry, RenewCheck time.Duration
}

// Manager obtains the certificate, keeps it renewed and serves it for TLS handshakes. It is a
// component of icebox's lifecycle: Serve gets the first certificate, Shutdown stops it all.
type Manager struct {
	host             string
	ca               string
	challenges       []string
	log              *slog.Logger
	magic            *certmagic.Config
	cache            *certmagic.Cache
	issuer           *certmagic.ACMEIssuer
	metrics          *metrics
	retry, maxRetry  time.Duration
	firstAttemptDone atomic.Bool // Serve's first ManageSync returned
	inAttempt        atomic.Bool // Serve's loop is in ManageSync: it logs failures itself

	mu       sync.Mutex
	lastErr  error // of the loop's last attempt, while no certificate is in service
	attempts int
	nextTry  time.Time

	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// New prepares the manager: storage, account settings, the certificate cache. Nothing is asked
// of the CA before Serve.
func New(c Config, o Options) (*Manager, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if o.Host == "" || o.Logger == nil || o.Registry == nil {
		return nil, errors.New("acme: Host, Logger and Registry are required")
	}
	if o.TLSALPNPort == 0 && o.HTTPPort == 0 {
		return nil, errors.New("acme: no port answers challenges: a TLS-ALPN-01 port (edge.listen) or an HTTP-01 port (acme.http_listen) is needed")
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	storage := c.StoragePath(getenv)
	if err := checkStorage(storage); err != nil {
		return nil, fmt.Errorf("acme.storage: %w", err)
	}
	log := o.Logger.With("component", "acme")
	zlog := zapLogger(log)
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		host:     strings.TrimSuffix(strings.ToLower(o.Host), "."), // as certmagic names it
		ca:       c.CA,
		log:      log,
		retry:    cmp.Or(o.Retry, defaultRetry),
		maxRetry: cmp.Or(o.MaxRetry, defaultMaxRetry),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	if o.TLSALPNPort != 0 {
		m.challenges = append(m.challenges, fmt.Sprintf("tls-alpn-01 on port %d", o.TLSALPNPort))
	}
	if o.HTTPPort != 0 {
		m.challenges = append(m.challenges, fmt.Sprintf("http-01 on port %d", o.HTTPPort))
	}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: cmp.Or(o.RenewCheck, defaultRenewCheck),
		Logger:             zlog,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		RenewalWindowRatio: 1.0 / 3,
		OnEvent:            m.onEvent,
		DefaultServerName:  o.Host,
		FallbackServerName: o.Host,
		Storage:            &certmagic.FileStorage{Path: storage},
		Logger:             zlog,
	})
	m.issuer = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:     c.CA,
		TestCA: c.CA, // never another CA (certmagic tries Let's Encrypt's staging on retries)
		Email:  c.Email,
		Agreed: true, // turning ACME on accepts the CA's subscriber agreement
		// icebox's listeners answer the challenges: certmagic finds these ports taken and
		// leaves them to icebox instead of binding its own.
		DisableTLSALPNChallenge: o.TLSALPNPort == 0,
		AltTLSALPNPort:          o.TLSALPNPort,
		DisableHTTPChallenge:    o.HTTPPort == 0,
		AltHTTPPort:             o.HTTPPort,
		ListenHost:              o.ListenHost,
		TrustedRoots:            o.Roots,
		Logger:                  zlog,
	})
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	m.metrics = newMetrics(o.Registry, m.notAfter)
	return m, nil
}

// checkStorage creates the storage directory (owner only) and makes sure it is writable, so a
// wrong path stops the start instead of failing every attempt.
func checkStorage(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".write-test-")
	if err != nil {
		return fmt.Errorf("%s is not writable: %w", dir, err)
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// Serve gets the first certificate, from storage or the CA, retrying with backoff until it has
// one; certmagic then renews it in the background. It returns nil at Shutdown.
func (m *Manager) Serve() error {
	defer close(m.done)
	wait := m.retry
	m.log.Info("getting a certificate", "host", m.host, "ca", m.ca, "challenges", strings.Join(m.challenges, ", "))
	for attempt := 1; ; attempt++ {
		m.inAttempt.Store(true)
		err := m.magic.ManageSync(m.ctx, []string{m.host})
		m.inAttempt.Store(false)
		m.firstAttemptDone.Store(true)
		if m.ctx.Err() != nil {
			return nil
		}
		cert, ok := m.current()
		if err == nil && !ok {
			err = fmt.Errorf("the stored certificate for %s has expired and its renewal failed; renewing is retried in the background", m.host)
		}
		if ok {
			m.mu.Lock()
			m.lastErr = nil
			m.mu.Unlock()
			if err != nil { // a stored certificate serves; its renewal failed and is retried
				m.log.Warn("serving the stored certificate; renewing it failed and is retried in the background",
					"host", m.host, "not_after", cert.Leaf.NotAfter, "err", err)
			}
			m.log.Info("certificate in service", "host", m.host, "not_after", cert.Leaf.NotAfter.UTC(), "issuer", cert.Leaf.Issuer.String())
			break
		}
		m.mu.Lock()
		m.lastErr, m.attempts, m.nextTry = err, attempt, time.Now().Add(wait)
		m.mu.Unlock()
		m.metrics.issuance.WithLabelValues("obtain", "failed").Inc()
		m.log.Warn("no certificate yet: the CA did not issue one; TLS on the edge port waits, everything else serves",
			"host", m.host, "ca", m.ca, "attempt", attempt, "retry_in", wait.String(), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-m.ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, m.maxRetry)
	}
	<-m.ctx.Done()
	return nil
}

// Drain changes nothing: a renewal may go on while icebox drains.
func (m *Manager) Drain() {}

// Shutdown stops getting and renewing certificates.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.stopOnce.Do(func() {
		m.cancel()
		m.cache.Stop()
	})
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// current is the certificate in service: the newest valid one for the host in the cache.
func (m *Manager) current() (certmagic.Certificate, bool) {
	var best certmagic.Certificate
	found := false
	now := time.Now()
	for _, c := range m.cache.AllMatchingCertificates(m.host) {
		if c.Leaf == nil || now.After(c.Leaf.NotAfter) {
			continue
		}
		if !found || c.Leaf.NotBefore.After(best.Leaf.NotBefore) {
			best, found = c, true
		}
	}
	return best, found
}

func (m *Manager) notAfter() float64 {
	if c, ok := m.current(); ok {
		return float64(c.Leaf.NotAfter.Unix())
	}
	return 0
}

// Ready is nil while a valid certificate is in service, else what icebox is waiting for (for
// /readyz).
func (m *Manager) Ready() error {
	if _, ok := m.current(); ok {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.lastErr != nil:
		return fmt.Errorf("no certificate for %s yet: attempt %d failed (%v); next attempt in %v",
			m.host, m.attempts, m.lastErr, max(time.Until(m.nextTry), 0).Round(time.Second))
	case !m.firstAttemptDone.Load():
		return fmt.Errorf("getting a certificate for %s from %s", m.host, m.ca)
	}
	return fmt.Errorf("the certificate for %s expired; its renewal is retried", m.host)
}

// GetCertificate is for tls.Config: the certificate for hello's name (the host's when it
// names none or another), or the TLS-ALPN-01 challenge certificate during a validation.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if slices.Contains(hello.SupportedProtos, ALPNProtocol) {
		m.metrics.challenges.WithLabelValues("tls-alpn-01").Inc()
	}
	return m.magic.GetCertificate(hello)
}

// HTTPChallenge answers HTTP-01 challenges and hands every other request to next.
func (m *Manager) HTTPChallenge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.issuer.HandleHTTPChallenge(w, r) {
			m.metrics.challenges.WithLabelValues("http-01").Inc()
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Renew renews the certificate now, whatever its lifetime left, and puts the new one in
// service for new handshakes; connections open go on with the one they negotiated.
func (m *Manager) Renew(ctx context.Context) error {
	old := m.cache.AllMatchingCertificates(m.host)
	if err := m.magic.RenewCertSync(ctx, m.host, true); err != nil {
		return err
	}
	fresh, err := m.magic.CacheManagedCertificate(ctx, m.host)
	if err != nil {
		return err
	}
	var stale []string
	for _, c := range old {
		if c.Hash() != fresh.Hash() {
			stale = append(stale, c.Hash())
		}
	}
	m.cache.Remove(stale)
	return nil
}

// onEvent follows certmagic's events: it counts issuances and logs what the background
// renewals do (Serve logs its own attempts).
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	renewal, _ := data["renewal"].(bool)
	kind := "obtain"
	if renewal {
		kind = "renew"
	}
	switch event {
	case "cert_obtained":
		m.metrics.issuance.WithLabelValues(kind, "ok").Inc()
		if renewal {
			m.log.Info("certificate renewed; new connections get it", "host", m.host)
		} else {
			m.log.Info("certificate obtained", "host", m.host, "ca", m.ca)
		}
	case "cert_failed":
		if m.inAttempt.Load() {
			return nil // Serve counts and logs it, with its attempt and backoff
		}
		m.metrics.issuance.WithLabelValues(kind, "failed").Inc()
		m.log.Warn("certificate "+kind+" failed; retried with backoff while the current certificate serves",
			"host", m.host, "ca", m.ca, "err", data["error"])
	}
	return nil
}
