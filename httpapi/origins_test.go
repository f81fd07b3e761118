package httpapi

import "testing"

func TestOrigins(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allowed []string
		origin  string
		host    string
		want    bool
	}{
		{"no Origin header", nil, "", "icebox.example.com", true},
		{"same origin", nil, "https://icebox.example.com", "icebox.example.com", true},
		{"same origin with port", nil, "http://127.0.0.1:8080", "127.0.0.1:8080", true},
		{"other origin, empty list", nil, "https://evil.example", "icebox.example.com", false},
		{"listed", []string{"https://app.example.com"}, "https://app.example.com", "icebox.example.com", true},
		{"listed, case-insensitive", []string{"https://App.Example.com"}, "https://app.example.COM", "icebox.example.com", true},
		{"listed with trailing slash", []string{"https://app.example.com/"}, "https://app.example.com", "x", true},
		{"other scheme", []string{"https://app.example.com"}, "http://app.example.com", "x", false},
		{"other port", []string{"http://localhost:3000"}, "http://localhost:3001", "x", false},
		{"suffix is not a subdomain", []string{"https://example.com"}, "https://evilexample.com", "x", false},
		{"wildcard subdomain", []string{"https://*.example.com"}, "https://a.b.example.com", "x", true},
		{"wildcard needs a subdomain", []string{"https://*.example.com"}, "https://example.com", "x", false},
		{"wildcard is not a suffix match", []string{"https://*.example.com"}, "https://evilexample.com", "x", false},
		{"any", []string{"*"}, "https://whatever.example", "x", true},
		{"null origin", []string{"https://app.example.com"}, "null", "x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOrigins(tc.allowed)
			if err != nil {
				t.Fatal(err)
			}
			if got := o.Allowed(tc.origin, tc.host); got != tc.want {
				t.Errorf("Allowed(%q, %q) with %v: got %v, want %v", tc.origin, tc.host, tc.allowed, got, tc.want)
			}
		})
	}
}

func TestParseOriginsRefuses(t *testing.T) {
	for _, bad := range []string{"example.com", "https://", "https://a.example.com/path", "https://a.example.com?x=1",
		"https://user@a.example.com", "https://a.*.example.com", "https://*.", "*.example.com"} {
		if _, err := ParseOrigins([]string{bad}); err == nil {
			t.Errorf("ParseOrigins(%q): got no error", bad)
		}
	}
}
