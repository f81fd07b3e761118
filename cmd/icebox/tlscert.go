package main

import (
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloadCheck is how often the certificate files are looked at for a renewal.
const certReloadCheck = 30 * time.Second

// certReloader serves http.tls_cert/tls_key to HTTPS and TURN-over-TLS, and picks up a renewed
// certificate (certbot, cert-manager) without a restart: the files are checked at most every
// certReloadCheck, and a pair that fails to load keeps the previous certificate in service.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu       sync.Mutex
	cert     *tls.Certificate
	modified [2]time.Time
	checked  time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) mtimes() [2]time.Time {
	var m [2]time.Time
	for i, f := range []string{r.certFile, r.keyFile} {
		if st, err := os.Stat(f); err == nil {
			m[i] = st.ModTime()
		}
	}
	return m
}

func (r *certReloader) load() error {
	m := r.mtimes()
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert, r.modified, r.checked = &cert, m, time.Now()
	return nil
}

// GetCertificate is for tls.Config.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= certReloadCheck {
		r.checked = time.Now()
		if m := r.mtimes(); m != r.modified {
			if err := r.load(); err != nil {
				r.log.Warn("renewed TLS certificate does not load; keeping the previous one",
					"cert", r.certFile, "key", r.keyFile, "err", err)
			} else {
				r.log.Info("TLS certificate reloaded", "cert", r.certFile)
			}
		}
	}
	return r.cert, nil
}

// certSource is where TLS servers get their certificate: the files (certReloader) or ACME
// (acme.Manager).
type certSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// serverTLS is the server TLS configuration of HTTPS, TURN over TLS and the edge port, with
// the ALPN protocols that server speaks.
func serverTLS(source certSource, protos ...string) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: source.GetCertificate, NextProtos: protos}
}
