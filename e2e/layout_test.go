package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// jsLayoutProblems lists what a user would see wrong on the demo page: a control off screen or
// covered (the element at its centre is not the control), two tiles overlapping, a tile off
// screen, a name or a path badge hidden. The %d are the number of tiles expected and the
// screen's width and height.
const jsLayoutProblems = `(() => {
	const n = %d, want = [%d, %d], problems = [], vw = innerWidth, vh = innerHeight;
	if (vw !== want[0] || vh !== want[1]) problems.push('the page lays out at ' + vw + 'x' + vh + ', not the screen\'s ' + want.join('x'));
	const box = (el) => { const r = el.getBoundingClientRect(); return {l: r.left, t: r.top, r: r.right, b: r.bottom, w: r.width, h: r.height}; };
	const fmt = (b) => Math.round(b.l) + ',' + Math.round(b.t) + ' ' + Math.round(b.w) + 'x' + Math.round(b.h);
	const inside = (b, o) => b.w > 0 && b.h > 0 && b.l >= o.l - 0.5 && b.t >= o.t - 0.5 && b.r <= o.r + 0.5 && b.b <= o.b + 0.5;
	const screen = {l: 0, t: 0, r: vw, b: vh};
	const describe = (e) => e ? e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '') : 'nothing';
	const reachable = (el, what) => {
		const b = box(el);
		if (!inside(b, screen)) { problems.push(what + ' is not fully on screen (' + fmt(b) + ' in ' + vw + 'x' + vh + ')'); return; }
		const at = document.elementFromPoint(b.l + b.w / 2, b.t + b.h / 2);
		if (at !== el && !el.contains(at)) problems.push(what + ' is covered by ' + describe(at));
	};
	for (const id of ['mic', 'camera', 'share', 'devices', 'leave', 'chat-input', 'chat-send', 'invite']) reachable(document.getElementById(id), '#' + id);
	const tiles = [...document.querySelectorAll('#grid .tile')];
	if (tiles.length !== n) problems.push(tiles.length + ' tiles, want ' + n);
	const boxes = tiles.map(box);
	boxes.forEach((b, i) => {
		if (!inside(b, screen)) problems.push('tile ' + i + ' is not fully on screen (' + fmt(b) + ')');
		if (b.w < 100) problems.push('tile ' + i + ' is ' + fmt(b) + ': too small to see');
		for (let j = i + 1; j < boxes.length; j++) {
			const o = boxes[j];
			if (Math.min(b.r, o.r) - Math.max(b.l, o.l) > 1 && Math.min(b.b, o.b) - Math.max(b.t, o.t) > 1) problems.push('tiles ' + i + ' and ' + j + ' overlap (' + fmt(b) + ' and ' + fmt(o) + ')');
		}
		const name = tiles[i].querySelector('.name');
		if (!name.textContent) problems.push('tile ' + i + ' has no name');
		if (box(name).w < Math.min(40, name.scrollWidth)) problems.push('tile ' + i + ': the name is squeezed to ' + fmt(box(name)));
		reachable(name, 'the name of tile ' + i);
		if (!inside(box(name), b)) problems.push('the name of tile ' + i + ' sticks out of it');
		const badge = tiles[i].querySelector('.badge');
		if (badge) {
			reachable(badge, 'the path badge of tile ' + i);
			if (!inside(box(badge), b)) problems.push('the badge of tile ' + i + ' sticks out of it');
		}
	});
	if (document.scrollingElement.scrollWidth > vw) problems.push('the page is wider than the screen');
	return problems;
})()`

// layoutHolds waits until the page at w x h shows n tiles with nothing wrong, and fails with
// what is still wrong at the deadline.
func (tb *tab) layoutHolds(w, h int64, n int) {
	tb.t.Helper()
	var opts []chromedp.EmulateViewportOption
	if w < 500 {
		opts = append(opts, chromedp.EmulateScale(2), chromedp.EmulateMobile)
	}
	if err := chromedp.Do(tb.ctx, chromedp.EmulateViewport(w, h, opts...)); err != nil {
		tb.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		problems := eval[[]string](tb, fmt.Sprintf(jsLayoutProblems, n, w, h))
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.t.Errorf("%dx%d with %d participants: %s", w, h, n, strings.Join(problems, "; "))
			return
		}
		time.Sleep(200 * time.Millisecond) // polling a condition with a deadline
	}
}

// screenshots are the pictures make screenshot puts into docs/: size and participants.
var screenshots = map[string]string{
	"1280x800-2":  "demo.png",
	"390x844-4":   "demo-phone.png",
	"1920x1080-6": "demo-six.png",
}

// shoot keeps a PNG of the page in the test's temp dir, in $ICEBOX_SCREENSHOTS (all of them)
// and in $ICEBOX_DOCS for the ones docs/ shows.
func (tb *tab) shoot(w, h int64, n int) {
	tb.t.Helper()
	key := fmt.Sprintf("%dx%d-%d", w, h, n)
	png, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("screenshot: %v", err)
	}
	var paths []string
	if d := os.Getenv("ICEBOX_SCREENSHOTS"); d != "" {
		paths = append(paths, filepath.Join(d, "demo-"+key+".png"))
	}
	if d, name := os.Getenv("ICEBOX_DOCS"), screenshots[key]; d != "" && name != "" {
		paths = append(paths, filepath.Join(d, name))
	}
	for _, p := range paths {
		if err := os.WriteFile(p, png, 0o644); err != nil { //nolint:gosec // a picture for the docs
			tb.t.Fatal(err)
		}
	}
}

// TestDemoLayout: at 1280x800, 1920x1080 and 390x844, with 1, 2, 4 and 6 participants, every
// control of the demo is on screen and clickable, no tiles overlap, and every name and path
// badge shows. make screenshot keeps pictures of it in docs/. Only the first participant sends
// video beyond two participants; the others have their camera off (six pages encoding video
// for each other would saturate a 2-core machine), so their tiles show the camera-off
// placeholder.
func TestDemoLayout(t *testing.T) {
	browser := newBrowser(t)
	base := demoApp(t, settings{"turn.tcp_listen": ""}) // half the TURN allocations of 15 connections
	names := []string{"Ada", "Bob", "Cy", "Dee", "Eve", "Finn"}
	docs := os.Getenv("ICEBOX_DOCS") != ""
	var tabs []*tab
	for _, n := range []int{1, 2, 4, 6} {
		for len(tabs) < n {
			url := base + "/?room=layout&policy=relay&name=" + names[len(tabs)]
			if len(tabs) > 1 {
				url += "&camera=off"
			}
			tabs = append(tabs, openTab(t, browser, url))
		}
		for _, tb := range tabs {
			tb.wait("in the room", `window.demo.call?.state === 'connected'`)
		}
		// The first participant's page is under test: a tile for everyone. The pictures for the
		// docs wait until it is connected to everyone (calls themselves are other tests' work:
		// six pages in a relayed mesh on a busy 2-core machine connect slowly).
		a := tabs[0]
		a.wait(fmt.Sprintf("%d tiles", n), fmt.Sprintf(`document.querySelectorAll('#grid .tile').length === %d`, n))
		if docs {
			a.wait(fmt.Sprintf("%d connected peers", n-1), fmt.Sprintf(`%s === %d`, jsConnected, n-1))
			a.wait("the path badges", `[...document.querySelectorAll('#grid .badge')].every(b => b.textContent === 'TURN relay')`)
		}
		for _, size := range [][2]int64{{1280, 800}, {1920, 1080}, {390, 844}} {
			a.layoutHolds(size[0], size[1], n)
			a.shoot(size[0], size[1], n)
		}
		if err := chromedp.Do(a.ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
			t.Fatal(err)
		}
		if n == 2 { // from here on only Ada sends video: six pages encoding it would saturate 2 cores
			tabs[1].wait("Bob in the call", `window.demo.call?.state === 'connected' && !document.getElementById('camera').disabled`)
			tabs[1].click("camera")
			a.wait("Bob's camera off", `document.querySelector('#grid .tile:not(.local)').classList.contains('video-off')`)
		}
	}
}
