package credentials_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/credentials"
)

// FuzzAuthenticate: no token string crashes the token or JWT checks, and only the configured
// token or a valid HS256 JWT passes.
func FuzzAuthenticate(f *testing.F) {
	tokenAuth := credentials.NewAuthenticator(credentials.AuthConfig{Mode: "token", Tokens: []string{"apikey"}})
	jwtAuth := credentials.NewAuthenticator(credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret})
	f.Fuzz(func(t *testing.T, token string) {
		if _, err := tokenAuth.Authenticate(token); (err == nil) != (token == "apikey") {
			t.Errorf("token mode accepted %q: %v", token, err)
		}
		id, err := jwtAuth.Authenticate(token)
		if err == nil && (strings.Contains(id.User, ":") || strings.Count(token, ".") != 2) {
			t.Errorf("jwt mode accepted %q as user %q", token, id.User)
		}
	})
}

// FuzzCredentialsQuery: any query string gets a JSON answer, 200 or an error body, never a
// crash, and never a username with an injected ':'.
func FuzzCredentialsQuery(f *testing.F) {
	svc := credentials.NewService(credentials.ServiceOptions{
		Secrets: credentials.NewSecrets([]string{"s"}), TTL: time.Hour,
		Endpoints: credentials.Endpoints{Host: "turn.example.com", UDP: 3478},
		Auth:      credentials.NewAuthenticator(credentials.DefaultAuthConfig()),
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry(),
	})
	mux := http.NewServeMux()
	svc.Register(mux)
	f.Fuzz(func(t *testing.T, path string, query string) {
		target := "/ice-config"
		if len(path)%2 == 1 {
			target = "/turn-credentials"
		}
		req := httptest.NewRequest("GET", "http://icebox"+target, nil)
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("status %d, body %q is not JSON", rec.Code, rec.Body.String())
		}
		switch rec.Code {
		case 200:
			if u, ok := body["username"].(string); ok {
				if _, user, err := credentials.ParseUsername(u); err != nil || strings.Contains(user, ":") {
					t.Errorf("username %q", u)
				}
			}
		case 400:
			if _, ok := body["error"]; !ok {
				t.Errorf("400 without the error body: %v", body)
			}
		default:
			t.Errorf("status %d for ?%s", rec.Code, query)
		}
	})
}
