package credentials

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestSanitizeUser(t *testing.T) {
	for in, want := range map[string]string{
		"alice":             "alice",
		"alice@example.com": "alice@example.com",
		"a.b_c~d-e":         "a.b_c~d-e",
		"1795132800:admin":  "1795132800%3Aadmin",
		"50%":               "50%25",
		"jörg":              "j%C3%B6rg",
		"a b/c":             "a%20b%2Fc",
		"":                  "",
	} {
		got, err := SanitizeUser(in)
		if err != nil || got != want {
			t.Errorf("SanitizeUser(%q): got %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := SanitizeUser(strings.Repeat(":", 50)); err == nil {
		t.Errorf("a user id of 150 bytes once encoded: got no error")
	}
}

func TestTokenFrom(t *testing.T) {
	for _, tc := range []struct {
		header, query, want string
	}{
		{"Bearer abc", "token=q", "abc"},
		{"bearer  abc ", "", "abc"},
		{"Basic abc", "token=q", "q"},
		{"", "token=q&key=k", "q"},
		{"", "key=k", "k"},
		{"", "", ""},
	} {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{RawQuery: tc.query}}
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		if got := TokenFrom(r, "key"); got != tc.want {
			t.Errorf("TokenFrom(%q, ?%s): got %q, want %q", tc.header, tc.query, got, tc.want)
		}
	}
}
