package signaling

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// FuzzBusMessage: whatever arrives on a node's channel (another node's bug, or anyone who can
// publish to the Redis) is delivered, handed on or counted as an error, never a panic; and a
// room record of any shape parses or is skipped.
func FuzzBusMessage(f *testing.F) {
	for _, seed := range []string{
		"dp1,p2\n{\"type\":\"signal\",\"from\":\"x\",\"data\":1}",
		"d\n", "d,,,\n{}", "dp1", `t{"id":"1","token":"t","user":"u","from":"n"}`, "t{", "h{\"id\":\"1\",\"session\":{\"peer\":\"p\"}}",
		"h[]", "pabc", "x", "", "jr\np9\n{}\np1", "lr\np2\nleft\np1,p3", "j\n\n\n", "l", "mp1|n", "kp1|n", "ep1", "fp1\n{}",
	} {
		f.Add(seed, "3|node|{\"a\":1}")
	}
	f.Fuzz(func(t *testing.T, payload, record string) {
		l := NewLoopback(nil)
		o := NodeOptions{Node: "me"}
		o.defaults()
		b := newNodeBus(&loopbackBroker{l: l, node: "me", bag: newMailbag()}, o)
		defer b.crash()
		var got [][]byte
		b.deliv.attach("p1", func(f []byte) { got = append(got, f) })
		b.view.joined("r", protocol.Member{Peer: "p1"}, []protocol.Member{{Peer: "p2"}})
		b.received([]byte(payload))
		for _, f := range got {
			if !json.Valid(f) {
				t.Fatalf("%q delivered %q to p1: not JSON", payload, f)
			}
		}
		if len(got) > 0 {
			switch payload[0] {
			case kindDeliver, kindForward:
				list, frame, ok := strings.Cut(payload[1:], "\n")
				if !ok || !slices.Contains(strings.Split(list, ","), "p1") || string(got[0]) != frame {
					t.Fatalf("%q delivered %q to p1", payload, got[0])
				}
			case kindJoined, kindLeft:
				if _, _, _, to, ok := parseEvent([]byte(payload[1:])); !ok || !slices.Contains(to, "p1") {
					t.Fatalf("%q delivered %q to p1", payload, got[0])
				}
			default:
				t.Fatalf("%q delivered %q to p1", payload, got[0])
			}
		}
		for _, m := range parseMembers([]string{"p", record, "q", "1|n|"}) {
			if m.Peer == "" {
				t.Errorf("a member without a peer from %q", record)
			}
		}
	})
}
