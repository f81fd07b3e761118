// Package httpapitest calls icebox's HTTP endpoints in tests: a GET with its status and body,
// and a wait for an endpoint to answer a status (/readyz during a start or a drain).
package httpapitest

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// Get fetches url and returns the status and body.
func Get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, string(body)
}

// WaitStatus polls url until it answers want, for at most within, and returns the body.
func WaitStatus(t testing.TB, c *http.Client, url string, want int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == want {
				return string(body)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d within %v (last: %v)", url, want, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
