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
	"github.com/icebox-rtc/icebox/signaling"
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

// TestMaxConnsPerIP: max_conns_per_ip counts the sessions of a client, connected or waiting
// for a resume: a dropped connection keeps its slot for resume_grace (its resume takes no new
// one), and the slot comes back when the grace ends.
// TestResumeAppliesClaims: a resume takes on the claims of the token it presents. A session
// opened with an unrestricted token and resumed with one limited to room blue may join blue
// only; a session in a room the new token does not allow is not resumed (it ends, and its room
// hears peer-left); a token of another user resumes nothing.
func TestResumeAppliesClaims(t *testing.T) {
	s := start(t, serverOptions{auth: credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}})
	token := func(claims jwt.MapClaims) string {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		return signJWT(t, claims)
	}
	anyRoom, blueOnly := token(jwt.MapClaims{"sub": "alice"}), token(jwt.MapClaims{"sub": "alice", "room": "blue"})

	c := dial(t, s, sigclient.Options{Token: anyRoom})
	_ = c.Close()
	c2 := dial(t, s, sigclient.Options{Token: blueOnly, Resume: c.Welcome().Resume})
	if !c2.Welcome().Resumed {
		t.Fatalf("resume with a narrower token of the same user: got %s, want resumed", c2.Welcome().Raw)
	}
	if _, err := c2.Join(ctx(t), "red", nil); !isCode(err, "forbidden") {
		t.Errorf("join red after resuming with a blue-only token: got %v, want forbidden", err)
	}
	if _, err := c2.Join(ctx(t), "blue", nil); err != nil {
		t.Errorf("join blue: %v", err)
	}

	observer := dial(t, s, sigclient.Options{Token: token(jwt.MapClaims{"sub": "bob"})})
	if _, err := observer.Join(ctx(t), "red", nil); err != nil {
		t.Fatal(err)
	}
	c3 := dial(t, s, sigclient.Options{Token: anyRoom})
	if _, err := c3.Join(ctx(t), "red", nil); err != nil {
		t.Fatal(err)
	}
	expect(t, observer, "peer-joined")
	_ = c3.Close()
	c4 := dial(t, s, sigclient.Options{Token: blueOnly, Resume: c3.Welcome().Resume})
	if c4.Welcome().Resumed || c4.Welcome().Peer == c3.Welcome().Peer {
		t.Errorf("a session in red resumed with a blue-only token: %s", c4.Welcome().Raw)
	}
	if m := expect(t, observer, "peer-left"); m.Peer != c3.Welcome().Peer {
		t.Errorf("got %s, want the session that could not resume to leave red", m.Raw)
	}

	c5 := dial(t, s, sigclient.Options{Token: anyRoom})
	_ = c5.Close()
	other := dial(t, s, sigclient.Options{Token: token(jwt.MapClaims{"sub": "mallory"}), Resume: c5.Welcome().Resume})
	if other.Welcome().Resumed {
		t.Errorf("another user resumed the session")
	}
}

func TestMaxConnsPerIP(t *testing.T) {
	clock := signaling.NewFakeClock()
	const grace = time.Minute
	s := start(t, serverOptions{clock: clock, config: func(c *signalingConfig) { c.MaxConnsPerIP, c.ResumeGrace = 2, grace }})
	a := dial(t, s, sigclient.Options{})
	dial(t, s, sigclient.Options{})
	if _, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{}); !isCode(err, "rate-limited") {
		t.Fatalf("third connection from one address: got %v, want 429", err)
	}
	_ = a.Close() // a drop: the session waits for a resume
	clock.WaitPending(t, grace, 1)
	if _, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{}); !isCode(err, "rate-limited") {
		t.Fatalf("a new session while another waits for its resume: got %v, want 429", err)
	}
	a2 := dial(t, s, sigclient.Options{Resume: a.Welcome().Resume, Last: a.LastSeq()})
	if !a2.Welcome().Resumed {
		t.Fatalf("the resume at the limit: got %s, want resumed", a2.Welcome().Raw)
	}
	_ = a2.Close()
	clock.WaitPending(t, grace, 1)
	clock.Advance(grace) // the session ends: its slot comes back
	waitFor(t, "a new connection is accepted", func() bool {
		c, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{})
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
}

// TestMaxConnsPerIPv6Client: max_conns_per_ip counts a client as every other per-IP limit does:
// the addresses of one IPv6 /64 are one client.
func TestMaxConnsPerIPv6Client(t *testing.T) {
	s := start(t, serverOptions{config: func(c *signalingConfig) { c.MaxConnsPerIP = 2 }, proxies: []string{"127.0.0.1/32"}})
	from := func(addr string) sigclient.Options {
		return sigclient.Options{Header: http.Header{"X-Forwarded-For": {addr}}}
	}
	dial(t, s, from("2001:db8:1:2::1"))
	dial(t, s, from("2001:db8:1:2::2"))
	if _, err := sigclient.Dial(ctx(t), s.URL, from("2001:db8:1:2:ffff::3")); !isCode(err, "rate-limited") {
		t.Fatalf("a third address of the same /64: got %v, want 429", err)
	}
	dial(t, s, from("2001:db8:1:3::1")) // another /64 is another client
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
