package signaling_test

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

func TestWelcome(t *testing.T) {
	s := start(t, serverOptions{})
	ws, w := rawDial(t, s, "", nil)
	_ = ws
	if w["type"] != "welcome" || w["peer"] == "" || w["resume"] == "" || w["ttl"] != 86400.0 {
		t.Errorf("welcome: got %v", w)
	}
	servers, ok := w["iceServers"].([]any)
	if !ok || len(servers) != 1 {
		t.Errorf("iceServers: got %v, want the list from the credentials service", w["iceServers"])
	}
	if _, has := w["resumed"]; has {
		t.Errorf("a fresh session says resumed: %v", w)
	}
	a, b := dial(t, s, sigclient.Options{}), dial(t, s, sigclient.Options{})
	if a.Welcome().Peer == b.Welcome().Peer || a.Welcome().Resume == b.Welcome().Resume {
		t.Errorf("two connections share a peer id or token")
	}
}

func TestJoinAndPeers(t *testing.T) {
	s := start(t, serverOptions{})
	a, joinedA := join(t, s, "room-1", map[string]any{"name": "alice"})
	if joinedA.Room != "room-1" || len(joinedA.Peers) != 0 || !strings.Contains(string(joinedA.Raw), `"peers":[]`) {
		t.Errorf("first join: got %s, want room-1 with peers []", joinedA.Raw)
	}
	b, joinedB := join(t, s, "room-1", nil)
	if len(joinedB.Peers) != 1 || joinedB.Peers[0].Peer != a.Welcome().Peer || string(joinedB.Peers[0].Meta) != `{"name":"alice"}` {
		t.Errorf("second join: got %s, want alice with her meta", joinedB.Raw)
	}
	pj := expect(t, a, "peer-joined")
	if pj.Peer != b.Welcome().Peer || pj.Room != "room-1" || string(pj.Meta) != "{}" {
		t.Errorf("peer-joined: got %s, want bob with meta {}", pj.Raw)
	}
	c, joinedC := join(t, s, "room-1", map[string]any{"n": 3})
	if len(joinedC.Peers) != 2 || joinedC.Peers[0].Peer != a.Welcome().Peer || joinedC.Peers[1].Peer != b.Welcome().Peer {
		t.Errorf("third join: got %s, want alice then bob", joinedC.Raw)
	}
	expect(t, a, "peer-joined")
	expect(t, b, "peer-joined")
	_, other := join(t, s, "room-2", nil)
	if len(other.Peers) != 0 {
		t.Errorf("another room: got peers %v", other.Peers)
	}
	quiet(t, c)
}

func TestSignalAndBroadcast(t *testing.T) {
	s := start(t, serverOptions{})
	a, _ := join(t, s, "r", nil)
	b, _ := join(t, s, "r", nil)
	c, _ := join(t, s, "r", nil)
	d, _ := join(t, s, "elsewhere", nil)
	expect(t, a, "peer-joined")
	expect(t, a, "peer-joined")
	expect(t, b, "peer-joined")

	// from is set by the server: a client cannot claim to be another peer.
	if err := a.Send(map[string]any{"type": "signal", "to": b.Welcome().Peer, "from": c.Welcome().Peer, "data": map[string]any{"sdp": "offer"}}); err != nil {
		t.Fatal(err)
	}
	sig := expect(t, b, "signal")
	if sig.From != a.Welcome().Peer || string(sig.Data) != `{"sdp":"offer"}` {
		t.Errorf("signal: got %s, want from alice with the data", sig.Raw)
	}
	quiet(t, c)

	// Only inside the room.
	_, err := a.Request(ctx(t), map[string]any{"type": "signal", "to": d.Welcome().Peer, "data": 1})
	var e *sigclient.Error
	if !errors.As(err, &e) || e.Code != "unknown-peer" {
		t.Errorf("signal to a peer of another room: got %v, want unknown-peer", err)
	}
	for _, to := range []string{"nobody", a.Welcome().Peer} {
		if _, err := a.Request(ctx(t), map[string]any{"type": "signal", "to": to, "data": 1}); !errors.As(err, &e) || e.Code != "unknown-peer" {
			t.Errorf("signal to %q: got %v, want unknown-peer", to, err)
		}
	}
	quiet(t, d)

	if err := c.Broadcast([]any{"hello", 1}); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*sigclient.Client{a, b} {
		if m := expect(t, x, "broadcast"); m.From != c.Welcome().Peer || string(m.Data) != `["hello",1]` {
			t.Errorf("broadcast: got %s", m.Raw)
		}
	}
	quiet(t, c)
	quiet(t, d)
}

func TestLeaveAndRejoin(t *testing.T) {
	s := start(t, serverOptions{})
	a, _ := join(t, s, "r", nil)
	b, _ := join(t, s, "r", nil)
	expect(t, a, "peer-joined")
	left, err := b.Request(ctx(t), map[string]any{"type": "leave"})
	if err != nil || left.Type != "left" {
		t.Fatalf("leave: got %s %v", left.Raw, err)
	}
	if pl := expect(t, a, "peer-left"); pl.Peer != b.Welcome().Peer || pl.Reason != "left" || pl.Room != "r" {
		t.Errorf("peer-left: got %s, want bob, reason left", pl.Raw)
	}
	if err := b.Broadcast("x"); err != nil {
		t.Fatal(err)
	}
	if m := expect(t, b, "error"); m.Code != "not-joined" {
		t.Errorf("broadcast after leave: got %s", m.Raw)
	}
	if _, err := b.Join(ctx(t), "r", nil); err != nil {
		t.Fatalf("join again after leave: %v", err)
	}
	expect(t, a, "peer-joined")
	if _, err := b.Join(ctx(t), "other", nil); !isCode(err, "already-joined") {
		t.Errorf("a second room at once: got %v, want already-joined", err)
	}
}

func isCode(err error, code string) bool {
	var e *sigclient.Error
	return errors.As(err, &e) && e.Code == code
}

func TestJoinErrors(t *testing.T) {
	s := start(t, serverOptions{config: func(c *signalingConfig) { c.MaxRoomSize = 2 }})
	join(t, s, "full", nil)
	join(t, s, "full", nil)
	c := dial(t, s, sigclient.Options{})
	for _, tc := range []struct {
		room string
		meta any
		code string
	}{
		{"full", nil, "room-full"},
		{"", nil, "bad-room"},
		{"a b", nil, "bad-room"},
		{"room/1", nil, "bad-room"},
		{"ünï", nil, "bad-room"},
		{strings.Repeat("x", 65), nil, "bad-room"},
		{"ok", map[string]any{"blob": strings.Repeat("x", 1100)}, "too-large"},
		{"ok", "a string", "bad-message"},
		{"ok", []int{1}, "bad-message"},
	} {
		if _, err := c.Join(ctx(t), tc.room, tc.meta); !isCode(err, tc.code) {
			t.Errorf("join %.20q meta %.20v: got %v, want %s", tc.room, tc.meta, err, tc.code)
		}
	}
	if _, err := c.Join(ctx(t), strings.Repeat("x", 64)+"", map[string]any{"blob": strings.Repeat("x", 900)}); err != nil {
		t.Errorf("a 64-character room and meta under 1 KiB: %v", err)
	}
}

func TestNotJoined(t *testing.T) {
	s := start(t, serverOptions{})
	c := dial(t, s, sigclient.Options{})
	for _, msg := range []map[string]any{
		{"type": "signal", "to": "x", "data": 1},
		{"type": "broadcast", "data": 1},
		{"type": "leave"},
	} {
		if _, err := c.Request(ctx(t), msg); !isCode(err, "not-joined") {
			t.Errorf("%v before join: got %v, want not-joined", msg["type"], err)
		}
	}
}

func TestPingAndIDs(t *testing.T) {
	s := start(t, serverOptions{})
	ws, _ := rawDial(t, s, "", nil)
	for _, tc := range []struct{ send, re string }{
		{`{"type":"ping","id":"abc"}`, `"abc"`},
		{`{"type":"ping","id":42}`, `42`},
		{`{"type":"ping"}`, ``},
	} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(tc.send)); err != nil {
			t.Fatal(err)
		}
		m := readJSON(t, ws)
		re, _ := json.Marshal(m["re"])
		if m["type"] != "pong" || (tc.re != "" && string(re) != tc.re) || (tc.re == "" && m["re"] != nil) {
			t.Errorf("%s: got %v, want pong with re %s", tc.send, m, tc.re)
		}
		if _, ok := m["seq"].(float64); !ok {
			t.Errorf("%s: the reply has no seq: %v", tc.send, m)
		}
	}
}

// TestBadMessages: nothing malformed closes the connection or goes unanswered.
func TestBadMessages(t *testing.T) {
	s := start(t, serverOptions{})
	ws, _ := rawDial(t, s, "", nil)
	for _, tc := range []struct {
		frame string
		re    any
	}{
		{`not json`, nil},
		{`[1,2]`, nil},
		{`"ping"`, nil},
		{`{}`, nil},
		{`{"type":"fly","id":"u1"}`, "u1"},
		{`{"type":42,"id":"t1"}`, "t1"},
		{`{"type":"join","room":7,"id":"j1"}`, "j1"},
		{`{"type":"signal","to":"x","id":"s1"}`, "s1"},
		{`{"type":"signal","data":1,"id":"s2"}`, "s2"},
		{`{"type":"broadcast","id":"b1"}`, "b1"},
		{`{"type":"ping","id":{"x":1}}`, nil},
		{`{"type":"ping","id":"truncated`, nil},
	} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(tc.frame)); err != nil {
			t.Fatal(err)
		}
		m := readJSON(t, ws)
		if m["type"] != "error" || m["code"] != "bad-message" || m["message"] == "" || m["re"] != tc.re {
			t.Errorf("%s: got %v, want bad-message with re %v", tc.frame, m, tc.re)
		}
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if m := readJSON(t, ws); m["code"] != "bad-message" {
		t.Errorf("binary frame: got %v", m)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","id":"still-open","extra":[1,{}]}`)); err != nil {
		t.Fatal(err)
	}
	if m := readJSON(t, ws); m["type"] != "pong" || m["re"] != "still-open" {
		t.Errorf("after bad messages, with unknown fields: got %v, want pong", m)
	}
}

func TestOversizedFrame(t *testing.T) {
	s := start(t, serverOptions{config: func(c *signalingConfig) { c.MaxMessageBytes = 2048 }})
	ws, _ := rawDial(t, s, "", nil)
	big := `{"type":"broadcast","data":"` + strings.Repeat("x", 3000) + `"}`
	if err := ws.WriteMessage(websocket.TextMessage, []byte(big)); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(t, ws); code != websocket.CloseMessageTooBig {
		t.Errorf("close code: got %d, want 1009", code)
	}
}

func TestFlood(t *testing.T) {
	s := start(t, serverOptions{config: func(c *signalingConfig) { c.RateLimit = 5 }}) // burst 10
	ws, _ := rawDial(t, s, "", nil)
	go func() {
		for range 200 {
			if ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)) != nil {
				return
			}
		}
	}()
	pongs, limited := 0, 0
	_ = ws.SetReadDeadline(timeAfter(20))
	for {
		_, frame, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !asCloseError(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
				t.Fatalf("the flood ended with %v, want close 1008", err)
			}
			break
		}
		switch {
		case strings.Contains(string(frame), `"pong"`):
			pongs++
		case strings.Contains(string(frame), `"rate-limited"`):
			limited++
		}
	}
	if pongs < 10 || limited == 0 {
		t.Errorf("got %d pongs and %d rate-limited errors, want the burst answered and then rate-limited", pongs, limited)
	}
}

// TestFloodKeepsQueuedReplies: a client closed with 1008 for flooding still gets everything
// queued for it before the close, in order, even when it had stopped reading for a while and
// its side of the connection ended meanwhile.
func TestFloodKeepsQueuedReplies(t *testing.T) {
	s := start(t, serverOptions{config: func(c *signalingConfig) { c.RateLimit, c.MaxQueuedBytes = 10, 16<<20 }}) // burst 20
	flooder, _ := rawDial(t, s, "", nil)
	// A small receive buffer: the server's writes to it block after little data.
	if err := flooder.NetConn().(*net.TCPConn).SetReadBuffer(128 << 10); err != nil {
		t.Fatal(err)
	}
	if err := flooder.WriteJSON(map[string]any{"type": "join", "room": "r"}); err != nil {
		t.Fatal(err)
	}
	// More than the sockets' buffers hold, from senders that each stay within the burst, and
	// fewer messages than a mailbox holds: the server is still writing when the flood starts.
	const senders, each = 5, 6
	blob := strings.Repeat("x", 60<<10)
	for range senders {
		c, _ := join(t, s, "r", nil)
		for i := range each {
			if err := c.Broadcast(map[string]any{"i": i, "blob": blob}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Ping(ctx(t)); err != nil { // its broadcasts are in the flooder's mailbox
			t.Fatal(err)
		}
	}
	for range 60 { // past the burst, and past the strikes: closed with 1008
		if err := flooder.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)); err != nil {
			t.Fatal(err)
		}
	}
	// The flooder's side ends (a half close): the server reads no more, and must still write.
	if err := flooder.NetConn().(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = flooder.NetConn().(*net.TCPConn).SetReadBuffer(4 << 20) // and now it reads
	var want float64 = 1
	count := map[string]int{}
	_ = flooder.SetReadDeadline(timeAfter(30))
	for {
		_, frame, err := flooder.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !asCloseError(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
				t.Fatalf("after %v messages (%v) the connection ended with %v, want close 1008", want-1, count, err)
			}
			break
		}
		var m struct {
			Seq        float64
			Type, Code string
		}
		if err := json.Unmarshal(frame, &m); err != nil {
			t.Fatal(err)
		}
		if m.Seq != want {
			t.Fatalf("got seq %v, want %v: a message queued before the close was lost", m.Seq, want)
		}
		count[m.Type+m.Code]++
		want++
	}
	if count["broadcast"] != senders*each || count["pong"] < 20 || count["errorrate-limited"] < 11 {
		t.Errorf("got %v, want %d broadcasts, the burst's 20 pongs and at least 11 rate-limited errors before the close",
			count, senders*each)
	}
}
