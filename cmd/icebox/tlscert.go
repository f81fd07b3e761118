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

// certFiles is a certificate and key loaded from their files, with the files' modification
// times at that moment.
type certFiles struct {
	cert     *tls.Certificate
	modified [2]time.Time
}

func mtimes(certFile, keyFile string) [2]time.Time {
	var m [2]time.Time
	for i, f := range []string{certFile, keyFile} {
		if st, err := os.Stat(f); err == nil {
			m[i] = st.ModTime()
		}
	}
	return m
}

// loadCertFiles loads a PEM certificate and key.
func loadCertFiles(certFile, keyFile string) (*certFiles, error) {
	m := mtimes(certFile, keyFile)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &certFiles{cert: &cert, modified: m}, nil
}

// newCertReloader serves loaded (the configuration's certificate, loaded when it was checked)
// until the files change.
func newCertReloader(certFile, keyFile string, loaded *certFiles, log *slog.Logger) *certReloader {
	return &certReloader{certFile: certFile, keyFile: keyFile, log: log,
		cert: loaded.cert, modified: loaded.modified, checked: time.Now()}
}

// set serves the files certFile and keyFile from now on (a reload), loaded as loaded.
func (r *certReloader) set(certFile, keyFile string, loaded *certFiles) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if certFile == r.certFile && keyFile == r.keyFile && loaded.modified == r.modified {
		return // the same files, unchanged: the certificate in service stays
	}
	r.certFile, r.keyFile = certFile, keyFile
	r.cert, r.modified, r.checked = loaded.cert, loaded.modified, time.Now()
	r.log.Info("TLS certificate reloaded", "cert", certFile)
}

// GetCertificate is for tls.Config.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= certReloadCheck {
		r.checked = time.Now()
		if m := mtimes(r.certFile, r.keyFile); m != r.modified {
			if f, err := loadCertFiles(r.certFile, r.keyFile); err != nil {
				r.log.Warn("renewed TLS certificate does not load; keeping the previous one",
					"cert", r.certFile, "key", r.keyFile, "err", err)
			} else {
				r.cert, r.modified = f.cert, f.modified
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
