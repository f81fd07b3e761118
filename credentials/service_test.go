package credentials_test

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/httpapi"
	"github.com/icebox-rtc/icebox/stunturn"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

const jwtSecret = "0123456789abcdef0123456789abcdef"

type setup struct {
	auth      credentials.AuthConfig
	origins   []string
	rate      float64
	proxies   []string
	endpoints credentials.Endpoints
	secrets   *credentials.Secrets
	log       io.Writer // the service's log; nil: discarded
}

// start serves the credential endpoints on a real loopback HTTP server.
func start(t *testing.T, s setup) (*httptest.Server, *credentials.Service) {
	t.Helper()
	if s.auth.Mode == "" {
		s.auth = credentials.DefaultAuthConfig()
	}
	if s.endpoints.Host == "" {
		s.endpoints = credentials.Endpoints{Host: "turn.example.com", UDP: 3478, TCP: 3478, TLS: 5349}
	}
	if s.secrets == nil {
		s.secrets = credentials.NewSecrets([]string{"secret"})
	}
	origins, err := httpapi.ParseOrigins(s.origins)
	if err != nil {
		t.Fatal(err)
	}
	proxies, err := httpapi.ParseCIDRs(s.proxies)
	if err != nil {
		t.Fatal(err)
	}
	svc := credentials.NewService(credentials.ServiceOptions{
		Secrets: s.secrets, TTL: 24 * time.Hour, Endpoints: s.endpoints,
		Auth: credentials.NewAuthenticator(s.auth), Access: httpapi.NewAccess(origins, proxies), Limiter: httpapi.NewRateLimiter(s.rate), Logger: slog.New(slog.NewTextHandler(cmp.Or(s.log, io.Writer(io.Discard)), nil)),
		Registry: prometheus.NewRegistry(),
	})
	mux := http.NewServeMux()
	svc.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, svc
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, body}
}

// rtcConfiguration is what the browser's RTCConfiguration dictionary reads from /ice-config.
type rtcConfiguration struct {
	ICEServers []struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	} `json:"iceServers"`
	ICETransportPolicy string `json:"iceTransportPolicy"`
	TTL                int    `json:"ttl"`
	ExpiresAt          string `json:"expiresAt"`
}

func decodeICEConfig(t *testing.T, r response) rtcConfiguration {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("got %d %s, want 200", r.status, r.body)
	}
	var c rtcConfiguration
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields() // nothing beyond RTCConfiguration's members and ttl/expiresAt
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
	return c
}

func TestICEConfig(t *testing.T) {
	srv, _ := start(t, setup{})
	r := do(t, "GET", srv.URL+"/ice-config", nil)
	c := decodeICEConfig(t, r)
	if ct, cc := r.header.Get("Content-Type"), r.header.Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
		t.Errorf("got Content-Type %q, Cache-Control %q; want application/json, no-store", ct, cc)
	}
	if len(c.ICEServers) != 2 {
		t.Fatalf("got %d ice servers, want stun and turn", len(c.ICEServers))
	}
	if want := []string{"stun:turn.example.com:3478"}; !slices.Equal(c.ICEServers[0].URLs, want) || c.ICEServers[0].Username != "" {
		t.Errorf("stun entry: got %+v, want %v without credentials", c.ICEServers[0], want)
	}
	turnEntry := c.ICEServers[1]
	want := []string{"turn:turn.example.com:3478?transport=udp", "turn:turn.example.com:3478?transport=tcp", "turns:turn.example.com:5349?transport=tcp"}
	if !slices.Equal(turnEntry.URLs, want) {
		t.Errorf("turn urls: got %v, want %v", turnEntry.URLs, want)
	}
	exp, user, err := credentials.ParseUsername(turnEntry.Username)
	if err != nil || user == "" {
		t.Fatalf("username %q: %v, want EXPIRY:USER with a random user", turnEntry.Username, err)
	}
	if turnEntry.Credential != credentials.Password("secret", turnEntry.Username) {
		t.Errorf("credential is not base64(HMAC-SHA1(secret, username))")
	}
	expiresAt, err := time.Parse(time.RFC3339, c.ExpiresAt)
	if err != nil || !expiresAt.Equal(exp) || c.TTL != 86400 {
		t.Errorf("got ttl %d, expiresAt %q; want 86400 and the username's expiry %v", c.TTL, c.ExpiresAt, exp)
	}
	if d := time.Until(exp); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("expires in %v, want about 24h", d)
	}
	if c.ICETransportPolicy != "" {
		t.Errorf("iceTransportPolicy %q without ?policy=", c.ICETransportPolicy)
	}
	other := decodeICEConfig(t, do(t, "GET", srv.URL+"/ice-config", nil))
	if other.ICEServers[1].Username == turnEntry.Username {
		t.Errorf("two clients got the same username %q: in mode none each gets its own random user", turnEntry.Username)
	}

	relay := decodeICEConfig(t, do(t, "GET", srv.URL+"/ice-config?policy=relay", nil))
	if relay.ICETransportPolicy != "relay" {
		t.Errorf("?policy=relay: got iceTransportPolicy %q", relay.ICETransportPolicy)
	}
	if r := do(t, "GET", srv.URL+"/ice-config?policy=nohost", nil); r.status != 400 || !isErrorBody(r.body, "bad-request") {
		t.Errorf("?policy=nohost: got %d %s, want 400 with the error body", r.status, r.body)
	}
}

func isErrorBody(body []byte, code string) bool {
	var e struct {
		Error struct{ Code, Message string }
	}
	return json.Unmarshal(body, &e) == nil && e.Error.Code == code && e.Error.Message != ""
}

// TestICEConfigURIs: the URIs name exactly the enabled listeners on public_host, whatever its
// form, and no other host.
func TestICEConfigURIs(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    credentials.Endpoints
		want [][]string
	}{
		{"ipv4, every listener", credentials.Endpoints{Host: "203.0.113.5", UDP: 3478, TCP: 3478, TLS: 5349},
			[][]string{{"stun:203.0.113.5:3478"}, {"turn:203.0.113.5:3478?transport=udp", "turn:203.0.113.5:3478?transport=tcp", "turns:203.0.113.5:5349?transport=tcp"}}},
		{"ipv6 literal in brackets", credentials.Endpoints{Host: "2001:db8::5", UDP: 3478, TCP: 3479},
			[][]string{{"stun:[2001:db8::5]:3478"}, {"turn:[2001:db8::5]:3478?transport=udp", "turn:[2001:db8::5]:3479?transport=tcp"}}},
		{"dns name, tcp only", credentials.Endpoints{Host: "turn.example.org", TCP: 443},
			[][]string{{"turn:turn.example.org:443?transport=tcp"}}},
		{"tls only", credentials.Endpoints{Host: "turn.example.org", TLS: 5349},
			[][]string{{"turns:turn.example.org:5349?transport=tcp"}}},
		{"edge beside the others: udp before tcp before tls", credentials.Endpoints{Host: "turn.example.org", UDP: 3478, TCP: 3478, TLS: 5349, EdgeUDP: 443, EdgeTLS: 443},
			[][]string{{"stun:turn.example.org:3478"}, {"turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:443?transport=udp",
				"turn:turn.example.org:3478?transport=tcp", "turns:turn.example.org:5349?transport=tcp", "turns:turn.example.org:443?transport=tcp"}}},
		{"edge only", credentials.Endpoints{Host: "turn.example.org", EdgeUDP: 443, EdgeTLS: 443},
			[][]string{{"stun:turn.example.org:443"}, {"turn:turn.example.org:443?transport=udp", "turns:turn.example.org:443?transport=tcp"}}},
		{"edge tls only", credentials.Endpoints{Host: "turn.example.org", EdgeTLS: 8443},
			[][]string{{"turns:turn.example.org:8443?transport=tcp"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := start(t, setup{endpoints: tc.e})
			c := decodeICEConfig(t, do(t, "GET", srv.URL+"/ice-config", nil))
			var got [][]string
			for _, s := range c.ICEServers {
				got = append(got, s.URLs)
				for _, u := range s.URLs {
					if host := uriHost(u); host != tc.e.Host {
						t.Errorf("%s names host %q, want only %q", u, host, tc.e.Host)
					}
				}
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// uriHost is the host of a stun:/turn:/turns: URI.
func uriHost(u string) string {
	_, rest, _ := strings.Cut(u, ":")
	rest, _, _ = strings.Cut(rest, "?")
	host, _, err := net.SplitHostPort(rest)
	if err != nil {
		return rest
	}
	return host
}

// TestICEConfigAllocates: what /ice-config returns allocates on icebox's TURN server with pion's
// client; a tampered credential does not.
func TestICEConfigAllocates(t *testing.T) {
	turnSrv := turntest.Start(t, turntest.Options{NoTLS: true})
	_, port, _ := net.SplitHostPort(turnSrv.UDP)
	udpPort, _ := strconv.Atoi(port)
	srv, _ := start(t, setup{secrets: turnSrv.Secrets, endpoints: credentials.Endpoints{Host: "127.0.0.1", UDP: udpPort}})
	c := decodeICEConfig(t, do(t, "GET", srv.URL+"/ice-config", nil))
	entry := c.ICEServers[1]
	if err := pionAllocate(t, turnSrv.UDP, entry.Username, entry.Credential); err != nil {
		t.Fatalf("allocate with the /ice-config credential: %v", err)
	}
	tampered := []byte(entry.Credential)
	tampered[0] ^= 1
	if err := pionAllocate(t, turnSrv.UDP, entry.Username, string(tampered)); err == nil {
		t.Fatalf("a tampered credential allocated")
	}
	otherUser := strings.Replace(entry.Username, ":", ":x", 1)
	if err := pionAllocate(t, turnSrv.UDP, otherUser, entry.Credential); err == nil {
		t.Fatalf("the credential allocated under another username")
	}
}

func pionAllocate(t *testing.T, server, username, password string) error {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: username, Password: password, Realm: "icebox",
		LoggerFactory: stunturn.NewLoggerFactory(slog.New(slog.NewTextHandler(io.Discard, nil)), 1, 1),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := client.Allocate()
	if err != nil {
		return err
	}
	return relay.Close()
}

func signJWT(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rs256WithHMACKey is the algorithm-confusion token: it claims RS256 but is signed with
// HMAC-SHA256 under the server's HMAC key, as if that key were an RSA public key.
func rs256WithHMACKey(claims string) string {
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	mac := hmac.New(sha256.New, []byte(jwtSecret))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func TestAuthModes(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := signJWT(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": "alice:admin", "exp": exp})
	for _, tc := range []struct {
		name   string
		auth   credentials.AuthConfig
		token  string // as Authorization: Bearer
		query  string
		status int
		user   string // wanted user part of the username, "" for any
	}{
		{"none", credentials.AuthConfig{Mode: "none"}, "", "", 200, ""},
		{"token missing", credentials.AuthConfig{Mode: "token", Tokens: []string{"k1", "k2"}}, "", "", 401, ""},
		{"token wrong", credentials.AuthConfig{Mode: "token", Tokens: []string{"k1", "k2"}}, "k3", "", 401, ""},
		{"token prefix", credentials.AuthConfig{Mode: "token", Tokens: []string{"k1", "k2"}}, "k", "", 401, ""},
		{"token good", credentials.AuthConfig{Mode: "token", Tokens: []string{"k1", "k2"}}, "k2", "", 200, ""},
		{"token in query", credentials.AuthConfig{Mode: "token", Tokens: []string{"k1"}}, "", "token=k1", 200, ""},
		{"jwt missing", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}, "", "", 401, ""},
		{"jwt garbage", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}, "not.a.jwt", "", 401, ""},
		{"jwt expired", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret},
			signJWT(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": "a", "exp": time.Now().Add(-time.Minute).Unix()}), "", 401, ""},
		{"jwt without exp", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret},
			signJWT(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": "a"}), "", 401, ""},
		{"jwt other key", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret},
			signJWT(t, jwt.SigningMethodHS256, []byte("another-key-another-key-another!!"), jwt.MapClaims{"sub": "a", "exp": exp}), "", 401, ""},
		{"jwt alg none", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret},
			signJWT(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "a", "exp": exp}), "", 401, ""},
		{"jwt RS256 with the HMAC key as public key", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret},
			rs256WithHMACKey(`{"sub":"a","exp":` + strconv.FormatInt(exp, 10) + `}`), "", 401, ""},
		{"jwt RS256 properly signed", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret},
			signJWT(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "a", "exp": exp}), "", 401, ""},
		{"jwt HS512", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret},
			signJWT(t, jwt.SigningMethodHS512, []byte(jwtSecret), jwt.MapClaims{"sub": "a", "exp": exp}), "", 401, ""},
		{"jwt without sub", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret},
			signJWT(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"exp": exp}), "", 401, ""},
		{"jwt good", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}, good, "", 200, "alice%3Aadmin"},
		{"jwt good in query", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}, "", "token=" + url.QueryEscape(good), 200, "alice%3Aadmin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := start(t, setup{auth: tc.auth})
			header := map[string]string{}
			if tc.token != "" {
				header["Authorization"] = "Bearer " + tc.token
			}
			for _, path := range []string{"/ice-config?", "/turn-credentials?service=turn&"} {
				r := do(t, "GET", srv.URL+path+tc.query, header)
				if r.status != tc.status {
					t.Fatalf("%s: got %d %s, want %d", path, r.status, r.body, tc.status)
				}
				if r.status != 200 {
					if !isErrorBody(r.body, "unauthorized") {
						t.Errorf("%s: got body %s, want the unauthorized error body", path, r.body)
					}
					continue
				}
				var body struct {
					Username   string
					ICEServers []struct{ Username string } `json:"iceServers"`
				}
				_ = json.Unmarshal(r.body, &body)
				username := body.Username
				if len(body.ICEServers) > 0 {
					username = body.ICEServers[len(body.ICEServers)-1].Username
				}
				_, user, err := credentials.ParseUsername(username)
				if err != nil || (tc.user != "" && user != tc.user) || strings.Contains(user, ":") {
					t.Errorf("%s: username %q: want user part %q without ':'", path, username, tc.user)
				}
			}
		})
	}
}

func TestTurnCredentialsKeyParameter(t *testing.T) {
	srv, _ := start(t, setup{auth: credentials.AuthConfig{Mode: "token", Tokens: []string{"apikey"}}})
	if r := do(t, "GET", srv.URL+"/turn-credentials?service=turn&username=u&key=apikey", nil); r.status != 200 {
		t.Errorf("?key= as the token: got %d %s", r.status, r.body)
	}
	if r := do(t, "GET", srv.URL+"/turn-credentials?service=turn&username=u&key=wrong", nil); r.status != 401 {
		t.Errorf("a wrong ?key=: got %d, want 401", r.status)
	}
}

// TestTurnCredentialsDraft: the draft-uberti-behave-turn-rest-00 answer.
func TestTurnCredentialsDraft(t *testing.T) {
	srv, _ := start(t, setup{})
	r := do(t, "GET", srv.URL+"/turn-credentials?service=turn&username=bob", nil)
	if r.status != 200 {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	keys := []string{}
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"password", "ttl", "uris", "username"}; !slices.Equal(keys, want) {
		t.Errorf("keys: got %v, want %v", keys, want)
	}
	username, _ := got["username"].(string)
	if _, user, err := credentials.ParseUsername(username); err != nil || user == "" || user == "bob" {
		t.Errorf("username %q, want EXPIRY:USER with a user of the server's choosing, not the bob asked for", username)
	}
	if got["password"] != credentials.Password("secret", username) || got["ttl"] != 86400.0 {
		t.Errorf("got password %v, ttl %v", got["password"], got["ttl"])
	}
	if uris, _ := got["uris"].([]any); len(uris) != 3 || uris[0] != "turn:turn.example.com:3478?transport=udp" {
		t.Errorf("uris: got %v, want the three TURN URIs", got["uris"])
	}
	for _, q := range []string{"service=stun&username=bob", "username=bob"} {
		if r := do(t, "GET", srv.URL+"/turn-credentials?"+q, nil); r.status != 400 || !isErrorBody(r.body, "bad-request") {
			t.Errorf("?%.40s: got %d %s, want 400", q, r.status, r.body)
		}
	}
}

// TestNoCredentialsForAnotherUser: a caller cannot obtain a credential for a user that auth
// does not prove, so it cannot fill that user's turn.user_quota: the username parameter is
// ignored in modes none and token, a JWT's sub decides in mode jwt, and a JWT without sub is
// refused.
func TestNoCredentialsForAnotherUser(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	alice := signJWT(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": "alice", "exp": exp})
	anonymous := signJWT(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"exp": exp})
	for _, tc := range []struct {
		name   string
		auth   credentials.AuthConfig
		token  string
		status int
		user   string // "" for one of the server's choosing
	}{
		{"none", credentials.AuthConfig{Mode: "none"}, "", 200, ""},
		{"token", credentials.AuthConfig{Mode: "token", Tokens: []string{"k1"}}, "k1", 200, ""},
		{"jwt", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}, alice, 200, "alice"},
		{"jwt without sub", credentials.AuthConfig{Mode: "jwt", JWTSecret: jwtSecret}, anonymous, 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := start(t, setup{auth: tc.auth})
			header := map[string]string{}
			if tc.token != "" {
				header["Authorization"] = "Bearer " + tc.token
			}
			seen := map[string]bool{}
			for range 2 {
				r := do(t, "GET", srv.URL+"/turn-credentials?service=turn&username=victim", header)
				if r.status != tc.status {
					t.Fatalf("got %d %s, want %d", r.status, r.body, tc.status)
				}
				if r.status != 200 {
					if !strings.Contains(string(r.body), "no sub") {
						t.Errorf("got %s, want an error saying the JWT has no sub", r.body)
					}
					return
				}
				var got credentials.TURNCredentials
				_ = json.Unmarshal(r.body, &got)
				_, user, err := credentials.ParseUsername(got.Username)
				switch {
				case err != nil || user == "victim" || user == "":
					t.Fatalf("username %q: want a user other than victim", got.Username)
				case tc.user != "" && user != tc.user:
					t.Fatalf("username %q: want user %s", got.Username, tc.user)
				case tc.user == "" && seen[user]:
					t.Fatalf("two credentials for user %s: want a fresh one each time", user)
				}
				seen[user] = true
			}
		})
	}
}

func TestCORS(t *testing.T) {
	srv, _ := start(t, setup{origins: []string{"https://app.example.com"}})
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		name, origin string
		status       int
		acao         string
	}{
		{"allowed", "https://app.example.com", 200, "https://app.example.com"},
		{"forbidden", "https://evil.example.com", 403, ""},
		{"absent", "", 200, ""},
		{"same origin", "http://" + host, 200, "http://" + host},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header := map[string]string{}
			if tc.origin != "" {
				header["Origin"] = tc.origin
			}
			r := do(t, "GET", srv.URL+"/ice-config", header)
			if r.status != tc.status || r.header.Get("Access-Control-Allow-Origin") != tc.acao {
				t.Errorf("got %d with Access-Control-Allow-Origin %q, want %d and %q", r.status, r.header.Get("Access-Control-Allow-Origin"), tc.status, tc.acao)
			}
			if tc.status == 403 && !isErrorBody(r.body, "forbidden") {
				t.Errorf("403 body: %s", r.body)
			}
		})
	}
	preflight := map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET",
		"Access-Control-Request-Headers": "authorization"}
	r := do(t, "OPTIONS", srv.URL+"/ice-config", preflight)
	if r.status != 204 || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "GET") || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("preflight: got %d %v", r.status, r.header)
	}
	preflight["Origin"] = "https://evil.example.com"
	if r := do(t, "OPTIONS", srv.URL+"/ice-config", preflight); r.status != 403 {
		t.Errorf("preflight from a forbidden origin: got %d, want 403", r.status)
	}
	if r := do(t, "POST", srv.URL+"/ice-config", nil); r.status != 405 || !isErrorBody(r.body, "method-not-allowed") {
		t.Errorf("POST: got %d %s, want 405 with the error body", r.status, r.body)
	}
}

func TestRateLimit(t *testing.T) {
	srv, _ := start(t, setup{rate: 1}) // burst 2
	for i := range 2 {
		if r := do(t, "GET", srv.URL+"/ice-config", nil); r.status != 200 {
			t.Fatalf("request %d within the burst: got %d", i+1, r.status)
		}
	}
	r := do(t, "GET", srv.URL+"/turn-credentials?service=turn", nil)
	if r.status != 429 || !isErrorBody(r.body, "rate-limited") {
		t.Fatalf("beyond the burst: got %d %s, want 429", r.status, r.body)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After: got %q, want whole seconds >= 1", r.header.Get("Retry-After"))
	}
	// The peer is not a trusted proxy: a forged X-Forwarded-For changes nothing.
	if r := do(t, "GET", srv.URL+"/ice-config", map[string]string{"X-Forwarded-For": "198.51.100.7"}); r.status != 429 {
		t.Errorf("with a forged X-Forwarded-For: got %d, want 429", r.status)
	}
}

func TestRateLimitBehindTrustedProxy(t *testing.T) {
	srv, _ := start(t, setup{rate: 1, proxies: []string{"127.0.0.1/32"}})
	for i := range 2 {
		do(t, "GET", srv.URL+"/ice-config", map[string]string{"X-Forwarded-For": "198.51.100.7"})
		_ = i
	}
	if r := do(t, "GET", srv.URL+"/ice-config", map[string]string{"X-Forwarded-For": "198.51.100.7"}); r.status != 429 {
		t.Errorf("client behind the proxy beyond its burst: got %d, want 429", r.status)
	}
	if r := do(t, "GET", srv.URL+"/ice-config", map[string]string{"X-Forwarded-For": "198.51.100.8"}); r.status != 200 {
		t.Errorf("another client behind the same proxy: got %d, want 200", r.status)
	}
}

func TestDraining(t *testing.T) {
	srv, svc := start(t, setup{})
	svc.Drain()
	for _, path := range []string{"/ice-config", "/turn-credentials?service=turn"} {
		r := do(t, "GET", srv.URL+path, nil)
		if r.status != 503 || r.header.Get("Retry-After") == "" || !isErrorBody(r.body, "unavailable") {
			t.Errorf("%s while draining: got %d (Retry-After %q) %s, want 503 with Retry-After", path, r.status, r.header.Get("Retry-After"), r.body)
		}
	}
}
