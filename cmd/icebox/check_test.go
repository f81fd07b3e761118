package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

func runCheck(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	code := execute(append([]string{"check", "--timeout", "3s"}, args...), &stdout, &stderr)
	return code, stdout.String() + stderr.String()
}

func TestCheckPasses(t *testing.T) {
	cfg := testConfig()
	cfg.TURN.TLSListen = "127.0.0.1:0"
	cfg.HTTP.TLSCert, cfg.HTTP.TLSKey = turntest.CertificateFiles(t)
	a, _, _ := startApp(t, cfg)
	code, out := runCheck(t, "--insecure", "https://"+a.http.addr().String())
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"ok    ice-config", "ok    stun:127.0.0.1:", "mapped address 127.0.0.1:",
		"?transport=udp", "?transport=tcp", "ok    turns:127.0.0.1:", "ok    relay data", "ok    signaling"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAIL") {
		t.Errorf("a check failed:\n%s", out)
	}
	// Without --insecure the self-signed certificate is refused, by every TLS check.
	if code, out := runCheck(t, "https://"+a.http.addr().String()); code != 1 || !strings.Contains(out, "FAIL  ice-config") {
		t.Errorf("self-signed without --insecure: exit %d:\n%s", code, out)
	}
}

func TestCheckWithToken(t *testing.T) {
	cfg := testConfig()
	cfg.Auth = credentials.AuthConfig{Mode: "token", Tokens: []string{"check-key"}}
	a, _, _ := startApp(t, cfg)
	base := "http://" + a.http.addr().String()
	if code, out := runCheck(t, "--token", "check-key", base); code != 0 {
		t.Errorf("with the token: exit %d:\n%s", code, out)
	}
	code, out := runCheck(t, "--token", "wrong", base)
	if code != 1 || !strings.Contains(out, "FAIL  ice-config") || !strings.Contains(out, "401 unauthorized") ||
		!strings.Contains(out, "FAIL  signaling") || !strings.Contains(out, "failed: ice-config, signaling") {
		t.Errorf("with a wrong token: exit %d:\n%s", code, out)
	}
}

func TestCheckStoppedIcebox(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, out := runCheck(t, "http://"+addr)
	if code != 1 || !strings.Contains(out, "FAIL  ice-config") || !strings.Contains(out, "FAIL  signaling") {
		t.Errorf("against nothing: exit %d:\n%s", code, out)
	}
	if code, out := runCheck(t, "ftp://example"); code != 2 {
		t.Errorf("a bad URL: exit %d, want 2:\n%s", code, out)
	}
}

// TestCheckDeadTURNListener: a TURN listener that /ice-config advertises but that does not
// answer is named.
func TestCheckDeadTURNListener(t *testing.T) {
	a, _, _ := startApp(t, testConfig())
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURI := "turn:" + dead.Addr().String() + "?transport=tcp"
	dead.Close()
	target, _ := url.Parse("http://" + a.http.addr().String())
	proxy := httputil.NewSingleHostReverseProxy(target)
	// The icebox as seen through a front that advertises one listener too many.
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ice-config" {
			proxy.ServeHTTP(w, r)
			return
		}
		resp, err := http.Get(target.String() + "/ice-config")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		body = []byte(strings.Replace(string(body), `?transport=tcp"`, `?transport=tcp","`+deadURI+`"`, 1))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer front.Close()
	code, out := runCheck(t, front.URL)
	if code != 1 || !strings.Contains(out, "FAIL  "+deadURI) || !strings.Contains(out, "1 check(s) failed: "+deadURI) {
		t.Errorf("exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "ok    relay data") || !strings.Contains(out, "ok    signaling") {
		t.Errorf("the other checks should pass:\n%s", out)
	}
}
