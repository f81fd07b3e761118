package credentials

import (
	"errors"
	"testing"
	"time"
)

// TestPasswordMatchesCoturn pins the scheme to the draft/coturn computation:
// base64(HMAC-SHA1(secret, username)). The expected value was computed independently with
// `printf %s 1795132800:alice | openssl dgst -sha1 -hmac north -binary | base64`.
func TestPasswordMatchesCoturn(t *testing.T) {
	if got, want := Password("north", "1795132800:alice"), "RBZNskvGBtXFK3r7VuH2AvAp4/8="; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestUsername(t *testing.T) {
	at := time.Unix(1795132800, 0)
	for _, tc := range []struct {
		user, want string
	}{{"alice", "1795132800:alice"}, {"", "1795132800"}} {
		if got := Username(at, tc.user); got != tc.want {
			t.Errorf("Username(%q): got %q, want %q", tc.user, got, tc.want)
		}
	}
}

func TestParseUsername(t *testing.T) {
	for _, tc := range []struct {
		in       string
		wantExp  int64
		wantUser string
		wantErr  bool
	}{
		{"1795132800:alice", 1795132800, "alice", false},
		{"1795132800", 1795132800, "", false},
		{"1795132800:", 1795132800, "", false},
		{"1795132800:a:b", 1795132800, "a:b", false},
		{"alice", 0, "", true},
		{"", 0, "", true},
		{":alice", 0, "", true},
		{"-5:alice", 0, "", true},
		{"12e3:alice", 0, "", true},
		{"99999999999999999999:x", 0, "", true},
	} {
		exp, user, err := ParseUsername(tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrBadUsername) {
				t.Errorf("ParseUsername(%q): got %v, want ErrBadUsername", tc.in, err)
			}
			continue
		}
		if err != nil || exp.Unix() != tc.wantExp || user != tc.wantUser {
			t.Errorf("ParseUsername(%q): got %v %q %v, want %d %q", tc.in, exp.Unix(), user, err, tc.wantExp, tc.wantUser)
		}
	}
}

func TestQuotaUser(t *testing.T) {
	for in, want := range map[string]string{"1795132800:alice": "alice", "1795132800": "1795132800", "1795132800:": "1795132800:", "x": "x"} {
		if got := QuotaUser(in); got != want {
			t.Errorf("QuotaUser(%q): got %q, want %q", in, got, want)
		}
	}
}

func TestSecretsRotation(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := NewSecrets([]string{"new", "old"})
	c := s.Mint("bob", time.Hour, now)
	if c.Username != "1800003600:bob" || c.Password != Password("new", c.Username) || !c.Expires.Equal(now.Add(time.Hour)) {
		t.Errorf("got %+v, want the first secret to sign for an hour", c)
	}
	oldCred := Password("old", c.Username)
	if !s.Verify(c.Username, c.Password) || !s.Verify(c.Username, oldCred) {
		t.Errorf("a password of a listed secret does not verify")
	}
	if s.Verify(c.Username, Password("other", c.Username)) || s.Verify("1800003600:eve", c.Password) {
		t.Errorf("a password of another secret or username verifies")
	}
	s.Set([]string{"new"})
	if s.Verify(c.Username, oldCred) {
		t.Errorf("the removed secret still verifies")
	}
}

func TestRandomSecret(t *testing.T) {
	a, b := RandomSecret(), RandomSecret()
	if len(a) != 64 || a == b {
		t.Errorf("got %q and %q, want two different 32-byte hex secrets", a, b)
	}
}
