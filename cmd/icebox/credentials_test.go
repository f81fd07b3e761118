package main

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// TestCredentialsCommand: what `icebox credentials` prints allocates on a TURN server with the
// same secret, and its URIs follow the configuration.
func TestCredentialsCommand(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{Secrets: []string{"from-config"}, NoTLS: true})
	file := writeFile(t, "icebox.yaml", `
public_host: turn.example.com
turn:
  udp_listen: ":3478"
  tcp_listen: ""
  tls_listen: ""
credentials:
  secrets: [from-config, older]
`)
	for _, tc := range []struct {
		name string
		args []string
		user string
	}{
		{"secret from the config", []string{"--config", file, "--user", "zoe", "--ttl", "10m"}, "zoe"},
		{"secret from the flag", []string{"--config", file, "--secret", "from-config"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			if code := execute(append([]string{"credentials"}, tc.args...), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			var out credentials.TURNCredentials
			if err := json.Unmarshal([]byte(stdout.String()), &out); err != nil {
				t.Fatalf("output %q: %v", stdout.String(), err)
			}
			if want := []string{"turn:turn.example.com:3478?transport=udp"}; !slices.Equal(out.URIs, want) {
				t.Errorf("uris: got %v, want %v", out.URIs, want)
			}
			if _, user, err := credentials.ParseUsername(out.Username); err != nil || (tc.user != "" && user != tc.user) || user == "" {
				t.Errorf("username %q, want EXPIRY:%s", out.Username, tc.user)
			}
			if _, err := turntest.Dial(t, "udp", srv.UDP, nil).Allocate(out.Username, out.Password); err != nil {
				t.Errorf("the printed credential does not allocate: %v", err)
			}
		})
	}
	for _, bad := range [][]string{
		{"--config", file, "--ttl", "200h"},
		{"--config", file, "--ttl", "soon"},
	} {
		var stdout, stderr strings.Builder
		if code := execute(append([]string{"credentials"}, bad...), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--ttl") {
			t.Errorf("credentials %v: got exit %d %q, want 2 naming --ttl", bad, code, stderr.String())
		}
	}
	noSecret := writeFile(t, "none.yaml", "turn:\n  udp_listen: ':3478'\n")
	var stdout, stderr strings.Builder
	if code := execute([]string{"credentials", "--config", noSecret}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "credentials.secrets") {
		t.Errorf("without any secret: got exit %d %q, want 2 naming credentials.secrets", code, stderr.String())
	}
}

// TestTokenCommand: `icebox token` mints a JWT that icebox in mode jwt accepts, with the sub and
// room asked for; without a key or a sub it exits 2 naming what is missing.
func TestTokenCommand(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef"
	file := writeFile(t, "icebox.yaml", "auth:\n  mode: jwt\n  jwt_secret: "+key+"\n")
	var stdout, stderr strings.Builder
	if code := execute([]string{"token", "--config", file, "--sub", "ada", "--room", "team", "--ttl", "10m"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	auth := credentials.NewAuthenticator(credentials.AuthConfig{Mode: "jwt", JWTSecret: key})
	id, err := auth.Authenticate(strings.TrimSpace(stdout.String()))
	if err != nil || id.User != "ada" || id.Room != "team" {
		t.Errorf("the token gives %+v, %v; want user ada, room team", id, err)
	}
	stdout.Reset()
	stderr.Reset()
	if code := execute([]string{"token", "--config", writeFile(t, "none.yaml", "log:\n  level: info\n")}, &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "auth.jwt_secret") || !strings.Contains(stderr.String(), "--sub") {
		t.Errorf("without a key or a sub: exit %d %q, want 2 naming auth.jwt_secret and --sub", code, stderr.String())
	}
}

// TestOpenRelayWarning: auth.mode none on a public_host others can reach is warned about at
// start; on localhost, or with tokens, it is not.
func TestOpenRelayWarning(t *testing.T) {
	for _, tc := range []struct {
		host, mode string
		warn       bool
	}{
		{"turn.example.com", "none", true},
		{"203.0.113.10", "none", true},
		{"127.0.0.1", "none", false},
		{"localhost", "none", false},
		{"turn.example.com", "token", false},
	} {
		cfg := testConfig()
		cfg.PublicHost, cfg.Auth.Mode = tc.host, tc.mode
		if tc.mode == "token" {
			cfg.Auth.Tokens = []string{"k"}
		}
		var buf strings.Builder
		comp, err := cfg.compile()
		if err != nil {
			t.Fatal(err)
		}
		a, err := newApp(cfg, comp, slog.New(slog.NewTextHandler(&buf, nil)), readBuildInfo())
		if err != nil {
			t.Fatal(err)
		}
		a.logServing()
		a.closeAll()
		if got := strings.Contains(buf.String(), "auth.mode is none on a host others can reach"); got != tc.warn {
			t.Errorf("public_host %s, auth.mode %s: warned %v, want %v\n%s", tc.host, tc.mode, got, tc.warn, buf.String())
		}
	}
}
