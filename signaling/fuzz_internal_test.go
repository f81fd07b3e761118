package signaling

import (
	"encoding/json"
	"testing"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// FuzzDecode: the decoder never panics, and what it accepts is a message of the protocol whose
// parts re-encode as valid JSON.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"type":"join","room":"r","meta":{"a":1},"id":1}`,
		`{"type":"signal","to":"p","data":{"sdp":"v=0"}}`,
		`{"type":"broadcast","data":null}`,
		`{"type":"leave","id":"x"}`, `{"type":"ping"}`, `[]`, `{"type":null}`, `{"id":{}}`,
		`{"type":"join","room":"r","meta":"x"}`, "{\"type\":\"join\",\"room\":\"\u00e9\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, perr := decode(frame)
		if perr != nil {
			if perr.Code == "" || perr.Message == "" {
				t.Errorf("an error without code or message: %+v", perr)
			}
			if len(m.ID) > 0 && !json.Valid(m.ID) {
				t.Errorf("an invalid id survives: %q", m.ID)
			}
			return
		}
		if m.Type == protocol.TypeJoin && (!protocol.ValidRoom(m.Room) || len(m.Meta) > protocol.MaxMeta || m.Meta[0] != '{') {
			t.Errorf("accepted a bad join: %+v", m)
		}
		out := relayFrame(protocol.TypeSignal, "p", m.Data)
		if len(m.Data) > 0 && !json.Valid(out) {
			t.Errorf("re-encoded data is not JSON: %s", out)
		}
		_ = encode(protocol.Joined{Type: protocol.TypeJoined, Room: m.Room, Peers: []protocol.Member{{Peer: "p", Meta: m.Meta}}, Re: m.ID})
	})
}
