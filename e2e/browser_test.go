package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// newBrowser starts headless Chromium (Debian's, installed by make test) as a user would run it
// for tests: no sandbox (root), fake media devices, no background traffic to Google, a fresh
// profile. It returns a context for chromedp.Run. extra adds flags.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		turntest.SkipOrFail(t, "chromium is not installed (make test installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], // headless, no first run, no background networking, no sync
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("use-fake-device-for-media-stream", "device-count=3,fps=10"), // three cameras (the third, MJPEG, is a second usable one), light on the CPU
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// iceConfigPage fetches /ice-config from icebox (another origin), opens two RTCPeerConnections
// with it in relay-only mode, and sends a message over a data channel between them: it only
// arrives if both sides relay through icebox's TURN.
const iceConfigPage = `<!doctype html><html><body><script>
window.result = null;
(async () => {
  const cands = [];
  try {
    const resp = await fetch(%q + '/ice-config?policy=relay');
    const cfg = await resp.json();
    const a = new RTCPeerConnection(cfg), b = new RTCPeerConnection(cfg);
    a.onicecandidate = e => { if (e.candidate) { cands.push(e.candidate.candidate); b.addIceCandidate(e.candidate); } };
    b.onicecandidate = e => { if (e.candidate) a.addIceCandidate(e.candidate); };
    const got = new Promise(res => b.ondatachannel = e => e.channel.onmessage = m => res(m.data));
    const dc = a.createDataChannel('chat');
    dc.onopen = () => dc.send('hello through icebox');
    await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
    const msg = await got;
    let pair = null;
    (await a.getStats()).forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = s.selectedCandidatePairId; });
    const stats = await a.getStats();
    const local = stats.get(stats.get(pair).localCandidateId);
    window.result = {ok: true, msg, cands, localType: local.candidateType, policy: cfg.iceTransportPolicy};
  } catch (e) {
    window.result = {ok: false, err: String(e), cands};
  }
})();
</script></body></html>`

type pageResult struct {
	OK        bool     `json:"ok"`
	Msg       string   `json:"msg"`
	Err       string   `json:"err"`
	Cands     []string `json:"cands"`
	LocalType string   `json:"localType"`
	Policy    string   `json:"policy"`
}

// runPage loads url in the browser and waits for window.result.
func runPage(t *testing.T, ctx context.Context, url string) pageResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("page %s: %v", url, err)
	}
	raw, err := chromedp.Run(ctx, chromedp.Poll[string](`window.result && JSON.stringify(window.result)`,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(50*time.Second)))
	if err != nil {
		t.Fatalf("page %s: %v", url, err)
	}
	var r pageResult
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("page result %q: %v", raw, err)
	}
	return r
}

// TestBrowserICEConfig: a page on an allowed origin fetches /ice-config and connects through
// icebox's TURN with it; a page on another origin cannot get credentials.
func TestBrowserICEConfig(t *testing.T) {
	ctx := newBrowser(t)
	// The app's origin must be known before it starts: bind the page servers first.
	allowed := httptest.NewUnstartedServer(nil)
	forbidden := httptest.NewUnstartedServer(nil)
	iceboxURL := startIcebox(t, loopback().with(settings{
		"http.allowed_origins": "http://" + allowed.Listener.Addr().String(), "credentials.secrets": "browser-secret",
	})).url
	for _, s := range []*httptest.Server{allowed, forbidden} {
		s.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, iceConfigPage, iceboxURL)
		})
		s.Start()
		t.Cleanup(s.Close)
	}

	r := runPage(t, ctx, allowed.URL)
	t.Logf("allowed origin: %+v", r)
	if !r.OK || r.Msg != "hello through icebox" {
		t.Fatalf("allowed origin: %+v", r)
	}
	if r.Policy != "relay" || r.LocalType != "relay" {
		t.Errorf("got policy %q and a %q local candidate, want relay and relay", r.Policy, r.LocalType)
	}
	for _, c := range r.Cands {
		if !strings.Contains(c, " relay ") {
			t.Errorf("candidate %q is not a relay candidate", c)
		}
	}

	r = runPage(t, ctx, forbidden.URL)
	if r.OK || !strings.Contains(r.Err, "Failed to fetch") {
		t.Errorf("forbidden origin: got %+v, want the fetch refused", r)
	}
}
