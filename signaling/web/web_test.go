package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/icebox-rtc/icebox/signaling/web"
)

func TestAssets(t *testing.T) {
	mux := http.NewServeMux()
	web.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, tc := range []struct {
		path, contentType, contains string
		cors                        bool
	}{
		{"/", "text/html; charset=utf-8", `src="/demo/demo.js"`, false},
		{"/demo/demo.js", "text/javascript; charset=utf-8", "from '/sdk/icebox.js'", false},
		{"/demo/demo.css", "text/css; charset=utf-8", ".grid", false},
		{"/demo/icon.svg", "image/svg+xml", "<svg", false},
		{"/sdk/icebox.js", "text/javascript; charset=utf-8", "export async function join", true},
		{"/sdk/icebox.d.ts", "application/typescript; charset=utf-8", "export function join(url: string, options: JoinOptions): Promise<Call>;", true},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.contentType || !strings.Contains(string(body), tc.contains) {
			t.Errorf("%s: got %d %q, want %s containing %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.contentType, tc.contains)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin") == "*"; got != tc.cors {
			t.Errorf("%s: cross-origin: got %v, want %v", tc.path, got, tc.cors)
		}
		if tc.path == "/sdk/icebox.js" && resp.Header.Get("X-TypeScript-Types") != "/sdk/icebox.d.ts" {
			t.Errorf("%s: X-TypeScript-Types %q, want /sdk/icebox.d.ts", tc.path, resp.Header.Get("X-TypeScript-Types"))
		}
		if !tc.cors && resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: no Content-Security-Policy", tc.path)
		}
		// Revalidation answers 304.
		req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
		req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
		again, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		again.Body.Close()
		if again.StatusCode != http.StatusNotModified {
			t.Errorf("%s with its ETag: got %d, want 304", tc.path, again.StatusCode)
		}
	}
	if resp, err := http.Get(srv.URL + "/demo/nope.js"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("an unknown asset: got %d", resp.StatusCode)
		}
	}
}
