package signaling_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icebox-rtc/icebox/signaling"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

// TestResumeWithinGrace: a dropped connection resumes with its token: same peer id, room and
// peers in the welcome, the messages sent meanwhile in order, and the others notice nothing.
func TestResumeWithinGrace(t *testing.T) {
	s := start(t, serverOptions{config: func(c *signalingConfig) { c.ResumeGrace = time.Minute }})
	a, _ := join(t, s, "r", nil)
	b, _ := join(t, s, "r", map[string]any{"name": "bob"})
	expect(t, a, "peer-joined")
	if err := a.Signal(b.Welcome().Peer, "before the drop"); err != nil {
		t.Fatal(err)
	}
	expect(t, b, "signal")
	bPeer, token, last := b.Welcome().Peer, b.Welcome().Resume, b.LastSeq()
	if err := b.Close(); err != nil { // a drop: no leave
		t.Fatal(err)
	}
	for i := range 5 {
		if err := a.Signal(bPeer, fmt.Sprintf("queued %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Broadcast("queued broadcast"); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(ctx(t)); err != nil { // the queueing happened
		t.Fatal(err)
	}

	b2 := dial(t, s, sigclient.Options{Resume: token, Last: last})
	w := b2.Welcome()
	if !w.Resumed || w.Peer != bPeer || w.Room != "r" || len(w.Peers) != 1 || w.Peers[0].Peer != a.Welcome().Peer {
		t.Fatalf("resumed welcome: got %s, want resumed, the same peer, room r and alice", w.Raw)
	}
	if w.Resume == token {
		t.Errorf("the resume token was not renewed")
	}
	for i := range 5 {
		if m := expect(t, b2, "signal"); string(m.Data) != fmt.Sprintf("%q", fmt.Sprintf("queued %d", i)) {
			t.Errorf("queued message %d: got %s", i, m.Raw)
		}
	}
	if m := expect(t, b2, "broadcast"); string(m.Data) != `"queued broadcast"` {
		t.Errorf("queued broadcast: got %s", m.Raw)
	}
	quiet(t, a) // no peer-left, no peer-joined

	// The session goes on as before.
	if err := b2.Signal(a.Welcome().Peer, "back"); err != nil {
		t.Fatal(err)
	}
	if m := expect(t, a, "signal"); m.From != bPeer {
		t.Errorf("after the resume: got %s", m.Raw)
	}

	// Tokens are single use: the old one now gets a fresh session.
	b3 := dial(t, s, sigclient.Options{Resume: token})
	if b3.Welcome().Resumed || b3.Welcome().Peer == bPeer {
		t.Errorf("a used token resumed: %s", b3.Welcome().Raw)
	}
	forged := dial(t, s, sigclient.Options{Resume: "forged-token"})
	if forged.Welcome().Resumed {
		t.Errorf("a forged token resumed")
	}
}

// TestResumeReplaysUnacknowledged: a resume without ?last replays what the dropped socket may
// have swallowed; the client drops duplicates by seq.
func TestResumeReplaysUnacknowledged(t *testing.T) {
	s := start(t, serverOptions{})
	a, _ := join(t, s, "r", nil)
	b, _ := join(t, s, "r", nil)
	expect(t, a, "peer-joined")
	if err := a.Signal(b.Welcome().Peer, "maybe lost"); err != nil {
		t.Fatal(err)
	}
	first := expect(t, b, "signal")
	token := b.Welcome().Resume
	_ = b.Close()

	ws, w := rawDial(t, s, "?resume="+token, nil)
	if w["resumed"] != true {
		t.Fatalf("got %v", w)
	}
	m := readJSON(t, ws)
	// The join reply and the signal were never acknowledged by a pong: both come again.
	for m["type"] != "signal" {
		m = readJSON(t, ws)
	}
	if m["seq"] != float64(first.Seq) || m["data"] != "maybe lost" {
		t.Errorf("replayed: got %v, want seq %d again", m, first.Seq)
	}
}

// TestResumeReplacesOpenSocket: a resume while the old socket still looks open takes over.
func TestResumeReplacesOpenSocket(t *testing.T) {
	s := start(t, serverOptions{})
	a, _ := join(t, s, "r", nil)
	old, w := rawDial(t, s, "", nil)
	if err := old.WriteJSON(map[string]any{"type": "join", "room": "r"}); err != nil {
		t.Fatal(err)
	}
	readJSON(t, old) // joined
	expect(t, a, "peer-joined")

	b2 := dial(t, s, sigclient.Options{Resume: w["resume"].(string), Last: 1})
	if !b2.Welcome().Resumed || b2.Welcome().Peer != w["peer"] {
		t.Fatalf("got %s", b2.Welcome().Raw)
	}
	if code := closeCode(t, old); code != 4001 {
		t.Errorf("the replaced socket: got close %d, want 4001", code)
	}
	if err := a.Signal(b2.Welcome().Peer, "to the new socket"); err != nil {
		t.Fatal(err)
	}
	if m := expect(t, b2, "signal"); string(m.Data) != `"to the new socket"` {
		t.Errorf("got %s", m.Raw)
	}
	quiet(t, a)
}

// TestGraceExpires: without a resume, the others get peer-left "disconnected" when the grace
// ends, and the token no longer resumes.
func TestGraceExpires(t *testing.T) {
	clock := signaling.NewFakeClock()
	s := start(t, serverOptions{clock: clock, config: func(c *signalingConfig) { c.ResumeGrace = time.Minute }})
	a, _ := join(t, s, "r", nil)
	b, _ := join(t, s, "r", nil)
	expect(t, a, "peer-joined")
	token := b.Welcome().Resume
	_ = b.Close()
	clock.WaitPending(t, time.Minute, 1) // the server saw the drop
	quiet(t, a)                          // nothing yet
	clock.Advance(time.Minute)
	pl := expect(t, a, "peer-left")
	if pl.Peer != b.Welcome().Peer || pl.Reason != "disconnected" {
		t.Errorf("got %s, want peer-left disconnected", pl.Raw)
	}
	late := dial(t, s, sigclient.Options{Resume: token})
	if late.Welcome().Resumed {
		t.Errorf("resumed after the grace")
	}
}

// TestResumeOutsideRoom: a session that is in no room resumes with peers [], never null.
func TestResumeOutsideRoom(t *testing.T) {
	s := start(t, serverOptions{})
	c := dial(t, s, sigclient.Options{})
	token := c.Welcome().Resume
	_ = c.Close()
	_, w := rawDial(t, s, "?resume="+token, nil)
	if peers, ok := w["peers"].([]any); w["resumed"] != true || !ok || len(peers) != 0 {
		t.Errorf("got %v, want resumed with peers []", w)
	}
}

// TestSlowReader: a client that stops reading is cut (1008) once what waits for it passes
// signaling.max_queued_bytes, long before 256 messages; the others in its room get everything.
func TestSlowReader(t *testing.T) {
	s := start(t, serverOptions{config: func(c *signalingConfig) { c.MaxQueuedBytes = 1 << 20 }})
	sender, _ := join(t, s, "r", nil)
	reader, _ := join(t, s, "r", nil)
	expect(t, sender, "peer-joined")
	stalled, w := rawDial(t, s, "", nil) // never reads again after the welcome
	_ = stalled.NetConn().(*net.TCPConn).SetReadBuffer(128 << 10)
	if err := stalled.WriteJSON(map[string]any{"type": "join", "room": "r"}); err != nil {
		t.Fatal(err)
	}
	expect(t, sender, "peer-joined")
	expect(t, reader, "peer-joined")
	const n = 100 // 6 MB: more than the sockets hold and the budget, fewer than 256 messages
	blob := strings.Repeat("x", 60<<10)
	go func() {
		for i := range n {
			if err := sender.Broadcast(map[string]any{"i": i, "blob": blob}); err != nil {
				return
			}
		}
	}()
	stalledLeft := false
	for i := 0; i < n || !stalledLeft; {
		m := next(t, reader)
		switch m.Type {
		case "broadcast":
			var d struct{ I int }
			if err := jsonUnmarshal(m.Data, &d); err != nil || d.I != i {
				t.Fatalf("broadcast %d: got %v (%v)", i, d.I, err)
			}
			i++
		case "peer-left":
			if m.Peer != w["peer"] || m.Reason != "disconnected" {
				t.Fatalf("got %s", m.Raw)
			}
			stalledLeft = true
		default:
			t.Fatalf("unexpected %s", m.Raw)
		}
	}
	if got := counter(t, s, "icebox_signaling_sessions_ended_total", "reason", "mailbox_full"); got != 1 {
		t.Errorf("sessions ended for a full mailbox: got %v, want 1", got)
	}
	if code := closeCode(t, stalled); code != websocket.ClosePolicyViolation {
		t.Errorf("the slow reader: got close %d, want 1008", code)
	}
}

// TestQueuedBytesTotal: past signaling.max_queued_bytes_total, the sessions with the most
// unsent bytes are cut first, until the node is back under it.
func TestQueuedBytesTotal(t *testing.T) {
	const total = 3 << 20
	s := start(t, serverOptions{config: func(c *signalingConfig) { c.MaxQueuedBytes, c.MaxQueuedBytesTotal = 8<<20, total }})
	sender, _ := join(t, s, "r", nil)
	for range 4 { // never read after their join
		ws, _ := rawDial(t, s, "", nil)
		_ = ws.NetConn().(*net.TCPConn).SetReadBuffer(128 << 10)
		if err := ws.WriteJSON(map[string]any{"type": "join", "room": "r"}); err != nil {
			t.Fatal(err)
		}
		expect(t, sender, "peer-joined")
	}
	blob := strings.Repeat("x", 60<<10)
	for i := range 80 {
		if err := sender.Broadcast(map[string]any{"i": i, "blob": blob}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sender.Ping(ctx(t)); err != nil { // every broadcast was queued
		t.Fatal(err)
	}
	waitFor(t, "a slow reader is cut for the node's total", func() bool {
		return counter(t, s, "icebox_signaling_sessions_ended_total", "reason", "memory") >= 1
	})
	waitFor(t, "the node is back under its total", func() bool {
		return counter(t, s, "icebox_signaling_queued_bytes", "", "") <= total
	})
}

func TestShutdownSaysBye(t *testing.T) {
	s := start(t, serverOptions{})
	ws, _ := rawDial(t, s, "", nil)
	if err := s.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if m := readJSON(t, ws); m["type"] != "bye" || m["reason"] != "shutdown" {
		t.Errorf("got %v, want bye", m)
	}
	if code := closeCode(t, ws); code != websocket.CloseServiceRestart {
		t.Errorf("close code: got %d, want 1012", code)
	}
}

func TestDrain(t *testing.T) {
	s := start(t, serverOptions{})
	a, _ := join(t, s, "r", nil)
	b, _ := join(t, s, "r", nil)
	expect(t, a, "peer-joined")
	c := dial(t, s, sigclient.Options{})
	s.Drain()
	if _, err := c.Join(ctx(t), "r", nil); !isCode(err, "unavailable") {
		t.Errorf("join while draining: got %v, want unavailable", err)
	}
	if err := a.Signal(b.Welcome().Peer, "still talking"); err != nil {
		t.Fatal(err)
	}
	expect(t, b, "signal")
	if _, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{}); !isCode(err, "unavailable") {
		t.Errorf("a new connection while draining: got %v, want 503 unavailable", err)
	}
	token := b.Welcome().Resume
	_ = b.Close()
	if b2, err := sigclient.Dial(ctx(t), s.URL, sigclient.Options{Resume: token}); err != nil || !b2.Welcome().Resumed {
		t.Errorf("a resume while draining: %v", err)
	} else {
		_ = b2.Close()
	}
}
