package edge

import (
	"net/http"
	"strings"
)

// Redirect answers every request with a permanent redirect (308, which keeps the method) to
// the same path and query on base, e.g. https://turn.example.com: what plain HTTP on the edge
// port, or on port 80, gets, so that a browser sent to http:// lands on the secure page.
func Redirect(base string) http.Handler {
	base = strings.TrimRight(base, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The path only: a request in absolute form (GET http://elsewhere/ HTTP/1.1) does not
		// choose where it is sent.
		target := base + r.URL.EscapedPath()
		if !strings.HasPrefix(r.URL.EscapedPath(), "/") {
			target = base + "/"
		}
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		w.Header().Set("Connection", "close")
		http.Redirect(w, r, target, http.StatusPermanentRedirect) //nolint:gosec // to base, icebox's own origin: the request chooses only the path
	})
}
