package credentials

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Identity is who a request comes from, as auth.mode establishes it.
type Identity struct {
	// User is the user part of issued TURN usernames: the JWT sub (made safe by SanitizeUser),
	// or "" when auth.mode establishes none (none, token): then the server chooses one.
	User string
	// Room, from a JWT room claim, is the only signaling room the client may join ("": any).
	Room string
}

// Authenticator checks tokens per auth.mode, for the credential endpoints and /ws. Set
// replaces the auth section in force (a configuration reload).
type Authenticator struct{ p atomic.Pointer[authState] }

type authState struct {
	mode   string
	tokens [][sha256.Size]byte
	jwtKey []byte
}

// NewAuthenticator builds an Authenticator from a validated AuthConfig.
func NewAuthenticator(c AuthConfig) *Authenticator {
	a := &Authenticator{}
	a.Set(c)
	return a
}

// Set puts a validated AuthConfig in force: every token checked from now on is checked by it.
func (a *Authenticator) Set(c AuthConfig) {
	st := &authState{mode: c.Mode, jwtKey: []byte(c.JWTSecret)}
	for _, t := range c.Tokens {
		st.tokens = append(st.tokens, sha256.Sum256([]byte(t)))
	}
	a.p.Store(st)
}

// Mode is the auth.mode in force.
func (a *Authenticator) Mode() string { return a.p.Load().mode }

// TokenFrom finds the token of r: Authorization: Bearer, else the ?token= parameter, else the
// first of the extra query parameters given (/turn-credentials takes ?key=).
func TokenFrom(r *http.Request, extra ...string) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	q := r.URL.Query()
	for _, name := range append([]string{"token"}, extra...) {
		if v := q.Get(name); v != "" {
			return v
		}
	}
	return ""
}

// Authenticate checks token per auth.mode.
func (a *Authenticator) Authenticate(token string) (Identity, error) {
	st := a.p.Load()
	switch st.mode {
	case AuthToken:
		if token == "" {
			return Identity{}, ErrMissingToken
		}
		// Hashes have one length, so the comparison time says nothing about the tokens, and
		// every configured token is compared.
		got := sha256.Sum256([]byte(token))
		match := 0
		for _, want := range st.tokens {
			match |= subtle.ConstantTimeCompare(got[:], want[:])
		}
		if match != 1 {
			return Identity{}, ErrInvalidToken
		}
		return Identity{}, nil
	case AuthJWT:
		if token == "" {
			return Identity{}, ErrMissingToken
		}
		return st.parseJWT(token)
	}
	return Identity{}, nil
}

// claims are the JWT claims icebox reads: sub, exp, and the optional room.
type claims struct {
	jwt.RegisteredClaims
	Room string `json:"room,omitempty"`
}

func (a *authState) parseJWT(token string) (Identity, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.jwtKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), // none, RS256, ... refused
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(5*time.Second),
	)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, fmt.Errorf("%w: %v", ErrTokenExpired, err)
	case err != nil:
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if c.Subject == "" {
		return Identity{}, ErrNoSubject
	}
	user, err := SanitizeUser(c.Subject)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: sub: %v", ErrInvalidToken, err)
	}
	return Identity{User: user, Room: c.Room}, nil
}

// maxUserLen bounds the user part of a TURN username (its USERNAME attribute must stay under
// 513 bytes).
const maxUserLen = 128

// SanitizeUser makes a user id safe as the USER part of a TURN username: every byte other than
// A-Z a-z 0-9 . _ ~ @ - is percent-encoded, so ':' (the EXPIRY separator) cannot be injected and
// distinct ids stay distinct.
func SanitizeUser(id string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '~', c == '@', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	if b.Len() > maxUserLen {
		return "", fmt.Errorf("user id of %d bytes is too long (at most %d once encoded)", len(id), maxUserLen)
	}
	return b.String(), nil
}

// RandomUser is an opaque user id for clients auth.mode does not name.
func RandomUser() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
