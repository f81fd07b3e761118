package stunturn_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// readResponse reads one STUN message from a stream.
func readResponse(t *testing.T, r *bufio.Reader) *stun.Message {
	t.Helper()
	head := make([]byte, 20)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(head[2:4]))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: append(head, body...)}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStreamFraming: frames arrive however TCP cuts them: two in one segment, one split in
// single bytes; each gets its answer.
func TestStreamFraming(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{NoTLS: true})
	conn, err := net.Dial("tcp", srv.TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	a, b := stun.MustBuild(stun.TransactionID, stun.BindingRequest), stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(append(append([]byte(nil), a.Raw...), b.Raw...)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []*stun.Message{a, b} {
		if got := readResponse(t, r); got.TransactionID != want.TransactionID || got.Type != stun.BindingSuccess {
			t.Errorf("got %v, want the Binding success for %x", got, want.TransactionID)
		}
	}
	c := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	for _, x := range c.Raw {
		if _, err := conn.Write([]byte{x}); err != nil {
			t.Fatal(err)
		}
	}
	if got := readResponse(t, r); got.TransactionID != c.TransactionID {
		t.Errorf("a request written byte by byte: got %v", got)
	}
}

// TestStreamGarbageClosesOnlyThatConnection: a stream that is not TURN is closed; other
// connections and transports carry on.
func TestStreamGarbageClosesOnlyThatConnection(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{Config: labConfig(), NoTLS: true})
	echo, _ := turntest.Echo(t)
	good := turntest.Dial(t, "tcp", srv.TCP, nil)
	cred := srv.Credential("ok", time.Hour)
	if _, err := good.Allocate(cred.Username, cred.Password); err != nil {
		t.Fatal(err)
	}
	if err := good.CreatePermission(peer(echo)); err != nil {
		t.Fatal(err)
	}

	bad, err := net.Dial("tcp", srv.TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = bad.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := bad.Read(make([]byte, 100)); err == nil {
		t.Errorf("a non-TURN stream got an answer instead of being closed")
	}

	if err := good.Send(echo.AddrPort(), []byte("unaffected")); err != nil {
		t.Fatal(err)
	}
	recvPayload(t, good, "unaffected")
}

// TestStreamTimeouts: a connection that never completes TLS is closed, and so is one that
// holds no allocation once the idle timeout has passed since it opened, even while it keeps
// sending STUN Bindings (an open connection is a file descriptor); one with an allocation stays.
func TestStreamTimeouts(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{IdleTimeout: 300 * time.Millisecond, HandshakeTimeout: 300 * time.Millisecond})

	withAlloc := turntest.Dial(t, "tcp", srv.TCP, nil)
	cred := srv.Credential("stays", time.Hour)
	if _, err := withAlloc.Allocate(cred.Username, cred.Password); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{srv.TCP, srv.TLS} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("a silent connection to %s was not closed by the server", addr)
		}
		conn.Close()
	}

	// A connection that only sends Bindings, one after the other, is answered until it is
	// closed.
	chatty, err := net.Dial("tcp", srv.TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer chatty.Close()
	r := bufio.NewReader(chatty)
	deadline := time.Now().Add(10 * time.Second)
	answered := 0
	for {
		if time.Now().After(deadline) {
			t.Fatalf("a connection without an allocation sending Bindings stayed open for 10 s (%d answered)", answered)
		}
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		_ = chatty.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := chatty.Write(req.Raw); err != nil {
			break
		}
		if _, err := r.Peek(1); err != nil {
			break // closed by the server
		}
		readResponse(t, r)
		answered++
	}
	if answered == 0 {
		t.Errorf("no Binding was answered before the connection closed")
	}
	// The idle timeout has passed for the connection with an allocation as well.
	if _, _, err := withAlloc.Binding(); err != nil {
		t.Errorf("the connection holding an allocation was closed: %v", err)
	}
}

// TestTLSClientCloseLogsNothing: a TLS client that goes away first (here with a reset, so the
// server's close_notify cannot be sent) ends its connection normally, with nothing in the log at
// info or above.
func TestTLSClientCloseLogsNothing(t *testing.T) {
	var buf syncBuffer
	srv := turntest.Start(t, turntest.Options{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	for range 5 {
		raw, err := net.Dial("tcp", srv.TLS)
		if err != nil {
			t.Fatal(err)
		}
		_ = raw.(*net.TCPConn).SetLinger(0) // close with a reset
		conn := tls.Client(raw, srv.TLSConfig)
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
			t.Fatal(err)
		}
		readResponse(t, bufio.NewReader(conn))
		raw.Close()
	}
	for deadline := time.Now().Add(10 * time.Second); metric(t, srv.Registry, "icebox_turn_connections", "transport", "tls") != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server did not see the clients go")
		}
	}
	if out := buf.String(); out != "" {
		t.Errorf("clients going away logged at info or above:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer for a logger written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
