package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// sdkPage is an app's page on its own origin that imports the SDK from icebox at ?sdk=URL, as a
// new user's app would. window.tryJoin(key, url, options) joins and keeps the call in
// window.calls[key] (its messages, undelivered sends and connection states in window.got[key]),
// and settles with {ok} or the error's {code, message, iceboxError}; never later than 60 s, so a
// join that hangs fails the test with 'never settled' instead of hanging it.
const sdkPage = `<!doctype html><html><head><meta charset="utf-8"></head><body><script type="module">
const sdk = await import(new URLSearchParams(location.search).get('sdk') + '/sdk/icebox.js');
window.calls = {};
window.got = {};
const watch = (key, call) => {
	const got = window.got[key] = {messages: [], undelivered: [], failed: [], states: []};
	call.addEventListener('message', (e) => got.messages.push(e.detail.data));
	call.addEventListener('undelivered', (e) => got.undelivered.push(e.detail.reason));
	call.addEventListener('state', (e) => got.states.push(e.detail.state));
	call.addEventListener('connection-state', (e) => { if (e.detail.state === 'failed') got.failed.push(e.detail); });
};
window.tryJoin = (key, url, options) => Promise.race([
	sdk.join(url, options).then((call) => { window.calls[key] = call; watch(key, call); return {ok: true}; },
		(e) => ({ok: false, code: e.code, message: e.message, iceboxError: e instanceof sdk.IceboxError})),
	new Promise((resolve) => setTimeout(() => resolve({ok: false, code: 'never settled'}), 60000)),
]);
window.sdkLoaded = true;
</script></body></html>`

// joinResult is what window.tryJoin settles with.
type joinResult struct {
	OK          bool   `json:"ok"`
	Code        string `json:"code"`
	Message     string `json:"message"`
	IceboxError bool   `json:"iceboxError"`
}

// pageServer serves sdkPage on a loopback origin of its own; its origin is known before any
// icebox starts, so an icebox can allow it.
func pageServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, sdkPage)
	}))
	return s, "http://" + s.Listener.Addr().String()
}

// openSDKPage opens the page with the SDK of the icebox at sdkFrom.
func openSDKPage(t *testing.T, browser context.Context, page *httptest.Server, sdkFrom string) *tab {
	t.Helper()
	tb := openTab(t, browser, page.URL+"/?sdk="+sdkFrom)
	tb.wait("the SDK to load", `window.sdkLoaded === true`)
	return tb
}

// tryJoin joins from tb and returns how join() settled.
func (tb *tab) tryJoin(key, url, options string) joinResult {
	tb.t.Helper()
	return eval[joinResult](tb, fmt.Sprintf(`window.tryJoin(%q, %q, %s)`, key, url, options))
}

// deadURL is an http URL on loopback where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// TestSDKJoinErrors: from an app on its own origin, join() rejects with an IceboxError whose
// code says why, for each way a join fails; and it resolves when nothing is wrong.
func TestSDKJoinErrors(t *testing.T) {
	browser := newBrowser(t)
	page, origin := pageServer(t)
	open := demoApp(t, settings{"http.allowed_origins": origin, "auth.mode": "token", "auth.tokens": "t0ken", "signaling.max_room_size": "2"})
	closed := demoApp(t, nil) // same origin only
	// The drain phase of a shutdown, long enough for the test: a node going away.
	draining := startIcebox(t, loopback().with(settings{"http.allowed_origins": origin, "shutdown.drain": "5m"}))
	draining.drain(t)
	page.Start()
	t.Cleanup(page.Close)

	tb := openSDKPage(t, browser, page, open)
	for _, tc := range []struct {
		name, url, options, code string
	}{
		{"origin not allowed", closed, `{room: 'r'}`, "forbidden-origin"},
		{"nothing listening", deadURL(t), `{room: 'r', timeout: 3000}`, "unreachable"},
		{"no token", open, `{room: 'r'}`, "unauthorized"},
		{"wrong token", open, `{room: 'r', token: 'wrong'}`, "unauthorized"},
		{"bad room name", open, `{room: 'no spaces', token: 't0ken'}`, "bad-room"},
		{"draining node", draining.url, `{room: 'r', timeout: 3000}`, "unavailable"},
		{"bad option", open, `{room: 'r', timeout: -1}`, "bad-option"},
	} {
		got := tb.tryJoin("x", tc.url, tc.options)
		if got.OK || got.Code != tc.code || !got.IceboxError || got.Message == "" {
			t.Errorf("%s: got %+v, want an IceboxError with code %s", tc.name, got, tc.code)
		}
	}
	if got := tb.tryJoin("first", open, `{room: 'r', token: 't0ken'}`); !got.OK {
		t.Fatalf("a valid join: %+v", got)
	}
	if got := tb.tryJoin("second", open, `{room: 'r', token: 't0ken'}`); !got.OK {
		t.Fatalf("a valid join: %+v", got)
	}
	if got := tb.tryJoin("third", open, `{room: 'r', token: 't0ken'}`); got.OK || got.Code != "room-full" {
		t.Errorf("a join into a full room: got %+v, want room-full", got)
	}
	if state := eval[string](tb, `window.calls.first.state`); state != "connected" {
		t.Errorf("the first call is %q, want connected", state)
	}

	// leave() stops the tracks the SDK acquired, not those the app passed in.
	tracks := eval[map[string]string](tb, fmt.Sprintf(`(async () => {
		window.calls.first.leave();
		window.calls.second.leave();
		const own = await navigator.mediaDevices.getUserMedia({video: true});
		const r = await window.tryJoin('mixed', %q, {room: 'mixed', token: 't0ken', stream: own, audio: true});
		if (!r.ok) return {error: r.code};
		const call = window.calls.mixed;
		const mic = call.stream.getAudioTracks()[0];
		call.leave();
		return {camera: own.getVideoTracks()[0].readyState, mic: mic.readyState, state: call.state};
	})()`, open))
	if want := map[string]string{"camera": "live", "mic": "ended", "state": "left"}; fmt.Sprint(tracks) != fmt.Sprint(want) {
		t.Errorf("after leave(): got %v, want %v (the app's camera live, the SDK's microphone stopped)", tracks, want)
	}
}

// TestSDKSendAndICEFailure: a message sent before the data channel opens arrives once it
// does; with relay-only and the TURN quota full, connections never come up: both sides get a
// connection-state failed with a reason, restart ICE, and messages that cannot wait longer are
// given back as undelivered.
func TestSDKSendAndICEFailure(t *testing.T) {
	browser := newBrowser(t)
	page, origin := pageServer(t)
	ok := demoApp(t, settings{"http.allowed_origins": origin})
	// One relay address for two browsers: relay-only cannot connect. TURN on UDP alone, so
	// each side tries one allocation and the first to ask takes the address (with TCP too,
	// each could take one of two transports and hold a relay address).
	starved := demoApp(t, settings{"http.allowed_origins": origin, "turn.total_quota": "1", "turn.tcp_listen": ""})
	page.Start()
	t.Cleanup(page.Close)
	a := openSDKPage(t, browser, page, ok)
	b := openSDKPage(t, browser, page, ok)

	if got := a.tryJoin("a", ok, `{room: 'early', relayOnly: true}`); !got.OK {
		t.Fatalf("join: %+v", got)
	}
	sent := eval[map[string]any](b, fmt.Sprintf(`(async () => {
		const r = await window.tryJoin('b', %q, {room: 'early', relayOnly: true});
		const call = window.calls.b;
		const channels = [...call.peers.values()].map((p) => p.channel ? p.channel.readyState : 'none');
		return {r, channels, n: call.send({text: 'sent before the channel opened'})};
	})()`, ok))
	t.Logf("send right after join: %v", sent)
	if n, _ := sent["n"].(float64); n != 1 {
		t.Errorf("send() counted %v peers, want 1 (queued)", sent["n"])
	}
	if fmt.Sprint(sent["channels"]) == "[open]" {
		t.Errorf("the channel was open already: the test did not send early")
	}
	a.wait("the early message", `window.got.a.messages.some((m) => m.text === 'sent before the channel opened')`)

	// Relay-only against a TURN server whose quota is full.
	if got := a.tryJoin("fa", starved, `{room: 'starved', relayOnly: true, iceTimeout: 3000}`); !got.OK {
		t.Fatalf("join: %+v", got)
	}
	if got := b.tryJoin("fb", starved, `{room: 'starved', relayOnly: true, iceTimeout: 3000}`); !got.OK {
		t.Fatalf("join: %+v", got)
	}
	for _, tb := range []*tab{a, b} {
		key := map[*tab]string{a: "fa", b: "fb"}[tb]
		tb.wait("a failed connection, restarted", fmt.Sprintf(`window.got.%s.failed.length >= 2 && [...window.calls.%s.peers.values()].every((p) => p.restarts >= 2)`, key, key))
		failed := eval[[]map[string]string](tb, fmt.Sprintf(`window.got.%s.failed`, key))
		if f := failed[0]; f["reason"] != "ice-timeout" && f["reason"] != "ice-failed" || f["message"] == "" {
			t.Errorf("failed connection: got %v, want a reason and a message", f)
		}
	}
	// One relay address for two sides: in each ICE generation one side at most has one, and
	// the other is told it has none. (Which side, and when, depends on when each side gathers:
	// a restart lets the browser give up its old allocation, and the other side may take it.)
	all := func(tb *tab, key string) []string {
		return eval[[]string](tb, fmt.Sprintf(`window.got.%s.failed.map((f) => f.message)`, key))
	}
	msgs := strings.Join(append(all(a, "fa"), all(b, "fb")...), " | ")
	t.Logf("the failures, as told: %s", msgs)
	if !strings.Contains(msgs, "no TURN relay address") {
		t.Errorf("the side without a relay address was not told so: %s", msgs)
	}
	// 100 messages wait for the channel; the 101st comes back at once, the others on leave().
	n := eval[int](b, `(() => { let n = 0; for (let i = 0; i < 101; i++) n += window.calls.fb.send('m' + i); return n; })()`)
	if n != 100 {
		t.Errorf("send() queued %d messages, want 100", n)
	}
	b.wait("the 101st undelivered", `window.got.fb.undelivered.length === 1 && window.got.fb.undelivered[0] === 'queue-full'`)
	eval[bool](b, `(window.calls.fb.leave(), true)`)
	b.wait("the queued messages undelivered on leave", `window.got.fb.undelivered.filter((r) => r === 'left').length === 100`)
	if states := eval[[]string](b, `window.got.fb.states`); strings.Join(states, ",") != "left" {
		t.Errorf("states after join: got %v, want [left]", states)
	}
}

// demoRoom opens the demo in room for each name, waiting until all are in it.
func demoRoom(t *testing.T, browser context.Context, base, room string, names ...string) []*tab {
	t.Helper()
	var tabs []*tab
	for _, name := range names {
		tabs = append(tabs, openTab(t, browser, base+"/?policy=relay&room="+room+"&name="+name))
	}
	for _, tb := range tabs {
		tb.wait("connected peers", fmt.Sprintf(`window.demo.call?.state === 'connected' && %s === %d`, jsConnected, len(names)-1))
	}
	return tabs
}

// click clicks a control of the page like a user (at its centre, once it is visible).
func (tb *tab) click(id string) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, chromedp.Click(chromedp.ID(id))); err != nil {
		tb.t.Fatalf("click #%s: %v", id, err)
	}
}

// logHas says whether the demo's message list has a line containing text.
func (tb *tab) logHas(text string) bool {
	tb.t.Helper()
	return eval[bool](tb, `document.getElementById('messages').textContent.includes(`+strconv.Quote(text)+`)`)
}

// TestDemoLeaveAndRejoin: leaving is the page's own state (not the others leaving), stops the
// camera and microphone, and the same call joins again with new ones.
func TestDemoLeaveAndRejoin(t *testing.T) {
	browser := newBrowser(t)
	base := demoApp(t, nil)
	tabs := demoRoom(t, browser, base, "leave", "Ada", "Bob")
	a, b := tabs[0], tabs[1]
	b.framesGrow(1)
	eval[bool](b, `(window.tracks = window.demo.call.stream.getTracks(), window.tracks.length === 2)`)
	b.click("leave")
	b.wait("left", `window.demo.call.state === 'left' && document.getElementById('status').textContent === 'You left the call'`)
	b.wait("the camera and microphone stopped", `window.tracks.every((t) => t.readyState === 'ended')`)
	a.waitChat("Bob left.")
	if b.logHas("Ada left") {
		t.Errorf("Bob's page says Ada left when Bob did")
	}
	if n := eval[int](b, `document.querySelectorAll('#grid .tile').length`); n != 1 {
		t.Errorf("after leaving Bob's page shows %d tiles, want only its own", n)
	}
	if dis := eval[bool](b, `['mic', 'camera', 'chat-send'].every((id) => document.getElementById(id).disabled)`); !dis {
		t.Errorf("after leaving, the call's controls are still enabled")
	}
	b.click("leave") // now "Join again"
	b.wait("back in the room", `window.demo.call.state === 'connected' && `+jsConnected+` === 1`)
	a.waitChat("Bob joined.")
	if live := eval[bool](b, `window.demo.call.stream.getTracks().length === 2 && window.demo.call.stream.getTracks().every((t) => t.readyState === 'live')`); !live {
		t.Errorf("after joining again Bob has no live camera and microphone")
	}
	a.framesGrow(1)
	b.framesGrow(1)
}

// TestDemoMediaState: the others see a participant's camera and microphone state; a camera
// added after joining without one, and a switch to another camera, reach the others.
func TestDemoMediaState(t *testing.T) {
	browser := newBrowser(t)
	base := demoApp(t, nil)
	a := openTab(t, browser, base+"/?policy=relay&room=media&name=Ada")
	b := openTab(t, browser, base+"/?policy=relay&room=media&name=Bob&camera=off")
	for _, tb := range []*tab{a, b} {
		tb.wait("connected", `window.demo.call?.state === 'connected' && `+jsConnected+` === 1`)
	}
	bobTile := `document.querySelector('#grid .tile:not(.local)')`
	a.wait("Bob's tile to say his camera is off", bobTile+`.classList.contains('video-off')`)
	if got := eval[string](b, `document.getElementById('camera').textContent`); got != "Camera off" {
		t.Errorf("Bob's camera button says %q, want Camera off", got)
	}
	b.click("camera") // a camera after joining without one
	a.wait("Bob's video", bobTile+`.classList.contains('video-off') === false`)
	a.framesGrow(1)

	a.click("mic")
	b.wait("Ada's tile to say her mic is off", bobTile+`.classList.contains('mic-off')`)
	a.click("camera")
	b.wait("Ada's tile to say her camera is off", bobTile+`.classList.contains('video-off')`)
	a.click("camera")
	b.wait("Ada's camera back", bobTile+`.classList.contains('video-off') === false`)

	// Switch Ada's camera to another fake device: Chromium's second one is a depth camera (no
	// frames a video encoder takes), its third an MJPEG camera.
	a.click("devices")
	other := eval[string](a, `[...document.getElementById('camera-select').options].find((o) => o.textContent === 'fake_device_2')?.value || ''`)
	if other == "" {
		t.Fatalf("only one camera listed: %v", eval[[]string](a, `[...document.getElementById('camera-select').options].map((o) => o.textContent)`))
	}
	eval[bool](a, fmt.Sprintf(`(() => { const s = document.getElementById('camera-select'); s.value = %q; s.dispatchEvent(new Event('change')); return true; })()`, other))
	a.wait("the other camera sent", fmt.Sprintf(`(() => { const t = window.demo.call.stream.getVideoTracks()[0]; return t.getSettings().deviceId === %q && [...window.demo.call.peers.values()].every((p) => p._senders.video.track === t); })()`, other))
	b.framesGrow(1)
}

// TestDemoRefused: a full room and a draining node end in a clear state: the reason on the
// page, the call's controls disabled, and a way to try again, with the layout holding.
func TestDemoRefused(t *testing.T) {
	browser := newBrowser(t)
	full := demoApp(t, settings{"signaling.max_room_size": "2"})
	// The drain phase of a shutdown, long enough for the test: a node going away.
	draining := startIcebox(t, loopback().with(settings{"shutdown.drain": "5m"}))
	draining.drain(t)
	demoRoom(t, browser, full, "full", "Ada", "Bob")
	for _, tc := range []struct{ url, code, status string }{
		{full + "/?policy=relay&room=full&name=Cy", "room-full", "Cannot join: the room is full"},
		{draining.url + "/?policy=relay&room=r&name=Cy", "unavailable", "Cannot join: the server is shutting down"},
	} {
		tb := openTab(t, browser, tc.url)
		tb.wait("the error", `window.demo.error !== null`)
		if code := eval[string](tb, `window.demo.error.code`); code != tc.code {
			t.Errorf("%s: code %q, want %q", tc.url, code, tc.code)
		}
		if s := eval[string](tb, `document.getElementById('status').textContent`); !strings.HasPrefix(s, tc.status) {
			t.Errorf("%s: status %q, want %q", tc.url, s, tc.status)
		}
		if got := eval[string](tb, `['mic', 'camera', 'share', 'chat-send'].filter((id) => !document.getElementById(id).disabled).join()`); got != "" {
			t.Errorf("%s: still enabled: %s", tc.url, got)
		}
		if got := eval[string](tb, `document.getElementById('leave').textContent`); got != "Try again" {
			t.Errorf("%s: the leave button says %q, want Try again", tc.url, got)
		}
		tb.layoutHolds(1280, 800, 1)
	}
}

// TestDemoInsecureContext: the demo opened over plain http:// on another host name than
// localhost (as from another machine) is not a secure context: it says so and what to do,
// and joins to watch and listen. Loading it asks for nothing the server does not have (no
// /favicon.ico 404).
func TestDemoInsecureContext(t *testing.T) {
	browser := newBrowser(t, chromedp.Flag("host-resolver-rules", "MAP icebox.test 127.0.0.1"))
	base := demoApp(t, nil)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	var mu sync.Mutex
	var missing []string
	err := chromedp.Listen(ctx, func(ev any) { // chromedp enables the Network domain of every tab
		if e, ok := ev.(*network.EventResponseReceived); ok && e.Response.Status >= 400 {
			mu.Lock()
			missing = append(missing, fmt.Sprintf("%d %s", e.Response.Status, e.Response.URL))
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate("http://icebox.test:"+port+"/?room=insecure&name=Ada")); err != nil {
		t.Fatal(err)
	}
	tb := &tab{t: t, ctx: ctx}
	tb.wait("joined to watch", `window.demo.call?.state === 'connected'`)
	if eval[bool](tb, `window.isSecureContext`) {
		t.Fatalf("the page is a secure context: the test does not test what it means to")
	}
	for _, want := range []string{"not a secure context", "https://", "Joining to watch and listen"} {
		if !tb.logHas(want) {
			t.Errorf("the page does not say %q", want)
		}
	}
	if tb.logHas("No camera or microphone") {
		t.Errorf("the page blames a missing camera instead of the insecure context")
	}
	tb.wait("the icon", `document.querySelector('link[rel=icon]') && [...performance.getEntriesByType('resource')].some((e) => e.name.endsWith('/demo/icon.svg'))`)
	// A room made up by the page is unguessable but readable: 13 characters of 32 (65 bits).
	if err := chromedp.Do(ctx, chromedp.Navigate("http://icebox.test:"+port+"/?name=Ada")); err != nil {
		t.Fatal(err)
	}
	tb.wait("a made-up room", `/^[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{5}$/.test(new URLSearchParams(location.search).get('room') || '')`)
	tb.wait("joined to watch", `window.demo.call?.state === 'connected'`)
	mu.Lock()
	defer mu.Unlock()
	if len(missing) > 0 {
		t.Errorf("requests that failed: %v", missing)
	}
}
