// Package pebbletest runs a real ACME CA for tests: Let's Encrypt's Pebble, with
// pebble-challtestsrv as its DNS server answering every name with 127.0.0.1, both on free
// loopback ports and stopped when the test ends. make test installs both with go install.
package pebbletest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// CA is a running Pebble.
type CA struct {
	// Directory is the ACME directory URL (acme.ca).
	Directory string
	// APIRoot is a PEM file of the root of Pebble's own HTTPS certificate (acme.ca_root).
	APIRoot string
	// Roots trusts the certificates Pebble issues (its roots are made anew at every start);
	// RootsPEM is the same in PEM. Both are set by Start.
	Roots    *x509.CertPool
	RootsPEM []byte

	dir, apiCert, apiKey string
	apiRoots             *x509.CertPool
	api                  int
	o                    Options
	stops                []func()
}

// Stop ends Pebble and challtestsrv: the CA is unreachable from now on.
func (ca *CA) Stop() {
	for _, stop := range ca.stops {
		stop()
	}
	ca.stops = nil
}

// Options choose the ports Pebble validates on and the lifetime of what it issues.
type Options struct {
	// TLSPort and HTTPPort are where Pebble connects (on 127.0.0.1) for TLS-ALPN-01 and
	// HTTP-01; 0 points them at a port where nothing listens.
	TLSPort, HTTPPort int
	// Validity is the lifetime of issued certificates; 0: 90 days.
	Validity time.Duration
	// APIPort is the port of the ACME API (0: a free one), for a test that points icebox at
	// a CA before it runs.
	APIPort int
}

// Tools are the programs a test needs: it skips (fails in CI) when they are missing.
func Tools(t testing.TB) (pebble, challtestsrv string) {
	t.Helper()
	paths := make([]string, 2)
	for i, name := range []string{"pebble", "pebble-challtestsrv"} {
		p, err := exec.LookPath(name)
		if err != nil {
			// make test go-installs them into GOPATH/bin, which a plain go test may not have
			// in PATH.
			if out, gerr := exec.Command("go", "env", "GOPATH").Output(); gerr == nil {
				if cand := filepath.Join(strings.TrimSpace(string(out)), "bin", name); fileExists(cand) {
					p, err = cand, nil
				}
			}
		}
		if err != nil {
			turntest.SkipOrFail(t, "%s is not installed (make test installs it with go install): %v", name, err)
		}
		paths[i] = p
	}
	return paths[0], paths[1]
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Start runs challtestsrv and Pebble; they stop when the test ends.
func Start(t testing.TB, o Options) *CA {
	t.Helper()
	ca := New(t, o)
	ca.Start(t)
	return ca
}

// New prepares a CA without running it: its directory URL and API root are known, so a test
// can point icebox at a CA that is down, then Start it.
func New(t testing.TB, o Options) *CA {
	t.Helper()
	if o.Validity == 0 {
		o.Validity = 90 * 24 * time.Hour
	}
	ca := &CA{dir: t.TempDir(), api: o.APIPort, o: o}
	if ca.api == 0 {
		ca.api = FreePort(t)
	}
	ca.Directory = fmt.Sprintf("https://127.0.0.1:%d/dir", ca.api)
	ca.apiCert, ca.apiKey, ca.APIRoot, ca.apiRoots = apiCertificate(t, ca.dir)
	return ca
}

// Start runs challtestsrv and Pebble, and waits until Pebble answers.
func (ca *CA) Start(t testing.TB) {
	t.Helper()
	pebble, challtestsrv := Tools(t)
	dns, dnsMgmt := FreePort(t), FreePort(t)
	ca.stops = append(ca.stops, run(t, "pebble-challtestsrv", challtestsrv, nil,
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-dnsserver", "127.0.0.1:"+strconv.Itoa(dns), "-management", "127.0.0.1:"+strconv.Itoa(dnsMgmt),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""))
	waitTCP(t, "pebble-challtestsrv", "127.0.0.1:"+strconv.Itoa(dnsMgmt))

	mgmt := FreePort(t)
	closed := FreePort(t) // nothing listens there
	tlsPort, httpPort := ca.o.TLSPort, ca.o.HTTPPort
	if tlsPort == 0 {
		tlsPort = closed
	}
	if httpPort == 0 {
		httpPort = closed
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  "127.0.0.1:" + strconv.Itoa(ca.api),
		"managementListenAddress":        "127.0.0.1:" + strconv.Itoa(mgmt),
		"certificate":                    ca.apiCert,
		"privateKey":                     ca.apiKey,
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{"default": map[string]any{
			"description": "icebox tests", "validityPeriod": int(ca.o.Validity.Seconds()),
		}},
	}}
	cfgFile := filepath.Join(ca.dir, "pebble.json")
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// No random sleeps before validations, no nonces refused at random (Pebble's defaults test
	// clients' patience; icebox's retries are tested on their own).
	env := []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}
	ca.stops = append(ca.stops, run(t, "pebble", pebble, env, "-config", cfgFile, "-dnsserver", "127.0.0.1:"+strconv.Itoa(dns), "-strict=false"))

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.apiRoots, MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(ca.Directory)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble does not answer at %s: %v", ca.Directory, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmt))
	if err != nil {
		t.Fatalf("pebble's root: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	ca.RootsPEM, _ = io.ReadAll(resp.Body)
	ca.Roots = x509.NewCertPool()
	if !ca.Roots.AppendCertsFromPEM(ca.RootsPEM) {
		t.Fatalf("pebble's root is not PEM: %q", ca.RootsPEM)
	}
}

// FreePort is a TCP and UDP port free on 127.0.0.1 when asked. (Pebble and challtestsrv take
// ports from their configuration, and tests point Pebble at icebox's.)
func FreePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = tl.Close()
		if err == nil {
			_ = ul.Close()
			return port
		}
	}
	t.Fatal("no free port on 127.0.0.1")
	return 0
}

// waitTCP waits until addr accepts connections.
func waitTCP(t testing.TB, name, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s: %v", name, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run starts a program and returns what stops it (also called when the test ends); its output
// is shown when the test fails.
func run(t testing.TB, name, path string, env []string, args ...string) func() {
	t.Helper()
	cmd := exec.Command(path, args...) //nolint:gosec // the test's own tools, found by Tools
	cmd.Env = append(os.Environ(), env...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	return stop
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// apiCertificate makes a CA and a certificate for 127.0.0.1 signed by it, for Pebble's HTTPS
// API, as files in dir: the certificate, its key, and the CA's (for acme.ca_root).
func apiCertificate(t testing.TB, dir string) (certFile, keyFile, rootFile string, roots *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "icebox test ACME API root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile, rootFile = filepath.Join(dir, "api.pem"), filepath.Join(dir, "api.key"), filepath.Join(dir, "api-root.pem")
	for f, b := range map[string]*pem.Block{
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
		rootFile: {Type: "CERTIFICATE", Bytes: caDER},
	} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	roots = x509.NewCertPool()
	roots.AddCert(caCert)
	return certFile, keyFile, rootFile, roots
}

// GoroutinesToIgnore are certmagic's that outlive a test by design, for goleak: one rate
// limiter per CA account for the life of the process, and a lock file's refresher that ends
// within seconds of the lock's release.
func GoroutinesToIgnore() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).permit"),
		goleak.IgnoreTopFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	}
}

// Name is a fresh DNS name under icebox.test for one test run: certmagic keeps state by name
// for the whole process (challenges, renewal backoff), which a test run with -count must not
// inherit from the run before.
func Name(label string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%x.icebox.test", label, b)
}
