package signaling_test

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// FuzzDispatch: any frame from a joined client is answered or relayed without crashing the
// hub or closing the connection (frames within max_message_bytes, under no rate limit).
func FuzzDispatch(f *testing.F) {
	for _, seed := range []string{
		`{"type":"join","room":"r"}`, `{"type":"leave"}`, `{"type":"broadcast","data":[1,2]}`,
		`{"type":"signal","to":"nobody","data":{}}`, `{"type":"ping","id":7}`, `nonsense`,
		`{"type":"join","room":"x","meta":{"k":"` + string(make([]byte, 10)) + `"}}`,
	} {
		f.Add([]byte(seed))
	}
	s := startF(f)
	ws, _, err := websocket.DefaultDialer.Dial(s.URL, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil { // welcome
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > 60000 {
			return
		}
		if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
			t.Fatal(err)
		}
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","id":"alive"}`)); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, got, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("the connection ended after %q: %v", frame, err)
			}
			if string(got[len(got)-len(`"re":"alive"}`):]) == `"re":"alive"}` {
				return
			}
		}
	})
}
