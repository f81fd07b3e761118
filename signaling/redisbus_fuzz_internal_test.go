package signaling

import (
	"github.com/icebox-rtc/icebox/signaling/protocol"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// FuzzBusMessage: whatever arrives on a node's channel (another node's bug, or anyone who can
// publish to the Redis) is delivered, handed on or counted as an error, never a panic; and a
// room record of any shape parses or is skipped.
func FuzzBusMessage(f *testing.F) {
	for _, seed := range []string{
		"dp1,p2\n{\"type\":\"signal\",\"from\":\"x\",\"data\":1}",
		"d\n", "d,,,\n{}", "dp1", `t{"id":"1","token":"t","user":"u","from":"n"}`, "t{", "h{\"id\":\"1\",\"session\":{\"peer\":\"p\"}}",
		"h[]", "pabc", "x", "", "dp1\n{\"type\":\"peer-joined\",\"room\":\"r\",\"peer\":\"p9\",\"meta\":{}}",
		"dp1\n{\"type\":\"peer-left\",\"room\":\"r\",\"peer\":\"p2\"}", "dp1\n{\"type\":\"peer-",
	} {
		f.Add(seed, "3|node|{\"a\":1}")
	}
	f.Fuzz(func(t *testing.T, payload, record string) {
		b := &RedisBus{
			node: "me", log: slog.New(slog.DiscardHandler),
			// Nothing listens there: publishing (a handover reply) fails at once.
			rdb:     redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}),
			deliver: map[string]func([]byte){}, held: map[string][][]byte{"p3": nil},
			rooms: map[string]map[string]string{"r": {"p1": ""}}, forward: map[string]forwarding{},
			waits: map[string]chan *handover{}, departed: map[string]struct{}{},
			seen: map[string][]protocol.Member{"r": {{Peer: "p1"}, {Peer: "p2"}}},
		}
		defer b.rdb.Close()
		b.metrics = newBusMetrics(prometheus.NewRegistry(), b)
		b.ctx, b.cancel = t.Context(), func() {}
		var got [][]byte
		b.deliver["p1"] = func(f []byte) { got = append(got, f) }
		msgs := make(chan *redis.Message, 1)
		msgs <- &redis.Message{Channel: nodeChannel("me"), Payload: payload}
		close(msgs)
		b.receive(msgs)
		if len(got) > 0 {
			list, frame, ok := strings.Cut(payload[1:], "\n")
			if payload[0] != kindDeliver || !ok || !slices.Contains(strings.Split(list, ","), "p1") {
				t.Fatalf("%q delivered something to p1", payload)
			}
			for _, f := range got {
				if string(f) != frame {
					t.Errorf("%q delivered %q to p1, want %q", payload, f, frame)
				}
			}
		}
		ms := parseRoom([]any{"p", record, "q", "1|n|"})
		for _, m := range ms {
			if m.Peer == "" {
				t.Errorf("a member without a peer from %q", record)
			}
		}
	})
}
