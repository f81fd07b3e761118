package acme

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// LetsEncrypt is the directory of Let's Encrypt's production CA, the default acme.ca.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Config is the acme section of icebox's configuration.
type Config struct {
	// Enabled obtains and renews a certificate for public_host (a DNS name).
	Enabled bool `mapstructure:"enabled"`
	// Email is the ACME account's contact; the CA may write about problems with the certificate.
	Email string `mapstructure:"email"`
	// CA is the ACME directory URL.
	CA string `mapstructure:"ca"`
	// CARoot is a PEM file of the root that signs the ACME server's own HTTPS certificate, for a
	// private or test CA; trusted for talking to that server only. "" uses the system's roots.
	CARoot string `mapstructure:"ca_root"`
	// Storage is the directory of the account and the certificates; "" is StoragePath's default.
	Storage string `mapstructure:"storage"`
	// HTTPListen answers HTTP-01 challenges (e.g. ":80"), and redirects every other request to
	// https; "" leaves HTTP-01 out and TLS-ALPN-01 on the edge port does it all.
	HTTPListen string `mapstructure:"http_listen"`
}

// DefaultConfig is ACME off, with Let's Encrypt as the CA once it is turned on.
func DefaultConfig() Config { return Config{CA: LetsEncrypt} }

// Validate reports every invalid value, each error starting with the key's name. Whether
// public_host is a DNS name, and the listen address, are checked by cmd/icebox.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Email != "" {
		if a, err := mail.ParseAddress(c.Email); err != nil || a.Address != c.Email {
			bad("email", "%q is not an email address (e.g. ops@example.com)", c.Email)
		}
	} else if c.Enabled {
		bad("email", "must be set with acme.enabled: the CA account's contact (e.g. ops@example.com)")
	}
	if u, err := url.Parse(c.CA); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("ca", "%q is not an https:// URL of an ACME directory (default %s)", c.CA, LetsEncrypt)
	}
	if c.CARoot != "" {
		if _, err := LoadRoots(c.CARoot); err != nil {
			bad("ca_root", "%v", err)
		}
	}
	if c.HTTPListen != "" && !c.Enabled {
		bad("http_listen", "needs acme.enabled: it answers ACME's HTTP-01 challenges")
	}
	return errors.Join(errs...)
}

// LoadRoots reads a PEM file of one or more CA certificates into a pool.
func LoadRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// StoragePath is where the account and certificates live: Storage when set, else
// $STATE_DIRECTORY/acme (systemd's StateDirectory=, the first when it lists several), else
// ./icebox-data/acme.
func (c Config) StoragePath(getenv func(string) string) string {
	if c.Storage != "" {
		return c.Storage
	}
	if dir, _, _ := strings.Cut(getenv("STATE_DIRECTORY"), ":"); dir != "" {
		return filepath.Join(dir, "acme")
	}
	return filepath.Join("icebox-data", "acme")
}
