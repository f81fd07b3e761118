package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/httpapi/httpapitest"

	"go.yaml.in/yaml/v3"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// exitUsage is icebox's exit code for bad usage or an invalid configuration.
const exitUsage = 2

// settings are configuration keys (turn.tcp_listen, ...) with values as the environment
// gives them: lists comma-separated, "" for an empty value.
type settings map[string]string

// loopback is icebox on loopback with free ports, logging JSON: what the tests start from.
func loopback() settings {
	return settings{
		"http.listen": "127.0.0.1:0", "turn.udp_listen": "127.0.0.1:0", "turn.tcp_listen": "127.0.0.1:0",
		"public_host": "127.0.0.1", "public_ip": "127.0.0.1", "shutdown.drain": "0s", "log.format": "json",
	}
}

// with is s with more keys set.
func (s settings) with(more settings) settings {
	out := settings{}
	for k, v := range s {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// env is s as ICEBOX_* variables, beside the environment without any of its own.
func (s settings) env() []string {
	var extra []string
	for k, v := range s {
		extra = append(extra, "ICEBOX_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_"))+"="+v)
	}
	return cleanEnv(extra...)
}

// node is an icebox binary a test started, serving.
type node struct {
	*proc
	url  string // http://ADDR of http.listen
	edge string // edge.listen's address, when the edge is on
}

// startIcebox runs `icebox serve` with s and waits until it is ready.
func startIcebox(t *testing.T, s settings) *node {
	t.Helper()
	n := &node{proc: startBinary(t, t.TempDir(), s.env(), "serve")}
	for {
		m := n.waitLog(t, "")
		switch m["msg"] {
		case "serving http":
			n.url = "http://" + m["listen"].(string)
		case "icebox ready":
			return n
		default:
			msg, _ := m["msg"].(string)
			switch {
			case strings.HasPrefix(msg, "serving the edge port"):
				n.edge = m["listen"].(string)
			case strings.HasPrefix(msg, "icebox serving"): // ready once its certificate is (ACME)
				return n
			}
		}
	}
}

// drain starts the node's shutdown (SIGTERM) and waits until it says it is draining: new
// connections, joins and credentials are refused while it drains (shutdown.drain).
func (n *node) drain(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, &http.Client{}, n.url+"/readyz", http.StatusServiceUnavailable)
}

// get fetches url and returns the status and body.
func get(t *testing.T, c *http.Client, url string) (int, string) { return httpapitest.Get(t, c, url) }

// waitStatus polls url until it answers want, for at most 30 seconds.
func waitStatus(t *testing.T, c *http.Client, url string, want int) string {
	return httpapitest.WaitStatus(t, c, url, want, 30*time.Second)
}

// writeFile writes a file into a temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// configView is a configuration as YAML writes it (a file, or what `icebox config print`
// prints): the keys the tests look at.
type configView struct {
	PublicHost  string `yaml:"public_host"`
	PublicIP    string `yaml:"public_ip"`
	HTTP        struct{ Listen string }
	TURN        struct{ Realm string }
	Credentials struct{ Secrets []string }
	Auth        struct {
		Mode      string
		JWTSecret string `yaml:"jwt_secret"`
		Tokens    []string
	}
	Signaling struct {
		RedisURL string `yaml:"redis_url"`
	}
	Log  struct{ Level string }
	Edge struct {
		Listen    string
		UDPListen string `yaml:"udp_listen"`
	}
	ACME struct {
		Enabled    bool
		Email, CA  string
		HTTPListen string `yaml:"http_listen"`
		Storage    string
	}
	Shutdown struct{ Drain, Timeout string }
}

// loadConfig checks that icebox loads the configuration file at path with the environment
// extra ("" path: none), and returns the effective configuration it prints (secrets redacted)
// and the file as written.
func loadConfig(t *testing.T, path string, extra ...string) (effective, file configView) {
	t.Helper()
	args := []string{"config", "print"}
	if path != "" {
		args = append(args, "--config", path)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(raw, &file); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	code, out, stderr := runBinary(t, cleanEnv(extra...), args...)
	if code != 0 {
		t.Fatalf("icebox does not load %s: exit %d: %s", path, code, stderr)
	}
	if err := yaml.Unmarshal([]byte(out), &effective); err != nil {
		t.Fatalf("config print: %v\n%s", err, out)
	}
	return effective, file
}

// copyFile copies a file (the binary, certificates) to another place.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
