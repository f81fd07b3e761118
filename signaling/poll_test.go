package signaling_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// clientFrame is one frame as a client sends it (masked).
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	key := [4]byte{0x1b, 0x2e, 0x3a, 0x44}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i%4])
	}
	return f
}

func pingMessage(id string) []byte { return []byte(`{"type":"ping","id":"` + id + `"}`) }

// TestFramesAsTheyCome: a connection between messages is parked on the poller, and whatever way
// the client's frames reach the socket (together, byte by byte, longer than the read buffer,
// fragmented around control frames) each message is answered and each ping ponged.
func TestFramesAsTheyCome(t *testing.T) {
	s := start(t, serverOptions{})
	big := `{"type":"ping","id":"big","data":"` + strings.Repeat("x", 5000) + `"}`
	cases := []struct {
		name   string
		writes [][]byte // each one write on the socket
		want   []string // pong re ids, in order, and "ping:PAYLOAD" for a control pong
	}{
		{"two messages in one write", [][]byte{append(clientFrame(true, websocket.TextMessage, pingMessage("a")), clientFrame(true, websocket.TextMessage, pingMessage("b"))...)}, []string{"a", "b"}},
		{"a message byte by byte", split(clientFrame(true, websocket.TextMessage, pingMessage("c")), 1), []string{"c"}},
		{"longer than the read buffer", [][]byte{clientFrame(true, websocket.TextMessage, []byte(big))}, []string{"big"}},
		{"longer, in pieces", split(clientFrame(true, websocket.TextMessage, []byte(big)), 700), []string{"big"}},
		{"a ping alone", [][]byte{clientFrame(true, websocket.PingMessage, []byte("hi"))}, []string{"ping:hi"}},
		{"a ping byte by byte, then a message", append(split(clientFrame(true, websocket.PingMessage, []byte("yo")), 1), clientFrame(true, websocket.TextMessage, pingMessage("d"))), []string{"ping:yo", "d"}},
		{"a pong, then a message", [][]byte{clientFrame(true, websocket.PongMessage, []byte("0")), clientFrame(true, websocket.TextMessage, pingMessage("e"))}, []string{"e"}},
		{"a ping between fragments", [][]byte{
			clientFrame(false, websocket.TextMessage, []byte(`{"type":"ping",`)),
			clientFrame(true, websocket.PingMessage, []byte("mid")),
			clientFrame(true, 0, []byte(`"id":"f"}`)),
		}, []string{"ping:mid", "f"}},
		{"everything in one write", [][]byte{bytes.Join([][]byte{
			clientFrame(true, websocket.PingMessage, []byte("1")),
			clientFrame(true, websocket.TextMessage, pingMessage("g")),
			clientFrame(true, websocket.PongMessage, nil),
			clientFrame(true, websocket.TextMessage, []byte(big)),
			clientFrame(true, websocket.PingMessage, []byte("2")),
		}, nil)}, []string{"ping:1", "g", "big", "ping:2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws, _ := rawDial(t, s, "", nil)
			got := make(chan string, 16)
			ws.SetPongHandler(func(p string) error { got <- "ping:" + p; return nil })
			go func() {
				defer close(got)
				for {
					_, frame, err := ws.ReadMessage()
					if err != nil {
						return
					}
					var m map[string]any
					if err := jsonUnmarshal(frame, &m); err != nil || m["type"] != "pong" {
						got <- fmt.Sprintf("unexpected %s", frame)
						continue
					}
					got <- fmt.Sprint(m["re"])
				}
			}()
			for _, w := range tc.writes {
				if _, err := ws.NetConn().Write(w); err != nil {
					t.Fatal(err)
				}
			}
			// Pongs are written at once, answers through the mailbox: each kind in order.
			var gotPongs, gotAnswers, wantPongs, wantAnswers []string
			for _, w := range tc.want {
				if strings.HasPrefix(w, "ping:") {
					wantPongs = append(wantPongs, w)
				} else {
					wantAnswers = append(wantAnswers, w)
				}
			}
			for range tc.want {
				select {
				case g, ok := <-got:
					if !ok {
						t.Fatalf("connection ended after pongs %v and answers %v, want %v", gotPongs, gotAnswers, tc.want)
					}
					if strings.HasPrefix(g, "ping:") {
						gotPongs = append(gotPongs, g)
					} else {
						gotAnswers = append(gotAnswers, g)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("nothing after 10 s: pongs %v and answers %v, want %v", gotPongs, gotAnswers, tc.want)
				}
			}
			if fmt.Sprint(gotPongs) != fmt.Sprint(wantPongs) || fmt.Sprint(gotAnswers) != fmt.Sprint(wantAnswers) {
				t.Errorf("got pongs %v and answers %v, want %v and %v", gotPongs, gotAnswers, wantPongs, wantAnswers)
			}
			_ = ws.Close()
		})
	}
}

// split cuts b into writes of n bytes.
func split(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// TestBadControlFrame: a ping the protocol forbids (unmasked) is left to gorilla, which
// closes with 1002; the server goes on.
func TestBadControlFrame(t *testing.T) {
	s := start(t, serverOptions{})
	ws, _ := rawDial(t, s, "", nil)
	if _, err := ws.NetConn().Write([]byte{0x89, 0x02, 'h', 'i'}); err != nil {
		t.Fatal(err)
	}
	if got := closeCode(t, ws); got != websocket.CloseProtocolError {
		t.Errorf("close code: got %d, want %d", got, websocket.CloseProtocolError)
	}
	c, _ := join(t, s, "r", nil)
	if c.Welcome().Peer == "" {
		t.Errorf("no welcome after a bad frame on another connection")
	}
}

// TestIdleConnectionsHoldNoGoroutine: connections that joined a room and went quiet hold no
// goroutine on the server, and each still answers at once when its client speaks.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	s := start(t, serverOptions{})
	const n = 200
	base := runtime.NumGoroutine()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		ws, _ := rawDial(t, s, "", nil)
		if err := ws.WriteJSON(map[string]any{"type": "join", "room": fmt.Sprintf("r%d", i/4), "id": "j"}); err != nil {
			t.Fatal(err)
		}
		conns[i] = ws
	}
	for _, ws := range conns {
		for m := readJSON(t, ws); m["type"] != "joined"; m = readJSON(t, ws) {
		}
	}
	// The room's peer-joined messages and their flushes end too; then only the server's own
	// goroutines, and none per connection, are left.
	waitFor(t, "the idle connections hold no goroutine", func() bool { return runtime.NumGoroutine() <= base+n/10 })
	for i, ws := range conns {
		id := fmt.Sprint(i)
		if err := ws.WriteMessage(websocket.TextMessage, pingMessage(id)); err != nil {
			t.Fatal(err)
		}
		for m := readJSON(t, ws); m["type"] != "pong" || m["re"] != id; m = readJSON(t, ws) {
		}
	}
}
