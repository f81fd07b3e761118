package signaling_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

const jwtSecret = "0123456789abcdef0123456789abcdef"

func signJWT(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOrigin(t *testing.T) {
	var log lockedBuffer
	s := start(t, serverOptions{origins: []string{"https://app.example.com"}, log: &log})
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"https://app.example.com", true},
		{"", true}, // not a browser
		{"https://evil.example.com", false},
		{"null", false},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		_, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{Header: h})
		if tc.ok && err != nil {
			t.Errorf("origin %q: %v", tc.origin, err)
		}
		if !tc.ok && !isCode(err, "forbidden") {
			t.Errorf("origin %q: got %v, want 403 forbidden", tc.origin, err)
		}
	}
	// Two refused origins within 10 s: the server logs the first only.
	if got := strings.Count(log.String(), "signaling: refused"); got != 1 || !strings.Contains(log.String(), "origin https://evil.example.com is not allowed") {
		t.Errorf("the refusals were logged %d times, want once, naming the origin:\n%s", got, log.String())
	}
}

// lockedBuffer is a log destination safe for the hub's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func TestAuth(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name  string
		auth  credentials.AuthConfig
		token string
		ok    bool
	}{
		{"none", credentials.AuthConfig{Mode: "none"}, "", true},
		{"token missing", credentials.AuthConfig{Mode: "token", Tokens: []string{"k"}}, "", false},
		{"token wrong", credentials.AuthConfig{Mode: "token", Tokens: []string{"k"}}, "x", false},
		{"token good", credentials.AuthConfig{Mode: "token", Tokens: []string{"k"}}, "k", true},
		{"jwt missing", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}, "", false},
		{"jwt expired", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}, signJWT(t, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(-time.Hour).Unix()}), false},
		{"jwt good", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}, signJWT(t, jwt.MapClaims{"sub": "a", "exp": exp}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, serverOptions{auth: tc.auth})
			c, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{Token: tc.token})
			if tc.ok {
				if err != nil {
					t.Fatalf("got %v, want a welcome", err)
				}
				_ = c.Close()
			} else if !isCode(err, "unauthorized") {
				t.Fatalf("got %v, want 401 unauthorized", err)
			}
		})
	}
}

// TestJWTRoomClaim: a token with a room claim joins that room only.
func TestJWTRoomClaim(t *testing.T) {
	s := start(t, serverOptions{auth: credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}})
	tok := signJWT(t, jwt.MapClaims{"sub": "guest", "room": "lobby", "exp": time.Now().Add(time.Hour).Unix()})
	c := dial(t, s, sigclient.Options{Token: tok})
	if _, err := c.Join(ctx(t), "vip", nil); !isCode(err, "forbidden") {
		t.Errorf("join another room: got %v, want forbidden", err)
	}
	if _, err := c.Join(ctx(t), "lobby", nil); err != nil {
		t.Errorf("join the claimed room: %v", err)
	}
	// A resume token is no way into another user's session.
	other := signJWT(t, jwt.MapClaims{"sub": "someone-else", "exp": time.Now().Add(time.Hour).Unix()})
	token := c.Welcome().Resume
	_ = c.Close()
	c2 := dial(t, s, sigclient.Options{Token: other, Resume: token})
	if c2.Welcome().Resumed {
		t.Errorf("another user resumed the session")
	}
}

func TestMaxConnsPerIP(t *testing.T) {
	s := start(t, serverOptions{config: func(c *signalingConfig) { c.MaxConnsPerIP = 2 }})
	a := dial(t, s, sigclient.Options{})
	dial(t, s, sigclient.Options{})
	if _, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{}); !isCode(err, "rate-limited") {
		t.Fatalf("third connection from one address: got %v, want 429", err)
	}
	_ = a.Close()
	// The slot comes back once the server has seen the close.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{})
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a close: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNotAWebSocket(t *testing.T) {
	s := start(t, serverOptions{})
	resp, err := http.Get(s.HTTP.URL + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"bad-request"`) {
		t.Errorf("plain GET /ws: got %d %s", resp.StatusCode, body)
	}
}

// TestPongTimeout: a client that answers no ping is dropped after pong_timeout, which counts as
// a drop (the others see peer-left "disconnected" after the grace).
func TestPongTimeout(t *testing.T) {
	s := start(t, serverOptions{config: func(c *signalingConfig) {
		c.PingInterval, c.PongTimeout, c.ResumeGrace = 100*time.Millisecond, 400*time.Millisecond, 100*time.Millisecond
	}})
	a, _ := join(t, s, "r", nil)
	silent, _ := rawDial(t, s, "", nil)
	silent.SetPingHandler(func(string) error { return nil }) // no pongs
	if err := silent.WriteJSON(map[string]any{"type": "join", "room": "r"}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, _, err := silent.ReadMessage(); err != nil {
				return
			}
		}
	}()
	expect(t, a, "peer-joined")
	if m := expect(t, a, "peer-left"); m.Reason != "disconnected" {
		t.Errorf("got %s", m.Raw)
	}
	if got := counter(t, s, "icebox_signaling_drops_total", "reason", "pong_timeout"); got != 1 {
		t.Errorf("drops for pong timeout: got %v, want 1", got)
	}
}
