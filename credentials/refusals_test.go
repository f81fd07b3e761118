package credentials_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/icebox-rtc/icebox/credentials"
)

// syncBuffer is a log destination safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.FieldsFunc(s.b.String(), func(r rune) bool { return r == '\n' })
}

// TestRefusalsLogged: the credential endpoints log a refused origin and a rejected token once
// each, however often they come within 10 s.
func TestRefusalsLogged(t *testing.T) {
	var buf syncBuffer
	srv, _ := start(t, setup{
		origins: []string{"https://app.example.com"},
		auth:    credentials.AuthConfig{Mode: "token", Tokens: []string{"t0ken"}},
		log:     &buf,
	})
	for range 3 {
		do(t, "GET", srv.URL+"/ice-config", map[string]string{"Origin": "https://evil.example.com"})
		do(t, "GET", srv.URL+"/ice-config", map[string]string{"Authorization": "Bearer wrong"})
	}
	lines := buf.lines()
	if len(lines) != 2 || !strings.Contains(lines[0], "reason=forbidden") || !strings.Contains(lines[0], "https://evil.example.com") ||
		!strings.Contains(lines[1], "reason=unauthorized") {
		t.Errorf("got %d lines, want one for the origin and one for the token:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}
