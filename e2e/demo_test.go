package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/icebox-rtc/icebox/signaling/redistest"
)

// tab is one page of the demo in the test's browser.
type tab struct {
	t   *testing.T
	ctx context.Context
}

// chat sends text through the demo's chat box (over the data channel).
func (tb *tab) chat(text string) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, chromedp.SendKeys(chromedp.ID("chat-input"), text), chromedp.Click(chromedp.ID("chat-send"))); err != nil {
		tb.t.Fatal(err)
	}
}

// waitChat waits until the page shows a chat message containing text.
func (tb *tab) waitChat(text string) {
	tb.t.Helper()
	tb.wait("the chat message "+strconv.Quote(text), `document.getElementById('messages').textContent.includes(`+strconv.Quote(text)+`)`)
}

// openTab opens url in a new tab of browser.
func openTab(t *testing.T, browser context.Context, url string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return &tab{t: t, ctx: ctx}
}

// eval evaluates a JavaScript expression (awaiting a promise) and returns its value.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("evaluating %.80s: %v", expr, err)
	}
	return v
}

// wait polls a JavaScript condition until it is true.
func (tb *tab) wait(what, cond string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 90*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(89*time.Second))); err != nil {
		state, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](jsState, chromedp.EvalAwaitPromise))
		tb.t.Fatalf("waiting for %s: %v\npage: %s", what, err, state)
	}
}

// JavaScript run in the demo pages.
const (
	// jsState describes the page, for failures.
	jsState = `(async () => JSON.stringify({
		stats: window.demo?.call ? await Promise.all([...window.demo.call.peers.values()].map(async p => {
			const out = []; (await p.pc.getStats()).forEach(s => { if (s.type.includes('candidate')) out.push(s.type + ':' + (s.candidateType || s.state || '') + ':' + (s.address || '') + ':' + (s.port || '') + ':' + (s.relayProtocol || s.url || '')); });
			return {sdpCandidates: (p.pc.localDescription?.sdp.match(/a=candidate.*/g) || []), remoteSdpCandidates: (p.pc.remoteDescription?.sdp.match(/a=candidate.*/g) || []), remote: !!p.pc.remoteDescription, out};
		})) : null,
		status: document.getElementById('status')?.textContent,
		peer: window.demo?.call?.peerId, state: window.demo?.call?.state,
		peers: window.demo?.call ? [...window.demo.call.peers.values()].map(p => ({id: p.id, polite: p._polite,
			signaling: p.pc.signalingState, connection: p.pc.connectionState, ice: p.pc.iceConnectionState,
			gathering: p.pc.iceGatheringState, gen: p._gen, remoteGen: p._remoteGen, offerer: p._offerer, restarts: p.restarts})) : null,
		log: [...document.querySelectorAll('#messages li')].map(li => li.textContent),
		trace: window.demo?.call?.trace,
	}))()`
	jsConnected = `(window.demo && window.demo.call ? [...window.demo.call.peers.values()].filter(p => p.pc.connectionState === 'connected').length : 0)`
	// jsFrames is the video frames decoded from each peer, by peer id.
	jsFrames = `(async () => {
		const out = {};
		for (const p of window.demo.call.peers.values()) {
			let n = 0;
			(await p.pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0; });
			out[p.id] = n;
		}
		return out;
	})()`
	jsPaths = `(async () => {
		const out = [];
		for (const id of window.demo.call.peers.keys()) out.push(await window.demo.call.path(id));
		return out;
	})()`
	jsPlayingVideos = `[...document.querySelectorAll('#grid .tile:not(.local) video')].filter(v => v.videoWidth > 0 && !v.paused).length`
)

// framesGrow waits until every peer's decoded video frames exceed what they were.
func (tb *tab) framesGrow(peers int) {
	tb.t.Helper()
	tb.wait(fmt.Sprintf("video from %d peers", peers), fmt.Sprintf(`(async () => { const f = await %s; const v = Object.values(f); return v.length === %d && v.every(n => n > 0); })()`, jsFrames, peers))
	before := eval[map[string]float64](tb, jsFrames)
	tb.wait("more video frames", fmt.Sprintf(`(async () => { const f = await %s; const b = %s; return Object.keys(b).every(k => (f[k] || 0) > b[k]); })()`, jsFrames, toJSObject(before)))
}

func toJSObject(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%q: %v", k, v))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// demoApp starts icebox for the browser tests: everything on loopback and the relay advertised
// on 127.0.0.1, so relays reach each other through their own address. The pages use the
// relay-only policy: Chromium then gathers no host candidates and sends nothing but to icebox
// on loopback (no mDNS, no connectivity checks toward the machine's other addresses).
func demoApp(t *testing.T, more settings) string {
	t.Helper()
	return startIcebox(t, loopback().with(settings{
		"credentials.secrets": "demo-secret", "http.rate_limit": "0", "signaling.max_conns_per_ip": "0",
	}).with(more)).url
}

// TestDemoTwoPeersRelayed: two pages join one room through the demo page with the relay-only
// policy; both connect through TURN, decode each other's video, and chat.
func TestDemoTwoPeersRelayed(t *testing.T) {
	browser := newBrowser(t)
	base := demoApp(t, nil)
	url := base + "/?room=two&policy=relay&debug&name="
	a := openTab(t, browser, url+"Ada")
	b := openTab(t, browser, url+"Bob")
	for _, tb := range []*tab{a, b} {
		tb.wait("a connected peer", jsConnected+` === 1`)
	}
	for i, tb := range []*tab{a, b} {
		paths := eval[[]map[string]string](tb, jsPaths)
		if len(paths) != 1 || paths[0]["kind"] != "relay" || paths[0]["local"] != "relay" {
			t.Errorf("page %d: path %v, want the selected pair relayed through TURN", i, paths)
		}
		tb.framesGrow(1)
		tb.wait("the TURN relay badge", `document.querySelector('#grid .tile:not(.local) .badge')?.textContent === 'TURN relay'`)
	}
	a.chat("hello from Ada")
	b.waitChat("hello from Ada")
}

// TestDemoThreePeers: in a room of three each page shows two remote videos.
func TestDemoThreePeers(t *testing.T) {
	browser := newBrowser(t)
	base := demoApp(t, nil)
	var tabs []*tab
	for _, name := range []string{"Ada", "Bob", "Cy"} {
		tabs = append(tabs, openTab(t, browser, base+"/?room=three&policy=relay&name="+name))
	}
	for _, tb := range tabs {
		tb.wait("two connected peers", jsConnected+` === 2`)
		tb.wait("two remote videos playing", jsPlayingVideos+` === 2`)
	}
}

// TestDemoReload: a page reloads; the other sees it come back (same peer id, resumed) and
// video flows again.
func TestDemoReload(t *testing.T) {
	browser := newBrowser(t)
	base := demoApp(t, nil)
	a := openTab(t, browser, base+"/?room=reload&policy=relay&name=Ada")
	b := openTab(t, browser, base+"/?room=reload&policy=relay&name=Bob")
	a.wait("connected", jsConnected+` === 1`)
	b.wait("connected", jsConnected+` === 1`)
	b.framesGrow(1)
	adaID := eval[string](a, `window.demo.call.peerId`)

	if err := chromedp.Do(a.ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	a.wait("connected after the reload", jsConnected+` === 1`)
	if got := eval[string](a, `window.demo.call.peerId`); got != adaID {
		t.Errorf("after the reload Ada is %q, want %q again (the session resumed, no ghost seat)", got, adaID)
	}
	b.wait("Ada back", fmt.Sprintf(`window.demo.call.peers.get(%q)?.pc.connectionState === 'connected'`, adaID))
	if n := eval[int](b, `window.demo.call.peers.size`); n != 1 {
		t.Errorf("Bob sees %d peers, want 1: no ghost seat", n)
	}
	b.framesGrow(1)
	a.framesGrow(1)
}

// TestDemoScreenShare: sharing replaces the outgoing video track (no renegotiation) and the
// camera comes back when sharing ends. Headless Chromium cannot capture a screen, so a canvas
// track goes through the same path (shareTrack, then the track's ended event).
func TestDemoScreenShare(t *testing.T) {
	browser := newBrowser(t)
	base := demoApp(t, nil)
	a := openTab(t, browser, base+"/?room=share&policy=relay&name=Ada")
	b := openTab(t, browser, base+"/?room=share&policy=relay&name=Bob")
	a.wait("connected", jsConnected+` === 1`)
	b.framesGrow(1)
	eval[bool](a, `(() => {
		const c = document.createElement('canvas'); c.width = 320; c.height = 240;
		const g = c.getContext('2d'); let i = 0;
		window.paint = setInterval(() => { g.fillStyle = i++ % 2 ? '#3d9bff' : '#e5534b'; g.fillRect(0, 0, 320, 240); }, 40);
		window.canvasTrack = c.captureStream(15).getVideoTracks()[0];
		window.demo.call.shareTrack(window.canvasTrack);
		return true;
	})()`)
	a.wait("the canvas sent in place of the camera", `[...window.demo.call.peers.values()].every(p => p._senders.video.track === window.canvasTrack)`)
	a.wait("the share button to say so", `document.getElementById('share').textContent === 'Stop sharing'`)
	b.framesGrow(1)                                                               // Bob keeps receiving, now the canvas
	eval[bool](a, `(window.canvasTrack.dispatchEvent(new Event('ended')), true)`) // the user stops sharing
	a.wait("the camera back", `[...window.demo.call.peers.values()].every(p => p._senders.video.track === window.demo.call.stream.getVideoTracks()[0])`)
	b.framesGrow(1)
}

// TestDemoJWT: with auth.mode jwt, a page with a valid token joins; one without gets a clear
// error.
func TestDemoJWT(t *testing.T) {
	browser := newBrowser(t)
	secret := "0123456789abcdef0123456789abcdef"
	base := demoApp(t, settings{"auth.mode": "jwt", "auth.jwt_secret": secret})
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ada", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	ok := openTab(t, browser, base+"/?room=jwt&policy=relay&name=Ada&token="+tok)
	ok.wait("joined", `window.demo && window.demo.call && window.demo.call.state === 'connected'`)
	refused := openTab(t, browser, base+"/?room=jwt&policy=relay&name=Eve")
	refused.wait("an error", `window.demo && window.demo.error`)
	if code := eval[string](refused, `window.demo.error.code`); code != "unauthorized" {
		t.Errorf("error code: got %q, want unauthorized", code)
	}
	if status := eval[string](refused, `document.getElementById('status').textContent`); !strings.Contains(status, "Cannot join") {
		t.Errorf("status: got %q, want it to say the page cannot join", status)
	}
}

// TestDemoSignalingDrop: when the signaling connection drops, the SDK reconnects and resumes
// the same session; the call itself never stops and the other side notices nothing.
func TestDemoSignalingDrop(t *testing.T) {
	browser := newBrowser(t)
	base := demoApp(t, nil)
	a := openTab(t, browser, base+"/?room=drop&policy=relay&name=Ada")
	b := openTab(t, browser, base+"/?room=drop&policy=relay&name=Bob")
	a.wait("connected", jsConnected+` === 1`)
	b.framesGrow(1)
	adaID := eval[string](a, `window.demo.call.peerId`)
	eval[bool](a, `(() => {
		window.states = [];
		window.demo.call.addEventListener('state', (e) => window.states.push(e.detail.state));
		window.demo.call.ws.close(4000, 'simulated drop');
		return true;
	})()`)
	a.wait("a reconnect", `window.states.includes('reconnecting') && window.demo.call.state === 'connected'`)
	if got := eval[string](a, `window.demo.call.peerId`); got != adaID {
		t.Errorf("after the drop Ada is %q, want %q (resumed)", got, adaID)
	}
	// The call went on throughout: chat over the data channel and video still flow.
	b.chat("still here")
	a.waitChat("still here")
	if left := eval[bool](b, `document.getElementById('messages').textContent.includes('Ada left')`); left {
		t.Errorf("Bob saw Ada leave during a signaling drop")
	}
	b.framesGrow(1)
}

// TestDemoTwoNodes: two icebox nodes on one Redis, each page on its own node: they meet in
// one room, each relays through its own node's TURN, and they see and chat with each other.
func TestDemoTwoNodes(t *testing.T) {
	browser := newBrowser(t)
	r := redistest.Start(t, redistest.Options{})
	onRedis := settings{
		"signaling.redis_url": r.URL,
		// Both nodes relay on 127.0.0.1: a node reaches only its own relay ports there unless
		// allowed_peer_cidrs covers the address (README, "Running several nodes").
		"turn.allowed_peer_cidrs": "127.0.0.1/32",
	}
	nodeA, nodeB := demoApp(t, onRedis), demoApp(t, onRedis)
	a := openTab(t, browser, nodeA+"/?room=nodes&policy=relay&name=Ada")
	b := openTab(t, browser, nodeB+"/?room=nodes&policy=relay&name=Bob")
	for _, tb := range []*tab{a, b} {
		tb.wait("a connected peer", jsConnected+` === 1`)
		tb.framesGrow(1)
	}
	b.chat("hello across nodes")
	a.waitChat("hello across nodes")
}
