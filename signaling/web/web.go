// Package web is icebox's browser side, embedded in the binary: the SDK at /sdk/icebox.js (an
// ES module, no build step; static/sdk/ is also its npm package folder) with its types at
// /sdk/icebox.d.ts, and the demo call page at /.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"path"
	"time"
)

//go:embed static
var static embed.FS

// asset is one embedded file with its headers.
type asset struct {
	body        []byte
	contentType string
	etag        string
	cors        bool   // loadable from any origin (the SDK module)
	types       string // X-TypeScript-Types: where the module's declarations are
}

func load(name, contentType string, cors bool) asset {
	b, err := static.ReadFile(path.Join("static", name))
	if err != nil {
		panic(err) // embedded at build time: missing means a broken build
	}
	sum := sha256.Sum256(b)
	return asset{body: b, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, cors: cors}
}

// demoCSP keeps the demo page to its own scripts and styles; media comes from the camera and
// the peers, signaling from this origin.
const demoCSP = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; " +
	"media-src 'self' blob: mediastream:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"

// Register adds GET / (the demo page), /demo/... (its script, style and icon), /sdk/icebox.js
// and its TypeScript declarations, /sdk/icebox.d.ts.
func Register(mux *http.ServeMux) {
	serve := func(a asset) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Type", a.contentType)
			h.Set("ETag", a.etag)
			h.Set("Cache-Control", "no-cache") // revalidate: the binary may have been upgraded
			h.Set("X-Content-Type-Options", "nosniff")
			if a.types != "" {
				h.Set("X-TypeScript-Types", a.types)
			}
			if a.cors {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Content-Security-Policy", demoCSP)
				h.Set("Referrer-Policy", "no-referrer")
			}
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
		}
	}
	mux.Handle("GET /{$}", serve(load("index.html", "text/html; charset=utf-8", false)))
	mux.Handle("GET /demo/demo.js", serve(load("demo.js", "text/javascript; charset=utf-8", false)))
	mux.Handle("GET /demo/demo.css", serve(load("demo.css", "text/css; charset=utf-8", false)))
	mux.Handle("GET /demo/icon.svg", serve(load("icon.svg", "image/svg+xml", false)))
	sdk := load("sdk/icebox.js", "text/javascript; charset=utf-8", true)
	sdk.types = "/sdk/icebox.d.ts"
	mux.Handle("GET /sdk/icebox.js", serve(sdk))
	mux.Handle("GET /sdk/icebox.d.ts", serve(load("sdk/icebox.d.ts", "application/typescript; charset=utf-8", true)))
}
