package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/icebox-rtc/icebox/acme"
	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/edge"
	"github.com/icebox-rtc/icebox/httpapi"
	"github.com/icebox-rtc/icebox/signaling"
	"github.com/icebox-rtc/icebox/stunturn"
)

// Config is icebox's whole configuration: one section per package, composed here and loaded
// once (see load.go). Its mapstructure tags are the configuration keys.
type Config struct {
	PublicHost  string                 `mapstructure:"public_host"`
	PublicIP    string                 `mapstructure:"public_ip"`
	HTTP        HTTPConfig             `mapstructure:"http"`
	TURN        stunturn.Config        `mapstructure:"turn"`
	Credentials credentials.Config     `mapstructure:"credentials"`
	Auth        credentials.AuthConfig `mapstructure:"auth"`
	Signaling   signaling.Config       `mapstructure:"signaling"`
	ACME        acme.Config            `mapstructure:"acme"`
	Edge        edge.Config            `mapstructure:"edge"`
	Shutdown    ShutdownConfig         `mapstructure:"shutdown"`
	Log         LogConfig              `mapstructure:"log"`
	Debug       DebugConfig            `mapstructure:"debug"`
}

// DebugConfig is the debug section: what helps find where time and memory go.
type DebugConfig struct {
	// PprofListen serves Go's /debug/pprof on its own address ("" = off); keep it on loopback.
	PprofListen string `mapstructure:"pprof_listen"`
}

// HTTPConfig is the http section: the listener for every HTTP endpoint and who may call it.
type HTTPConfig struct {
	Listen         string         `mapstructure:"listen"`
	TLSCert        string         `mapstructure:"tls_cert"`
	TLSKey         string         `mapstructure:"tls_key"`
	AllowedOrigins []string       `mapstructure:"allowed_origins"`
	RateLimit      float64        `mapstructure:"rate_limit"`
	TrustedProxies []netip.Prefix `mapstructure:"trusted_proxies"`
}

// TLS reports whether HTTP is served over TLS.
func (c HTTPConfig) TLS() bool { return c.TLSCert != "" }

// HasCertificate reports whether icebox has a certificate to serve TLS with: from files
// (http.tls_cert) or from ACME.
func (c Config) HasCertificate() bool { return c.HTTP.TLS() || c.ACME.Enabled }

// ShutdownConfig is the shutdown section.
type ShutdownConfig struct {
	Drain   time.Duration `mapstructure:"drain"`
	Timeout time.Duration `mapstructure:"timeout"`
}

// LogConfig is the log section.
type LogConfig struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// DefaultConfig is what icebox runs with when nothing is configured: a development setup that
// works on one machine with no file at all.
func DefaultConfig() Config {
	return Config{
		HTTP: HTTPConfig{
			Listen:         ":8080",
			AllowedOrigins: []string{},
			RateLimit:      10,
			TrustedProxies: []netip.Prefix{},
		},
		TURN:        stunturn.DefaultConfig(),
		Credentials: credentials.DefaultConfig(),
		Auth:        credentials.DefaultAuthConfig(),
		Signaling:   signaling.DefaultConfig(),
		ACME:        acme.DefaultConfig(),
		Edge:        edge.DefaultConfig(),
		Shutdown:    ShutdownConfig{Drain: 10 * time.Second, Timeout: 20 * time.Second},
		Log:         LogConfig{Level: "info", Format: "text"},
	}
}

// compiled is what the configuration's text turns into, once, when it is loaded: the values
// the packages are handed. (CIDR lists are decoded into prefixes already, by decodeValue.)
type compiled struct {
	origins httpapi.Origins
	cert    *certFiles // http.tls_cert and tls_key, loaded; nil without TLS
}

// compile checks every value and turns what needs parsing into compiled values; it reports
// every invalid value at once, each naming its full key.
func (c Config) compile() (compiled, error) {
	var out compiled
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	section := func(name string, err error) {
		for _, e := range flattenErrors(err) {
			errs = append(errs, fmt.Errorf("%s.%w", name, e))
		}
	}

	if c.PublicHost != "" && !validHost(c.PublicHost) {
		bad("public_host", "%q is not a DNS name or IP address (no scheme, no port)", c.PublicHost)
	}
	if c.PublicIP != "" {
		if a, err := netip.ParseAddr(c.PublicIP); err != nil || !a.Unmap().Is4() {
			bad("public_ip", "%q is not an IPv4 address", c.PublicIP)
		}
	}

	for _, l := range []struct{ key, addr string }{
		{"http.listen", c.HTTP.Listen},
		{"turn.udp_listen", c.TURN.UDPListen},
		{"turn.tcp_listen", c.TURN.TCPListen},
		{"turn.tls_listen", c.TURN.TLSListen},
		{"edge.listen", c.Edge.Listen},
		{"edge.udp_listen", c.Edge.UDPListen},
		{"acme.http_listen", c.ACME.HTTPListen},
	} {
		if l.addr == "" && l.key != "http.listen" {
			continue // a listener set to "" is disabled
		}
		if err := checkListenAddr(l.addr); err != nil {
			bad(l.key, "%v", err)
		}
	}
	errs = append(errs, sharedListeners(c)...)
	switch {
	case c.HTTP.TLSCert != "" && c.HTTP.TLSKey == "":
		bad("http.tls_key", "must be set together with http.tls_cert")
	case c.HTTP.TLSCert == "" && c.HTTP.TLSKey != "":
		bad("http.tls_cert", "must be set together with http.tls_key")
	case c.HTTP.TLSCert != "":
		cert, err := loadCertFiles(c.HTTP.TLSCert, c.HTTP.TLSKey)
		if err != nil {
			bad("http.tls_cert", "cannot load the certificate and key: %v", err)
		}
		out.cert = cert
	}
	origins, err := httpapi.ParseOrigins(c.HTTP.AllowedOrigins)
	if err != nil {
		bad("http.allowed_origins", "%v", err)
	}
	out.origins = origins
	if c.HTTP.RateLimit < 0 {
		bad("http.rate_limit", "%v is negative (0 turns the limit off)", c.HTTP.RateLimit)
	}

	section("turn", c.TURN.Validate())
	if c.TURN.UDPListen == "" && c.TURN.TCPListen == "" && c.TURN.TLSListen == "" && c.Edge.Listen == "" {
		bad("turn.udp_listen", "turn.udp_listen, tcp_listen and tls_listen are all empty and edge.listen is off: TURN needs at least one listener")
	}
	const certHint = "set acme.enabled (with acme.email, and public_host a DNS name), or http.tls_cert and http.tls_key"
	if c.TURN.TLSListen != "" && !c.HasCertificate() {
		bad("turn.tls_listen", "needs a certificate: %s", certHint)
	}
	if c.Edge.Listen != "" && !c.HasCertificate() {
		bad("edge.listen", "needs a certificate for its TLS (HTTPS and turns:): %s", certHint)
	}
	section("edge", c.Edge.Validate())
	section("acme", c.ACME.Validate())
	if c.ACME.Enabled {
		switch {
		case c.PublicHost == "":
			bad("public_host", "must be set with acme.enabled: the DNS name the certificate is for, which points at this machine")
		case isIP(c.PublicHost):
			bad("public_host", "%q is an IP address; acme.enabled needs the DNS name clients use (the certificate is for a name)", c.PublicHost)
		}
		if c.HTTP.TLS() {
			bad("acme.enabled", "http.tls_cert is set too: the certificate comes either from ACME or from files; unset one")
		}
		if c.Edge.Listen == "" && c.ACME.HTTPListen == "" {
			bad("acme.enabled", "no port answers the CA's challenges: set edge.listen (TLS-ALPN-01 there, e.g. \":443\") or acme.http_listen (HTTP-01, e.g. \":80\")")
		}
		if c.Edge.Listen == "" && c.TURN.TLSListen == "" {
			bad("acme.enabled", "nothing serves the certificate: set edge.listen (e.g. \":443\") or turn.tls_listen")
		}
	}
	section("credentials", c.Credentials.Validate())
	section("auth", c.Auth.Validate())
	section("signaling", c.Signaling.Validate())

	if c.Shutdown.Drain < 0 {
		bad("shutdown.drain", "%v is negative", c.Shutdown.Drain)
	}
	if c.Shutdown.Timeout <= 0 {
		bad("shutdown.timeout", "%v must be positive", c.Shutdown.Timeout)
	}
	if c.Debug.PprofListen != "" {
		if err := checkListenAddr(c.Debug.PprofListen); err != nil {
			bad("debug.pprof_listen", "%v", err)
		}
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "unknown format %q (want text or json)", c.Log.Format)
	}
	if len(errs) > 0 {
		return compiled{}, errors.Join(errs...)
	}
	return out, nil
}

// flattenErrors undoes errors.Join, so every problem gets its own line and key prefix.
func flattenErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// isIP reports whether a valid host is an IP address rather than a name.
func isIP(h string) bool {
	_, err := netip.ParseAddr(strings.Trim(h, "[]"))
	return err == nil
}

// validHost accepts an IP address or a DNS name.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		if strings.IndexFunc(label, notHostChar) >= 0 {
			return false
		}
	}
	return true
}

func notHostChar(r rune) bool {
	return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' && r != '_'
}

// checkListenAddr accepts host:port with a port in 0-65535 (0 picks a free port).
func checkListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. \":3478\" or \"127.0.0.1:8080\")", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q in %q is out of range 0-65535", port, addr)
	}
	if host != "" && !validHost(host) {
		return fmt.Errorf("host %q in %q is not an address or name", host, addr)
	}
	return nil
}
