package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/icebox-rtc/icebox/credentials"
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
	} {
		if l.addr == "" && l.key != "http.listen" {
			continue // a TURN listener set to "" is disabled
		}
		if err := checkListenAddr(l.addr); err != nil {
			bad(l.key, "%v", err)
		}
	}
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
	if c.TURN.TLSListen != "" && !c.HTTP.TLS() {
		bad("turn.tls_listen", "needs a certificate: set http.tls_cert and http.tls_key")
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
