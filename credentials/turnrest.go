package credentials

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what draft-uberti-behave-turn-rest-00 and coturn use
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Credential is one TURN REST credential: username EXPIRY[:USER] and its password.
type Credential struct {
	Username string
	Password string
	Expires  time.Time
}

// Password is the TURN REST password of username under secret:
// base64(HMAC-SHA1(secret, username)), as coturn's use-auth-secret computes it.
func Password(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Username is the TURN REST username for user expiring at expires: "EXPIRY:USER", or "EXPIRY"
// when user is empty. EXPIRY is in Unix seconds.
func Username(expires time.Time, user string) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	if user == "" {
		return exp
	}
	return exp + ":" + user
}

// ParseUsername splits a TURN REST username into its expiry and user part. The user part is
// everything after the first ':' ("" when there is none).
func ParseUsername(username string) (expires time.Time, user string, err error) {
	exp, user, _ := strings.Cut(username, ":")
	if exp == "" || len(exp) > 12 || strings.Trim(exp, "0123456789") != "" {
		return time.Time{}, "", fmt.Errorf("%w: %q does not start with a Unix expiry time", ErrBadUsername, username)
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: %q: %v", ErrBadUsername, username, err)
	}
	return time.Unix(secs, 0), user, nil
}

// QuotaUser is who a TURN username counts against for turn.user_quota: its USER part, or the
// whole username when it has none.
func QuotaUser(username string) string {
	if _, user, found := strings.Cut(username, ":"); found && user != "" {
		return user
	}
	return username
}

// Secrets are the TURN REST shared secrets: the first signs, every one verifies. The list can
// be replaced while icebox runs (rotation), and is safe for concurrent use.
type Secrets struct {
	list atomic.Pointer[[]string]
}

// NewSecrets holds list, which must not be empty (see RandomSecret).
func NewSecrets(list []string) *Secrets {
	s := &Secrets{}
	s.Set(list)
	return s
}

// Set replaces the secrets, e.g. after a rotation.
func (s *Secrets) Set(list []string) {
	cp := append([]string(nil), list...)
	s.list.Store(&cp)
}

// Mint issues a credential for user valid for ttl from now, signed with the first secret.
func (s *Secrets) Mint(user string, ttl time.Duration, now time.Time) Credential {
	expires := now.Add(ttl).Truncate(time.Second)
	name := Username(expires, user)
	return Credential{Username: name, Password: Password((*s.list.Load())[0], name), Expires: expires}
}

// Passwords yields the password of username under each secret, first secret first, until yield
// returns false. The TURN server checks a request's MESSAGE-INTEGRITY against each.
func (s *Secrets) Passwords(username string, yield func(password string) bool) {
	for _, secret := range *s.list.Load() {
		if !yield(Password(secret, username)) {
			return
		}
	}
}

// Verify reports whether password belongs to username under any of the secrets.
func (s *Secrets) Verify(username, password string) bool {
	ok := false
	s.Passwords(username, func(p string) bool {
		ok = hmac.Equal([]byte(p), []byte(password))
		return !ok
	})
	return ok
}

// RandomSecret returns a fresh 32-byte secret, hex-encoded, for when none is configured.
func RandomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}
