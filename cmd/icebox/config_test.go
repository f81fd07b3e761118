package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
	"time"

	"github.com/spf13/cobra"
)

// writeFile writes a config file into a temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// load runs loadConfig with an optional file and command-line args for the key flags, never
// looking at ./icebox.yaml or /etc/icebox.
func load(t *testing.T, file string, args ...string) (loaded, error) {
	t.Helper()
	cmd := &cobra.Command{Use: "test", RunE: func(*cobra.Command, []string) error { return nil }}
	cf := addConfigFlags(cmd)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("parse flags %v: %v", args, err)
	}
	if file != "" {
		cf.file = file
	}
	return loadConfig(loadSources{file: cf.file, flags: cf.keys, search: []string{}})
}

func mustLoad(t *testing.T, file string, args ...string) loaded {
	t.Helper()
	l, err := load(t, file, args...)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return l
}

func TestDefaults(t *testing.T) {
	l := mustLoad(t, "")
	if !reflect.DeepEqual(l.cfg, DefaultConfig()) {
		t.Errorf("got %+v, want the defaults %+v", l.cfg, DefaultConfig())
	}
	if l.file != "" {
		t.Errorf("got file %q, want none", l.file)
	}
	// The contract's values, spelled out once more so a changed default is a decision.
	c := l.cfg
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"http.listen", c.HTTP.Listen, ":8080"},
		{"http.rate_limit", c.HTTP.RateLimit, 10.0},
		{"turn.realm", c.TURN.Realm, "icebox"},
		{"turn.udp_listen", c.TURN.UDPListen, ":3478"},
		{"turn.tcp_listen", c.TURN.TCPListen, ":3478"},
		{"turn.tls_listen", c.TURN.TLSListen, ""},
		{"turn.relay_address", c.TURN.RelayAddress, "0.0.0.0"},
		{"turn.relay_port_min", c.TURN.RelayPortMin, 49152},
		{"turn.relay_port_max", c.TURN.RelayPortMax, 65535},
		{"turn.user_quota", c.TURN.UserQuota, 100},
		{"turn.total_quota", c.TURN.TotalQuota, 0},
		{"credentials.ttl", c.Credentials.TTL, 24 * time.Hour},
		{"credentials.max_ttl", c.Credentials.MaxTTL, 168 * time.Hour},
		{"auth.mode", c.Auth.Mode, "none"},
		{"signaling.max_room_size", c.Signaling.MaxRoomSize, 16},
		{"signaling.resume_grace", c.Signaling.ResumeGrace, 30 * time.Second},
		{"signaling.max_message_bytes", c.Signaling.MaxMessageBytes, 65536},
		{"signaling.rate_limit", c.Signaling.RateLimit, 50.0},
		{"signaling.max_conns_per_ip", c.Signaling.MaxConnsPerIP, 50},
		{"signaling.ping_interval", c.Signaling.PingInterval, 20 * time.Second},
		{"signaling.pong_timeout", c.Signaling.PongTimeout, 45 * time.Second},
		{"shutdown.drain", c.Shutdown.Drain, 10 * time.Second},
		{"shutdown.timeout", c.Shutdown.Timeout, 20 * time.Second},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.key, tc.got, tc.want)
		}
	}
}

// TestReferenceFileIsTheDefaults keeps configs/icebox.yaml from drifting: it names every key, no
// other, and loads to exactly the built-in defaults.
func TestReferenceFileIsTheDefaults(t *testing.T) {
	ref := filepath.Join("..", "..", "configs", "icebox.yaml")
	l := mustLoad(t, ref)
	if !reflect.DeepEqual(l.cfg, DefaultConfig()) {
		t.Errorf("configs/icebox.yaml loads to\n%+v\nwant the built-in defaults\n%+v", l.cfg, DefaultConfig())
	}
	var want []string
	for _, k := range configKeys() {
		want = append(want, k.name)
	}
	got := referenceKeys(t, ref)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("configs/icebox.yaml has keys\n%v\nwant every key of Config\n%v", got, want)
	}
}

// referenceKeys lists the leaf keys written in a config file, section.key.
func referenceKeys(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		name, value, ok := strings.Cut(trimmed, ":")
		if !ok {
			continue
		}
		indented := strings.HasPrefix(line, " ")
		switch {
		case !indented && strings.TrimSpace(value) == "":
			section = name
		case !indented:
			section = ""
			keys = append(keys, name)
		default:
			keys = append(keys, section+"."+name)
		}
	}
	return keys
}

func TestFileEnvFlagPrecedence(t *testing.T) {
	file := writeFile(t, "icebox.yaml", `
turn:
  realm: from-file
  relay_port_min: 50000
  allowed_peer_cidrs: ["127.0.0.1/32", "10.1.0.0/16"]
log:
  level: debug
shutdown:
  drain: 3s
`)
	t.Run("file", func(t *testing.T) {
		c := mustLoad(t, file).cfg
		if c.TURN.Realm != "from-file" || c.TURN.RelayPortMin != 50000 || c.Log.Level != "debug" || c.Shutdown.Drain != 3*time.Second {
			t.Errorf("got realm %q, relay_port_min %d, log.level %q, drain %v; want the file's values",
				c.TURN.Realm, c.TURN.RelayPortMin, c.Log.Level, c.Shutdown.Drain)
		}
		if want := []string{"127.0.0.1/32", "10.1.0.0/16"}; !slices.Equal(prefixStrings(c.TURN.AllowedPeerCIDRs), want) {
			t.Errorf("allowed_peer_cidrs: got %v, want %v", c.TURN.AllowedPeerCIDRs, want)
		}
		if c.TURN.RelayPortMax != 65535 || c.HTTP.Listen != ":8080" {
			t.Errorf("keys the file does not set: got relay_port_max %d, http.listen %q; want the defaults", c.TURN.RelayPortMax, c.HTTP.Listen)
		}
	})
	t.Run("env over file", func(t *testing.T) {
		t.Setenv("ICEBOX_TURN_REALM", "from-env")
		t.Setenv("ICEBOX_TURN_ALLOWED_PEER_CIDRS", "192.0.2.0/24, 198.51.100.7")
		t.Setenv("ICEBOX_SHUTDOWN_DRAIN", "1m")
		t.Setenv("ICEBOX_HTTP_RATE_LIMIT", "2.5")
		t.Setenv("ICEBOX_PUBLIC_HOST", "turn.example.com")
		c := mustLoad(t, file).cfg
		if c.TURN.Realm != "from-env" || c.Shutdown.Drain != time.Minute || c.HTTP.RateLimit != 2.5 || c.PublicHost != "turn.example.com" {
			t.Errorf("got realm %q, drain %v, rate_limit %v, public_host %q; want the environment's",
				c.TURN.Realm, c.Shutdown.Drain, c.HTTP.RateLimit, c.PublicHost)
		}
		if want := []string{"192.0.2.0/24", "198.51.100.7/32"}; !slices.Equal(prefixStrings(c.TURN.AllowedPeerCIDRs), want) {
			t.Errorf("allowed_peer_cidrs: got %v, want %v", c.TURN.AllowedPeerCIDRs, want)
		}
		if c.TURN.RelayPortMin != 50000 {
			t.Errorf("relay_port_min: got %d, want the file's 50000", c.TURN.RelayPortMin)
		}
	})
	t.Run("flag over env", func(t *testing.T) {
		t.Setenv("ICEBOX_TURN_REALM", "from-env")
		c := mustLoad(t, file, "--turn.realm=from-flag", "--turn.relay_port_min", "50001", "--credentials.secrets", "a,b").cfg
		if c.TURN.Realm != "from-flag" || c.TURN.RelayPortMin != 50001 {
			t.Errorf("got realm %q, relay_port_min %d; want the flags'", c.TURN.Realm, c.TURN.RelayPortMin)
		}
		if want := []string{"a", "b"}; !slices.Equal(c.Credentials.Secrets, want) {
			t.Errorf("credentials.secrets: got %v, want %v", c.Credentials.Secrets, want)
		}
	})
	t.Run("empty env value counts", func(t *testing.T) {
		t.Setenv("ICEBOX_TURN_UDP_LISTEN", "")
		c := mustLoad(t, "").cfg
		if c.TURN.UDPListen != "" {
			t.Errorf("udp_listen: got %q, want \"\" (disabled)", c.TURN.UDPListen)
		}
	})
}

func TestEmptySectionKeepsDefaults(t *testing.T) {
	file := writeFile(t, "icebox.yaml", "turn:\nsignaling:\n  resume_grace:\nlog:\n  level: warn\n")
	t.Setenv("ICEBOX_TURN_REALM", "env-realm") // an empty section must not hide keys from the environment
	c := mustLoad(t, file).cfg
	if c.TURN.UDPListen != ":3478" || c.TURN.RelayPortMax != 65535 || c.Signaling.ResumeGrace != 30*time.Second {
		t.Errorf("got udp_listen %q, relay_port_max %d, resume_grace %v; want the defaults", c.TURN.UDPListen, c.TURN.RelayPortMax, c.Signaling.ResumeGrace)
	}
	if c.TURN.Realm != "env-realm" || c.Log.Level != "warn" {
		t.Errorf("got realm %q, log.level %q; want env-realm, warn", c.TURN.Realm, c.Log.Level)
	}
}

func TestUnknownEnvIsAWarning(t *testing.T) {
	t.Setenv("ICEBOX_TURN_REALMS", "x")
	t.Setenv("ICEBOX_CREDENTIAL_SECRETS", "y")
	l := mustLoad(t, "")
	if len(l.warnings) != 2 || !strings.Contains(l.warnings[0], "ICEBOX_CREDENTIAL_SECRETS") ||
		!strings.Contains(l.warnings[0], "did you mean ICEBOX_CREDENTIALS_SECRETS?") ||
		!strings.Contains(l.warnings[1], "did you mean ICEBOX_TURN_REALM?") {
		t.Errorf("got warnings %q, want each naming the variable and the one it resembles", l.warnings)
	}
}

func TestConfigFileSearch(t *testing.T) {
	dir := t.TempDir()
	local := filepath.Join(dir, "icebox.yaml")
	etc := writeFile(t, "etc.yaml", "turn:\n  realm: etc\n")
	search := []string{local, etc}

	got, err := findConfigFile("", search)
	if err != nil || got != etc {
		t.Errorf("no ./icebox.yaml: got %q, %v; want %q", got, err, etc)
	}
	if err := os.WriteFile(local, []byte("turn:\n  realm: local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := findConfigFile("", search); err != nil || got != local {
		t.Errorf("with ./icebox.yaml: got %q, %v; want %q", got, err, local)
	}
	if got, err := findConfigFile(etc, search); err != nil || got != etc {
		t.Errorf("--config: got %q, %v; want %q", got, err, etc)
	}
	if _, err := findConfigFile(filepath.Join(dir, "missing.yaml"), search); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("--config of a missing file: got %v, want an error naming it", err)
	}
	if got, err := findConfigFile("", []string{filepath.Join(dir, "nope.yaml")}); err != nil || got != "" {
		t.Errorf("nothing to find: got %q, %v; want none", got, err)
	}
}

// acmeOn turns ACME on with the edge, as the README's VPS setup does (public_host left to the test).
const acmeOn = "acme:\n  enabled: true\n  email: ops@example.com\nedge:\n  listen: ':443'\n  udp_listen: ':443'\n"

// TestInvalid: every invalid value is refused with a message naming the key and the problem.
func TestInvalid(t *testing.T) {
	cert, key := turntest.CertificateFiles(t)
	for _, tc := range []struct {
		name string
		file string   // YAML
		env  []string // NAME=value
		args []string // flags
		want []string // substrings of the error, key first
	}{
		{name: "unknown key", file: "turn:\n  realmm: x\n", want: []string{"turn.realmm: unknown key", "did you mean turn.realm"}},
		{name: "unknown top-level key", file: "listen: ':1'\n", want: []string{"listen: unknown key", "http.listen"}},
		{name: "unknown section", file: "stun:\n  port: 1\n", want: []string{"stun: unknown section"}},
		{name: "misspelt section", file: "signalling:\n  max_room_size: 4\n", want: []string{"signalling: unknown section", "did you mean signaling?"}},
		{name: "yaml: the line after", file: "turn:\n  realm: x\n user_quota: 5\n", want: []string{"line 2", "   3 |  user_quota: 5"}},
		{name: "yaml: a tab", file: "turn:\n\trealm: x\n", want: []string{"a tab: YAML indents with spaces"}},
		{name: "two listeners on one port", file: "http:\n  listen: ':3478'\n", want: []string{`http.listen: ":3478" takes the same tcp port as turn.tcp_listen ":3478"`}},
		{name: "a listener on every address and one on loopback", file: "edge:\n  listen: '127.0.0.1:8080'\n", env: []string{"ICEBOX_HTTP_TLS_CERT=" + cert, "ICEBOX_HTTP_TLS_KEY=" + key},
			want: []string{`http.listen: ":8080" takes the same tcp port as edge.listen "127.0.0.1:8080"`}},
		{name: "key given a section", file: "turn:\n  realm:\n    x: 1\n", want: []string{"turn.realm: expected a value"}},
		{name: "section given a value", file: "turn: 3\n", want: []string{"turn: expected a section"}},
		{name: "not yaml", file: "turn: [\n", want: []string{"not valid YAML"}},
		{name: "bad duration", file: "shutdown:\n  drain: soon\n", want: []string{"shutdown.drain", `"soon" is not a duration`}},
		{name: "duration without unit", file: "signaling:\n  resume_grace: 30\n", want: []string{"signaling.resume_grace", "no unit"}},
		{name: "bad duration from env", env: []string{"ICEBOX_CREDENTIALS_TTL=1 day"}, want: []string{"credentials.ttl", "not a duration"}},
		{name: "not a number", env: []string{"ICEBOX_TURN_RELAY_PORT_MIN=low"}, want: []string{"turn.relay_port_min", "not a whole number"}},
		{name: "bool for number", file: "turn:\n  user_quota: true\n", want: []string{"turn.user_quota", "not a whole number"}},
		{name: "fraction for whole number", file: "turn:\n  user_quota: 1.5\n", want: []string{"turn.user_quota", "not a whole number"}},
		{name: "list for value", file: "turn:\n  realm: [a, b]\n", want: []string{"turn.realm", "single value"}},
		{name: "value for list", file: "turn:\n  allowed_peer_cidrs: 10\n", want: []string{"turn.allowed_peer_cidrs", "expected a list"}},
		{name: "bad flag value", args: []string{"--signaling.max_room_size=many"}, want: []string{"signaling.max_room_size", "not a whole number"}},
		{name: "port out of range", file: "turn:\n  relay_port_max: 70000\n", want: []string{"turn.relay_port_max: 70000 is out of range"}},
		{name: "port zero", file: "turn:\n  relay_port_min: 0\n", want: []string{"turn.relay_port_min: 0 is out of range"}},
		{name: "min over max", file: "turn:\n  relay_port_min: 60000\n  relay_port_max: 50000\n", want: []string{"turn.relay_port_min: 60000 is greater than relay_port_max 50000"}},
		{name: "listen port out of range", file: "http:\n  listen: ':99999'\n", want: []string{"http.listen", "out of range"}},
		{name: "listen not host:port", env: []string{"ICEBOX_TURN_UDP_LISTEN=3478"}, want: []string{"turn.udp_listen", "not host:port"}},
		{name: "no TURN listener", env: []string{"ICEBOX_TURN_UDP_LISTEN=", "ICEBOX_TURN_TCP_LISTEN="}, want: []string{"turn.udp_listen", "at least one listener"}},
		{name: "bad peer CIDR", file: "turn:\n  allowed_peer_cidrs: [10.0.0.0/33]\n", want: []string{"turn.allowed_peer_cidrs", `"10.0.0.0/33" is not a CIDR`}},
		{name: "bad denied CIDR", file: "turn:\n  denied_peer_cidrs: [nope]\n", want: []string{"turn.denied_peer_cidrs", "not a CIDR"}},
		{name: "bad proxy CIDR", env: []string{"ICEBOX_HTTP_TRUSTED_PROXIES=10.0.0.0/8,300.1.1.1"}, want: []string{"http.trusted_proxies", `"300.1.1.1"`}},
		{name: "relay address not IPv4", file: "turn:\n  relay_address: '::'\n", want: []string{"turn.relay_address", "not an IPv4 address"}},
		{name: "public_ip not IPv4", file: "public_ip: 2001:db8::1\n", want: []string{"public_ip", "not an IPv4 address"}},
		{name: "public_host with scheme", file: "public_host: https://turn.example.com\n", want: []string{"public_host", "not a DNS name or IP address"}},
		{name: "tls_listen without certificate", file: "turn:\n  tls_listen: ':5349'\n", want: []string{"turn.tls_listen: needs a certificate"}},
		{name: "cert without key", file: "http:\n  tls_cert: " + cert + "\n", want: []string{"http.tls_key: must be set together with http.tls_cert"}},
		{name: "unreadable certificate", file: "http:\n  tls_cert: /nonexistent/cert.pem\n  tls_key: " + key + "\n", want: []string{"http.tls_cert: cannot load"}},
		{name: "unknown auth mode", file: "auth:\n  mode: oauth\n", want: []string{"auth.mode", `unknown auth mode "oauth"`}},
		{name: "token mode without tokens", file: "auth:\n  mode: token\n", want: []string{"auth.tokens", "at least one token"}},
		{name: "jwt mode without secret", file: "auth:\n  mode: jwt\n", want: []string{"auth.jwt_secret", "needs a jwt_secret"}},
		{name: "bad origin", file: "http:\n  allowed_origins: [example.com]\n", want: []string{"http.allowed_origins", `"example.com" is not an origin`}},
		{name: "negative rate", env: []string{"ICEBOX_HTTP_RATE_LIMIT=-1"}, want: []string{"http.rate_limit", "negative"}},
		{name: "ttl over max_ttl", file: "credentials:\n  ttl: 200h\n", want: []string{"credentials.ttl", "longer than max_ttl"}},
		{name: "zero ttl", file: "credentials:\n  ttl: 0s\n", want: []string{"credentials.ttl", "must be positive"}},
		{name: "empty secret", file: "credentials:\n  secrets: [a, '']\n", want: []string{"credentials.secrets: entry 2 is empty"}},
		{name: "room size", file: "signaling:\n  max_room_size: 1\n", want: []string{"signaling.max_room_size", "at least 2"}},
		{name: "pong before ping", file: "signaling:\n  pong_timeout: 10s\n", want: []string{"signaling.pong_timeout", "longer than ping_interval"}},
		{name: "redis scheme", file: "signaling:\n  redis_url: http://:pw@localhost:6379\n", want: []string{"signaling.redis_url", `scheme "http"`}},
		{name: "shutdown timeout", file: "shutdown:\n  timeout: 0s\n", want: []string{"shutdown.timeout", "must be positive"}},
		{name: "negative drain", env: []string{"ICEBOX_SHUTDOWN_DRAIN=-1s"}, want: []string{"shutdown.drain", "negative"}},
		{name: "log level", env: []string{"ICEBOX_LOG_LEVEL=verbose"}, want: []string{"log.level", `unknown level "verbose"`}},
		{name: "log format", file: "log:\n  format: xml\n", want: []string{"log.format", `unknown format "xml"`}},
		{name: "acme with public_host an IP", file: acmeOn + "public_host: 203.0.113.7\n", want: []string{`public_host: "203.0.113.7" is an IP address; acme.enabled needs the DNS name`}},
		{name: "acme without public_host", file: acmeOn, want: []string{"public_host: must be set with acme.enabled"}},
		{name: "acme without email", file: "public_host: turn.example.com\nacme:\n  enabled: true\nedge:\n  listen: ':443'\n", want: []string{"acme.email: must be set with acme.enabled"}},
		{name: "acme email", file: acmeOn + "public_host: turn.example.com\n", env: []string{"ICEBOX_ACME_EMAIL=ops at example"}, want: []string{"acme.email", "not an email address"}},
		{name: "acme ca not https", env: []string{"ICEBOX_ACME_CA=http://ca.example/dir"}, want: []string{"acme.ca", "not an https:// URL"}},
		{name: "acme ca_root unreadable", env: []string{"ICEBOX_ACME_CA_ROOT=/nonexistent/root.pem"}, want: []string{"acme.ca_root", "/nonexistent/root.pem"}},
		{name: "acme enabled not a bool", env: []string{"ICEBOX_ACME_ENABLED=yes please"}, want: []string{"acme.enabled", "not true or false"}},
		{name: "acme and certificate files", file: acmeOn + "public_host: turn.example.com\nhttp:\n  tls_cert: " + cert + "\n  tls_key: " + key + "\n", want: []string{"acme.enabled: http.tls_cert is set too"}},
		{name: "acme without a challenge port", file: "public_host: turn.example.com\nacme:\n  enabled: true\n  email: ops@example.com\nturn:\n  tls_listen: ':5349'\n", want: []string{"acme.enabled: no port answers the CA's challenges"}},
		{name: "acme serving nothing", file: "public_host: turn.example.com\nacme:\n  enabled: true\n  email: ops@example.com\n  http_listen: ':80'\n", want: []string{"acme.enabled: nothing serves the certificate"}},
		{name: "acme http_listen without acme", file: "acme:\n  http_listen: ':80'\n", want: []string{"acme.http_listen: needs acme.enabled"}},
		{name: "edge without certificate", file: "edge:\n  listen: ':443'\n", want: []string{"edge.listen: needs a certificate"}},
		{name: "edge udp without edge", file: "edge:\n  udp_listen: ':443'\n", want: []string{"edge.udp_listen: needs edge.listen"}},
		{name: "edge listen not host:port", env: []string{"ICEBOX_EDGE_LISTEN=443"}, want: []string{"edge.listen", "not host:port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, kv := range tc.env {
				name, val, _ := strings.Cut(kv, "=")
				t.Setenv(name, val)
			}
			file := ""
			if tc.file != "" {
				file = writeFile(t, "icebox.yaml", tc.file)
			}
			_, err := load(t, file, tc.args...)
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a configuration error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

// TestAllProblemsAtOnce: an unknown key, values of the wrong type and invalid values are
// reported together, each once, with its key.
func TestAllProblemsAtOnce(t *testing.T) {
	file := writeFile(t, "icebox.yaml", "turn:\n  relay_port_max: 0\n  user_quota: many\nlog:\n  level: loud\n"+
		"credentials:\n  ttl: 1 day\nsignalling:\n  rate_limit: 5\n")
	_, err := load(t, file)
	var ce *configError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a configuration error", err)
	}
	want := []string{"turn.relay_port_max: 0 is out of range", `turn.user_quota: "many" is not a whole number`, `log.level: unknown level "loud"`,
		`credentials.ttl: "1 day" is not a duration`, "signalling: unknown section"}
	if len(ce.problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(ce.problems), len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("got %q, want it to contain %q", err, w)
		}
	}
}

func TestValidValues(t *testing.T) {
	cert, key := turntest.CertificateFiles(t)
	file := writeFile(t, "icebox.yaml", `
public_host: turn.example.com
public_ip: 203.0.113.7
http:
  listen: 127.0.0.1:0
  tls_cert: `+cert+`
  tls_key: `+key+`
  allowed_origins: ["https://app.example.com", "https://*.example.org", "http://localhost:3000", "*"]
  trusted_proxies: [10.0.0.0/8, "::1", 192.168.1.1]
turn:
  tls_listen: ":5349"
  realm: 123
  allowed_peer_cidrs: ["::ffff:127.0.0.0/104", 127.0.0.1]
credentials:
  secrets: [s1, s2]
  ttl: 1h30m
auth:
  mode: jwt
  jwt_secret: 0123456789abcdef0123456789abcdef
signaling:
  redis_url: rediss://:pw@redis.internal:6380/2
  rate_limit: 0
shutdown:
  drain: 0
`)
	c := mustLoad(t, file).cfg
	if c.TURN.Realm != "123" || c.Credentials.TTL != 90*time.Minute || c.Shutdown.Drain != 0 || c.Signaling.RateLimit != 0 {
		t.Errorf("got realm %q, ttl %v, drain %v, signaling.rate_limit %v", c.TURN.Realm, c.Credentials.TTL, c.Shutdown.Drain, c.Signaling.RateLimit)
	}
}

// TestSecretFiles: a secret key's ICEBOX_<KEY>_FILE names a file holding its value (a
// Kubernetes Secret or systemd credential mounted as a file): a list one item per line or
// comma, a string trimmed; above the config file; refused beside ICEBOX_<KEY>, or unreadable;
// only secret keys have one.
func TestSecretFiles(t *testing.T) {
	secrets := writeFile(t, "turn-secrets", "new-secret\nold-secret\n")
	jwt := writeFile(t, "jwt", "  jwt-key\n")
	file := writeFile(t, "icebox.yaml", "credentials:\n  secrets: [from-the-file]\n")
	t.Setenv("ICEBOX_CREDENTIALS_SECRETS_FILE", secrets)
	t.Setenv("ICEBOX_AUTH_JWT_SECRET_FILE", jwt)
	t.Setenv("ICEBOX_TURN_REALM_FILE", jwt)
	l := mustLoad(t, file)
	if !slices.Equal(l.cfg.Credentials.Secrets, []string{"new-secret", "old-secret"}) || l.cfg.Auth.JWTSecret != "jwt-key" {
		t.Errorf("secrets %q, jwt_secret %q", l.cfg.Credentials.Secrets, l.cfg.Auth.JWTSecret)
	}
	if !slices.Equal(l.files, []string{file, secrets, jwt}) {
		t.Errorf("files read: %v", l.files)
	}
	if !slices.ContainsFunc(l.warnings, func(w string) bool { return strings.Contains(w, "ICEBOX_TURN_REALM_FILE") }) {
		t.Errorf("no warning for a _FILE of a key that is not secret: %v", l.warnings)
	}

	t.Setenv("ICEBOX_AUTH_JWT_SECRET", "x")
	t.Setenv("ICEBOX_CREDENTIALS_SECRETS_FILE", filepath.Join(t.TempDir(), "missing"))
	_, err := load(t, file)
	for _, want := range []string{"auth.jwt_secret: set by both ICEBOX_AUTH_JWT_SECRET and ICEBOX_AUTH_JWT_SECRET_FILE", "credentials.secrets: ICEBOX_CREDENTIALS_SECRETS_FILE"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}
