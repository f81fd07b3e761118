package main

import (
	"encoding/json"
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
