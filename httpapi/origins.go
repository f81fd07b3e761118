package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Origins is the http.allowed_origins policy for browsers calling icebox from a page.
// The zero value allows same-origin requests only.
type Origins struct {
	any      bool
	exact    map[string]bool
	suffixes []originSuffix // "https://*.example.com" entries
}

type originSuffix struct{ scheme, hostSuffix, port string }

// ParseOrigins checks http.allowed_origins entries: "*" (any origin), an origin such as
// "https://app.example.com" or "http://localhost:3000", or a wildcard subdomain such as
// "https://*.example.com". Comparison is case-insensitive.
func ParseOrigins(list []string) (Origins, error) {
	o := Origins{exact: map[string]bool{}}
	for _, raw := range list {
		s := strings.ToLower(strings.TrimSpace(raw))
		if s == "*" {
			o.any = true
			continue
		}
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return Origins{}, fmt.Errorf("%q is not an origin (scheme://host[:port], e.g. https://app.example.com, or \"*\")", raw)
		}
		host, port := u.Hostname(), u.Port()
		if rest, ok := strings.CutPrefix(host, "*."); ok {
			if rest == "" || strings.Contains(rest, "*") {
				return Origins{}, fmt.Errorf("%q: a wildcard must be a whole leading label, as in https://*.example.com", raw)
			}
			o.suffixes = append(o.suffixes, originSuffix{scheme: u.Scheme, hostSuffix: "." + rest, port: port})
			continue
		}
		if strings.Contains(host, "*") {
			return Origins{}, fmt.Errorf("%q: a wildcard must be a whole leading label, as in https://*.example.com", raw)
		}
		o.exact[u.Scheme+"://"+u.Host] = true
	}
	return o, nil
}

// Allowed reports whether a request carrying the Origin header origin may proceed.
// host is the request's Host header, used for the same-origin case.
func (o Origins) Allowed(origin, host string) bool {
	if origin == "" {
		return true // not a browser cross-origin request
	}
	if o.any {
		return true
	}
	origin = strings.ToLower(origin)
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	if o.exact[u.Scheme+"://"+u.Host] {
		return true
	}
	for _, s := range o.suffixes {
		if u.Scheme == s.scheme && u.Port() == s.port && strings.HasSuffix(u.Hostname(), s.hostSuffix) {
			return true
		}
	}
	return false
}

// Refuse is the 403 for a request whose Origin header the policy does not allow, else nil.
func (o Origins) Refuse(r *http.Request) *Error {
	origin := r.Header.Get("Origin")
	if o.Allowed(origin, r.Host) {
		return nil
	}
	return &Error{Status: http.StatusForbidden, Code: CodeForbidden, Message: "origin " + origin + " is not allowed (http.allowed_origins)"}
}

// CORS applies the policy to a request of a JSON endpoint: a forbidden Origin is refused
// (403); an allowed cross-origin request gets its CORS headers, a preflight the methods and
// headers it may use.
func (o Origins) CORS(w http.ResponseWriter, r *http.Request) *Error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	if e := o.Refuse(r); e != nil {
		return e
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		h.Set("Access-Control-Max-Age", "600")
	}
	return nil
}
