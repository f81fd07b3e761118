package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// iceboxBinary builds cmd/icebox once per test run, as a user would.
func iceboxBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "icebox-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "icebox")
		// In the main module (..): the binary is built as a user builds it.
		out, err := exec.Command("go", "build", "-C", "..", "-race", "-o", binPath, "./cmd/icebox").CombinedOutput()
		if err != nil {
			binErr = errors.New(string(out))
		}
	})
	if binErr != nil {
		t.Fatalf("go build: %v", binErr)
	}
	return binPath
}

// cleanEnv is the environment without any ICEBOX_* variable, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ICEBOX_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// proc is a running icebox binary whose JSON log lines are decoded as they come.
type proc struct {
	cmd   *exec.Cmd
	lines chan map[string]any
	raw   *strings.Builder
	mu    sync.Mutex
	done  chan struct{}
	err   error
}

func startBinary(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	return startCommand(t, dir, env, iceboxBinary(t), args...)
}

// startCommand runs name (icebox itself, or a wrapper such as prlimit that execs it).
func startCommand(t *testing.T, dir string, env []string, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan map[string]any, 100), raw: &strings.Builder{}, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.raw.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.lines <- m:
				default:
				}
			}
		}
		p.err = cmd.Wait()
		close(p.lines)
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("icebox stderr:\n%s", p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.raw.String()
}

// waitLog returns the first log line with msg ("": the next line), or fails if the process
// ends first or nothing comes within a minute.
func (p *proc) waitLog(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for {
		select {
		case m, ok := <-p.lines:
			if !ok {
				t.Fatalf("icebox ended before logging %q: %v\n%s", msg, p.err, p.output())
			}
			if msg == "" || m["msg"] == msg {
				return m
			}
		case <-deadline.C:
			t.Fatalf("icebox did not log %q within a minute", msg)
		}
	}
}

// exitCode waits for the process and returns its exit code (-1 when a signal ended it).
func (p *proc) exitCode() int {
	<-p.done
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -2
	}
	return 0
}

// TestBinaryServeNoConfig: `icebox serve` with no config file and no arguments serves, reaches
// /readyz, logs what it serves, and exits 0 on SIGTERM.
func TestBinaryServeNoConfig(t *testing.T) {
	if _, err := os.Stat("/etc/icebox/icebox.yaml"); err == nil {
		t.Skip("/etc/icebox/icebox.yaml exists on this machine; the test needs a machine without it")
	}
	for _, l := range []struct{ network, addr string }{{"tcp", ":8080"}, {"tcp", ":3478"}, {"udp", ":3478"}} {
		var err error
		if l.network == "tcp" {
			var ln net.Listener
			if ln, err = net.Listen("tcp", l.addr); err == nil {
				ln.Close()
			}
		} else {
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", l.addr); err == nil {
				pc.Close()
			}
		}
		if err != nil {
			turntest.SkipOrFail(t, "default port %s/%s is in use here: %v", l.addr, l.network, err)
		}
	}
	p := startBinary(t, t.TempDir(), cleanEnv("ICEBOX_LOG_FORMAT=json", "ICEBOX_SHUTDOWN_DRAIN=1s"), "serve")
	served := p.waitLog(t, "serving http")
	if served["listen"] != "[::]:8080" {
		t.Errorf("got listen %v, want [::]:8080", served["listen"])
	}
	p.waitLog(t, "icebox ready")
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	waitStatus(t, c, "http://127.0.0.1:8080/readyz", 200)
	// STUN answers on the default port, without credentials.
	for _, tr := range []string{"udp", "tcp"} {
		if _, _, err := turntest.Dial(t, tr, "127.0.0.1:3478", nil).Binding(); err != nil {
			t.Errorf("STUN Binding over %s on 127.0.0.1:3478: %v", tr, err)
		}
	}
	if out := p.output(); !strings.Contains(out, "generated a random TURN secret") {
		t.Errorf("no warning about the generated secret:\n%s", out)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "icebox stopped")
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit code after SIGTERM: got %d, want 0", code)
	}
	if out := p.output(); !strings.Contains(out, `"msg":"public address"`) {
		t.Errorf("the public address was not logged:\n%s", out)
	}
}

// TestBinarySecondSignal: a second signal during the drain ends the process at once.
func TestBinarySecondSignal(t *testing.T) {
	p := startBinary(t, t.TempDir(), cleanEnv("ICEBOX_LOG_FORMAT=json", "ICEBOX_SHUTDOWN_DRAIN=1h",
		"ICEBOX_HTTP_LISTEN=127.0.0.1:0", "ICEBOX_TURN_UDP_LISTEN=127.0.0.1:0", "ICEBOX_TURN_TCP_LISTEN=127.0.0.1:0"), "serve")
	addr := p.waitLog(t, "serving http")["listen"].(string)
	p.waitLog(t, "icebox ready")
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, "http://"+addr+"/readyz", 503)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.done // the drain is an hour: getting here at all means the second signal ended it
	if code := p.exitCode(); code == 0 {
		t.Errorf("exit code after a second signal: got 0, want the process ended by the signal")
	}
}

func TestBinaryPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := startBinary(t, t.TempDir(), cleanEnv(), "serve", "--http.listen", ln.Addr().String(),
		"--turn.udp_listen=127.0.0.1:0", "--turn.tcp_listen=127.0.0.1:0")
	if code := p.exitCode(); code != 1 {
		t.Errorf("exit code: got %d, want 1", code)
	}
	if out := p.output(); !strings.Contains(out, ln.Addr().String()) || !strings.Contains(out, "address already in use") {
		t.Errorf("stderr does not name the address in use %s:\n%s", ln.Addr(), out)
	}
}

// runBinary runs a short command and returns its exit code, stdout and stderr.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(iceboxBinary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func TestBinaryExitCodes(t *testing.T) {
	bad := writeFile(t, "bad.yaml", "turn:\n  relay_port_min: 70000\n")
	for _, tc := range []struct {
		name       string
		env        []string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"invalid config file", nil, []string{"serve", "--config", bad}, 2, "turn.relay_port_min: 70000 is out of range"},
		{"invalid environment", []string{"ICEBOX_LOG_LEVEL=loud"}, []string{"serve"}, 2, "log.level"},
		{"missing config file", nil, []string{"serve", "--config", "/nonexistent/icebox.yaml"}, 2, "/nonexistent/icebox.yaml"},
		{"unknown flag", nil, []string{"serve", "--bogus"}, 2, "unknown flag: --bogus"},
		{"unknown command", nil, []string{"frobnicate"}, 2, "unknown command"},
		{"extra argument", nil, []string{"serve", "now"}, 2, "unknown command \"now\""},
		{"config print checks too", nil, []string{"config", "print", "--turn.relay_port_min=x"}, 2, "turn.relay_port_min"},
		{"version", nil, []string{"version"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runBinary(t, cleanEnv(tc.env...), tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit code: got %d, want %d (stderr: %s)", code, tc.wantCode, stderr)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr: got %q, want it to contain %q", stderr, tc.wantStderr)
			}
		})
	}
}

func TestBinaryVersion(t *testing.T) {
	code, out, _ := runBinary(t, cleanEnv(), "version")
	if code != 0 || !strings.HasPrefix(out, "icebox ") || !strings.Contains(out, "commit ") || !strings.Contains(out, "go1.") {
		t.Errorf("got %d %q, want version, commit and Go version", code, out)
	}
}

func TestBinaryConfigPrint(t *testing.T) {
	file := writeFile(t, "icebox.yaml", `
public_host: turn.example.com
credentials:
  secrets: [topsecret1, topsecret2]
auth:
  mode: token
  tokens: [apikey123]
signaling:
  redis_url: redis://:redispass@redis.internal:6379/0
`)
	code, out, stderr := runBinary(t, cleanEnv("ICEBOX_TURN_REALM=example.com", "ICEBOX_NOT_A_KEY=1"),
		"config", "print", "--config", file, "--log.level", "debug")
	if code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr)
	}
	for _, secret := range []string{"topsecret1", "topsecret2", "apikey123", "redispass"} {
		if strings.Contains(out, secret) {
			t.Errorf("config print shows the secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(stderr, "ICEBOX_NOT_A_KEY") {
		t.Errorf("no warning about ICEBOX_NOT_A_KEY on stderr: %q", stderr)
	}
	// What it prints is a configuration icebox loads, with the effective values.
	printed := writeFile(t, "printed.yaml", out)
	code, again, stderr := runBinary(t, cleanEnv(), "config", "print", "--config", printed)
	if code != 0 {
		t.Fatalf("the printed configuration does not load: exit %d: %s", code, stderr)
	}
	var c struct {
		PublicHost  string `yaml:"public_host"`
		TURN        struct{ Realm string }
		Log         struct{ Level string }
		Credentials struct{ Secrets []string }
		Signaling   struct {
			RedisURL string `yaml:"redis_url"`
		}
	}
	if err := yaml.Unmarshal([]byte(again), &c); err != nil {
		t.Fatal(err)
	}
	if c.TURN.Realm != "example.com" || c.Log.Level != "debug" || c.PublicHost != "turn.example.com" {
		t.Errorf("printed config loads to realm %q, log.level %q, public_host %q; want example.com, debug, turn.example.com",
			c.TURN.Realm, c.Log.Level, c.PublicHost)
	}
	if want := []string{"<redacted>", "<redacted>"}; strings.Join(c.Credentials.Secrets, ",") != strings.Join(want, ",") {
		t.Errorf("printed secrets: got %v, want %v", c.Credentials.Secrets, want)
	}
	if c.Signaling.RedisURL != "redis://:xxxxx@redis.internal:6379/0" {
		t.Errorf("printed redis_url: got %q, want the password hidden", c.Signaling.RedisURL)
	}
}

// TestBinaryACMEPublicHostIP: ACME for an IP address is refused at start with exit 2, naming
// public_host.
func TestBinaryACMEPublicHostIP(t *testing.T) {
	code, _, stderr := runBinary(t, cleanEnv("ICEBOX_ACME_ENABLED=true", "ICEBOX_ACME_EMAIL=ops@example.com",
		"ICEBOX_EDGE_LISTEN=127.0.0.1:0", "ICEBOX_PUBLIC_HOST=203.0.113.7", "ICEBOX_HTTP_LISTEN=127.0.0.1:0"), "serve")
	if code != exitUsage || !strings.Contains(stderr, `public_host: "203.0.113.7" is an IP address`) {
		t.Errorf("exit %d, stderr %q; want 2 naming public_host", code, stderr)
	}
}
