// Package redistest runs a real redis-server on a loopback port for tests.
package redistest

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Options of Start.
type Options struct {
	// Password is required of clients (requirepass) when set.
	Password string
	// TLSCert and TLSKey make the server speak TLS only (rediss://).
	TLSCert, TLSKey string
}

// Server is a redis-server the test started; it is killed at the end of the test.
type Server struct {
	Addr string // 127.0.0.1:PORT
	URL  string // redis://[:PASSWORD@]127.0.0.1:PORT/0, or rediss://

	t    testing.TB
	o    Options
	dir  string
	path string
	cmd  *exec.Cmd
}

// Start starts redis-server, without persistence, on a free loopback port. Without
// redis-server installed the test is skipped, or fails when CI=true.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed (make test installs it): %v", err)
		}
		t.Skipf("redis-server is not installed (make test installs it): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	s := &Server{Addr: addr, t: t, o: o, dir: t.TempDir(), path: path}
	scheme, auth := "redis", ""
	if o.TLSCert != "" {
		scheme = "rediss"
	}
	if o.Password != "" {
		auth = ":" + o.Password + "@"
	}
	s.URL = fmt.Sprintf("%s://%s%s/0", scheme, auth, addr)
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Stop kills the server at once (SIGKILL), as a crash or a network loss would end it.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port, empty (it persists nothing).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir,
		"--protected-mode", "no", "--loglevel", "warning"}
	if s.o.TLSCert != "" {
		args = append(args, "--port", "0", "--tls-port", port, "--tls-cert-file", s.o.TLSCert,
			"--tls-key-file", s.o.TLSKey, "--tls-auth-clients", "no")
	} else {
		args = append(args, "--port", port)
	}
	if s.o.Password != "" {
		args = append(args, "--requirepass", s.o.Password)
	}
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) { // the port may linger for a moment after a kill
		cmd := exec.Command(s.path, args...) //nolint:gosec // redis-server from PATH
		log, lerr := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if lerr != nil {
			s.t.Fatal(lerr)
		}
		cmd.Stdout, cmd.Stderr = log, log
		err = cmd.Start()
		_ = log.Close() // the child has its own descriptor
		if err != nil {
			s.t.Fatalf("starting redis-server: %v", err)
		}
		s.cmd = cmd
		if err = s.waitReady(5 * time.Second); err == nil {
			return
		}
		s.Stop()
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %s: %v", s.Addr, err)
}

// waitReady waits until the server answers PING (or asks for the password).
func (s *Server) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if last = s.ping(); last == nil {
			return nil
		}
		time.Sleep(30 * time.Millisecond)
	}
	return last
}

func (s *Server) ping() error {
	var c net.Conn
	var err error
	d := net.Dialer{Timeout: time.Second}
	if s.o.TLSCert != "" {
		c, err = tls.DialWithDialer(&d, "tcp", s.Addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a test server's self-signed certificate
	} else {
		c, err = d.Dial("tcp", s.Addr)
	}
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
		return nil
	}
	return fmt.Errorf("PING: %q", strings.TrimSpace(line))
}

// Port is the server's port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}
