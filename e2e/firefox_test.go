package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// firefoxPrefs make headless Firefox ESR a test browser: fake camera and microphone without a
// permission prompt, TURN on 127.0.0.1 allowed (Firefox ignores loopback candidates and
// servers otherwise), autoplay, and no traffic of its own: every http(s) request that is not
// for loopback goes to a proxy on a port where nothing listens, and its background services are off.
var firefoxPrefs = map[string]any{
	"media.navigator.streams.fake":               true,
	"media.navigator.permission.disabled":        true,
	"media.peerconnection.ice.loopback":          true,
	"media.autoplay.default":                     0,
	"media.autoplay.blocking_policy":             0,
	"network.proxy.type":                         1,
	"network.proxy.http":                         "127.0.0.1",
	"network.proxy.http_port":                    9,
	"network.proxy.ssl":                          "127.0.0.1",
	"network.proxy.ssl_port":                     9,
	"network.proxy.no_proxies_on":                "localhost, 127.0.0.1",
	"network.proxy.allow_hijacking_localhost":    false,
	"network.captive-portal-service.enabled":     false,
	"network.connectivity-service.enabled":       false,
	"network.dns.disablePrefetch":                true,
	"network.prefetch-next":                      false,
	"app.update.disabledForTesting":              true,
	"app.normandy.enabled":                       false,
	"browser.safebrowsing.malware.enabled":       false,
	"browser.safebrowsing.phishing.enabled":      false,
	"browser.safebrowsing.downloads.enabled":     false,
	"browser.shell.checkDefaultBrowser":          false,
	"browser.startup.homepage_override.mstone":   "ignore",
	"browser.newtabpage.enabled":                 false,
	"browser.aboutwelcome.enabled":               false,
	"datareporting.policy.dataSubmissionEnabled": false,
	"datareporting.healthreport.uploadEnabled":   false,
	"toolkit.telemetry.enabled":                  false,
	"toolkit.telemetry.reportingpolicy.firstRun": false,
	"extensions.update.enabled":                  false,
	"extensions.getAddons.cache.enabled":         false,
	"media.gmp-manager.updateEnabled":            false,
	"remote.prefs.recommended":                   true,
}

// firefox is headless Firefox ESR (Debian's firefox-esr, installed by make test) driven over
// WebDriver BiDi, the standard protocol its remote agent speaks, with a gorilla WebSocket.
type firefox struct {
	t  *testing.T
	ws *websocket.Conn

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  int
	pending map[int]chan bidiReply // guarded by mu
}

type bidiReply struct {
	Type    string          `json:"type"`
	ID      int             `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
}

// newFirefox starts Firefox with a fresh profile and opens a BiDi session to it.
func newFirefox(t *testing.T) *firefox {
	t.Helper()
	var path string
	for _, name := range []string{"firefox-esr", "firefox"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		turntest.SkipOrFail(t, "firefox-esr is not installed (make test installs it)")
	}
	profile := t.TempDir()
	var prefs strings.Builder
	for k, v := range firefoxPrefs {
		b, _ := json.Marshal(v)
		fmt.Fprintf(&prefs, "user_pref(%q, %s);\n", k, b)
	}
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(prefs.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, path, "--headless", "--no-remote", "--remote-debugging-port=0", "--profile", profile, "about:blank") //nolint:gosec // the test's own browser
	cmd.Env = append(os.Environ(), "MOZ_HEADLESS=1", "HOME="+profile)
	log, err := os.Create(filepath.Join(profile, "firefox.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting firefox: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		log.Close()
	})
	// The remote agent writes where it listens into the profile once it does.
	var server struct {
		Host string `json:"ws_host"`
		Port int    `json:"ws_port"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(profile, "WebDriverBiDiServer.json"))
		if err == nil && json.Unmarshal(b, &server) == nil && server.Port != 0 {
			break
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("firefox did not start its WebDriver BiDi server: %s", out)
		}
		time.Sleep(100 * time.Millisecond) // polling a file with a deadline
	}
	ws, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s:%d/session", server.Host, server.Port), nil)
	if err != nil {
		t.Fatalf("connecting to firefox: %v", err)
	}
	f := &firefox{t: t, ws: ws, pending: map[int]chan bidiReply{}}
	go f.read()
	t.Cleanup(func() { ws.Close() })
	if _, err := f.call("session.new", map[string]any{"capabilities": map[string]any{}}); err != nil {
		t.Fatalf("firefox session: %v", err)
	}
	return f
}

// read hands every reply to the call waiting for it; events are not used.
func (f *firefox) read() {
	for {
		var r bidiReply
		if err := f.ws.ReadJSON(&r); err != nil {
			f.mu.Lock()
			for id, ch := range f.pending {
				ch <- bidiReply{Type: "error", Error: "connection closed", Message: err.Error()}
				delete(f.pending, id)
			}
			f.mu.Unlock()
			return
		}
		if r.Type != "success" && r.Type != "error" {
			continue
		}
		f.mu.Lock()
		ch := f.pending[r.ID]
		delete(f.pending, r.ID)
		f.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// call sends one BiDi command and waits (at most a minute) for its result.
func (f *firefox) call(method string, params any) (json.RawMessage, error) {
	f.mu.Lock()
	f.nextID++
	id := f.nextID
	ch := make(chan bidiReply, 1)
	f.pending[id] = ch
	f.mu.Unlock()
	f.wmu.Lock()
	err := f.ws.WriteJSON(map[string]any{"id": id, "method": method, "params": params})
	f.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.Type == "error" {
			return nil, fmt.Errorf("%s: %s: %s", method, r.Error, r.Message)
		}
		return r.Result, nil
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("%s: no answer from firefox within a minute", method)
	}
}

// ffTab is one tab of Firefox.
type ffTab struct {
	f       *firefox
	context string
}

// open opens url in a new tab and waits for it to load.
func (f *firefox) open(url string) *ffTab {
	f.t.Helper()
	res, err := f.call("browsingContext.create", map[string]any{"type": "tab"})
	if err != nil {
		f.t.Fatal(err)
	}
	var c struct {
		Context string `json:"context"`
	}
	if err := json.Unmarshal(res, &c); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.call("browsingContext.navigate", map[string]any{"context": c.Context, "url": url, "wait": "complete"}); err != nil {
		f.t.Fatalf("open %s in firefox: %v", url, err)
	}
	return &ffTab{f: f, context: c.Context}
}

// page is a tab of either browser, for the tests that drive both.
type page interface {
	// evalJSON evaluates a JavaScript expression (awaiting a promise) and returns its value as JSON.
	evalJSON(expr string) ([]byte, error)
	browser() string
}

func (p *ffTab) browser() string { return "firefox" }
func (tb *tab) browser() string  { return "chromium" }

func (p *ffTab) evalJSON(expr string) ([]byte, error) {
	res, err := p.f.call("script.evaluate", map[string]any{
		"expression":   `(async () => JSON.stringify(await (` + expr + `)))()`,
		"target":       map[string]any{"context": p.context},
		"awaitPromise": true,
	})
	if err != nil {
		return nil, err
	}
	var r struct {
		Type   string `json:"type"`
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return nil, err
	}
	if r.Type != "success" {
		return nil, errors.New(r.ExceptionDetails.Text)
	}
	return []byte(r.Result.Value), nil
}

func (tb *tab) evalJSON(expr string) ([]byte, error) {
	s, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`(async () => JSON.stringify(await (`+expr+`)))()`, chromedp.EvalAwaitPromise))
	return []byte(s), err
}

// evalOn evaluates expr on p and decodes its value.
func evalOn[T any](t *testing.T, p page, expr string) T {
	t.Helper()
	var v T
	b, err := p.evalJSON(expr)
	if err == nil {
		err = json.Unmarshal(b, &v)
	}
	if err != nil {
		t.Fatalf("%s: evaluating %.100s: %v", p.browser(), expr, err)
	}
	return v
}

// waitOn polls a JavaScript condition on p until it is truthy, for at most 90 s.
func waitOn(t *testing.T, p page, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, err := p.evalJSON(`(async () => !!(await (` + cond + `)))()`)
		if err == nil && string(b) == "true" {
			return
		}
		if time.Now().After(deadline) {
			state, _ := p.evalJSON(jsState)
			t.Fatalf("%s: waiting for %s: %v (last %s)\npage: %s", p.browser(), what, err, b, state)
		}
		time.Sleep(200 * time.Millisecond) // polling a condition with a deadline
	}
}
