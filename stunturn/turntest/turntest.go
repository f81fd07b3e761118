// Package turntest starts icebox's TURN server in-process for tests, on real loopback sockets,
// and offers a small TURN client that sends exactly the requests a test asks for (pion's client
// decides for itself when to bind channels or refresh), plus an echo peer.
package turntest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/stunturn"
	"github.com/icebox-rtc/icebox/stunturn/turnclient"
)

// Server is an icebox TURN server on 127.0.0.1, stopped when the test ends.
type Server struct {
	*stunturn.Server
	// UDP, TCP and TLS are the listener addresses ("" when off).
	UDP, TCP, TLS string
	Config        stunturn.Config
	Secrets       *credentials.Secrets
	Registry      *prometheus.Registry
	// TLSConfig trusts the server's self-signed certificate, for TLS clients.
	TLSConfig *tls.Config
}

// Options adjust Start; the zero value is a server with UDP, TCP and TLS, secret "secret",
// max_ttl 168h and the default peer policy.
type Options struct {
	Config  *stunturn.Config // nil: DefaultConfig on 127.0.0.1
	Secrets []string         // nil: ["secret"]
	MaxTTL  time.Duration    // 0: 168h
	NoTLS   bool
	// PublicIP is advertised as the relay address; invalid: 127.0.0.1, where the relays are.
	PublicIP netip.Addr
	Logger   *slog.Logger // nil: discard (t.Log when -v)
	// IdleTimeout and HandshakeTimeout of TCP and TLS connections (0: the defaults).
	IdleTimeout, HandshakeTimeout time.Duration
	// MaxFiles is the file descriptor limit the server budgets for (0: the process's).
	MaxFiles int
	// Now is the server's time for checking credentials (nil: the system clock).
	Now func() time.Time
	// QuotaByClient counts turn.user_quota per client address.
	QuotaByClient bool
}

// Config is stunturn.DefaultConfig with every listener on 127.0.0.1:0 and relays on 127.0.0.1.
func Config() stunturn.Config {
	c := stunturn.DefaultConfig()
	c.UDPListen, c.TCPListen, c.TLSListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	c.RelayAddress = "127.0.0.1"
	c.UDPSockets = 2
	return c
}

// Start starts a server with relays on 127.0.0.1.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	cfg := Config()
	if o.Config != nil {
		cfg = *o.Config
	}
	if o.Secrets == nil {
		o.Secrets = []string{"secret"}
	}
	if o.MaxTTL == 0 {
		o.MaxTTL = 168 * time.Hour
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
		// A fuzz target's server outlives each input: logging into f from inside one panics.
		if _, fuzz := t.(*testing.F); testing.Verbose() && !fuzz {
			log = slog.New(slog.NewTextHandler(NewLogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	s := &Server{Config: cfg, Secrets: credentials.NewSecrets(o.Secrets), Registry: prometheus.NewRegistry()}
	if !o.PublicIP.IsValid() {
		o.PublicIP = netip.MustParseAddr("127.0.0.1")
	}
	opts := stunturn.Options{Secrets: s.Secrets, MaxTTL: o.MaxTTL, PublicIP: o.PublicIP,
		Logger: log, Registry: s.Registry, IdleTimeout: o.IdleTimeout, HandshakeTimeout: o.HandshakeTimeout,
		MaxFiles: o.MaxFiles, Now: o.Now, QuotaByClient: o.QuotaByClient}
	var err error
	if cfg.UDPListen != "" {
		if opts.UDP, err = stunturn.ListenUDP(cfg.UDPListen, cfg.UDPSockets); err != nil {
			t.Fatal(err)
		}
		s.UDP = opts.UDP[0].LocalAddr().String()
	}
	if cfg.TCPListen != "" {
		if opts.TCP, err = net.Listen("tcp", cfg.TCPListen); err != nil {
			t.Fatal(err)
		}
		s.TCP = opts.TCP.Addr().String()
	}
	if cfg.TLSListen != "" && !o.NoTLS {
		cert, pool := Certificate(t)
		ln, err := net.Listen("tcp", cfg.TLSListen)
		if err != nil {
			t.Fatal(err)
		}
		s.TLS = ln.Addr().String()
		opts.TLS = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		s.TLSConfig = &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	} else {
		cfg.TLSListen = ""
		s.Config.TLSListen = ""
	}
	if s.Server, err = stunturn.New(cfg, opts); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = s.Serve()
		close(done)
	}()
	t.Cleanup(func() {
		_ = s.Shutdown(context.Background())
		<-done
	})
	return s
}

// Addr is the listener address of transport ("udp", "tcp" or "tls").
func (s *Server) Addr(transport string) string {
	switch transport {
	case "udp":
		return s.UDP
	case "tcp":
		return s.TCP
	}
	return s.TLS
}

// Credential mints a TURN REST credential for user valid for ttl (negative: already expired).
func (s *Server) Credential(user string, ttl time.Duration) credentials.Credential {
	return s.Secrets.Mint(user, ttl, time.Now())
}

// Certificate makes a self-signed certificate for localhost and 127.0.0.1 and a pool trusting it.
func Certificate(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	certPEM, keyPEM := certificatePEM(t)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return cert, pool
}

// CertificateFiles writes a self-signed certificate and key as PEM files in a temp dir.
func CertificateFiles(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := certificatePEM(t)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func certificatePEM(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// Echo starts a UDP peer on 127.0.0.1 that sends every datagram back to where it came from,
// and returns its address and a channel that yields what it receives.
func Echo(t testing.TB) (*net.UDPAddr, <-chan []byte) {
	t.Helper()
	return EchoOn(t, netip.MustParseAddr("127.0.0.1"))
}

// EchoOn is Echo on another loopback address, such as 127.0.0.2.
func EchoOn(t testing.TB, ip netip.Addr) (*net.UDPAddr, <-chan []byte) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(4 << 20) // as the clients' (client.go)
	got := make(chan []byte, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			select {
			case got <- append([]byte(nil), buf[:n]...):
			default:
			}
			_, _ = conn.WriteToUDP(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return conn.LocalAddr().(*net.UDPAddr), got
}

// LogWriter sends log lines to t.Log until the test's cleanup begins, then drops them:
// goroutines that outlive a test must not log into it.
type LogWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

// NewLogWriter returns a LogWriter for t.
func NewLogWriter(t testing.TB) *LogWriter {
	w := &LogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// NewClient is a turnclient on a connection the test dialed itself ("udp", "tcp" or "tls"),
// closed at the end of the test.
func NewClient(t testing.TB, network string, conn net.Conn) *turnclient.Client {
	t.Helper()
	c := turnclient.NewClient(network, conn, turnclient.Options{})
	t.Cleanup(c.Close)
	return c
}

// Dial connects a turnclient to a TURN server (network "udp", "tcp" or "tls", tlsConfig for
// the last), closed at the end of the test.
func Dial(t testing.TB, network, addr string, tlsConfig *tls.Config) *turnclient.Client {
	t.Helper()
	c, err := turnclient.Dial(network, addr, turnclient.Options{TLS: tlsConfig})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
