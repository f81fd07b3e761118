package signaling

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	"github.com/icebox-rtc/icebox/signaling/protocol"
	"github.com/icebox-rtc/icebox/signaling/redistest"
)

// TestBrokerAnswersAgain: a join or leave run again with the same op (what a Redis client
// does when it did not get the reply) answers what the first run answered, though the room
// changed in between; outcome finds that answer; another op is a new call. On the Loopback
// and on a real redis-server. (Joins whose reply was lost answered the members then, and a
// member that had left in between got to the joiner as a peer-left of a peer it was never
// told about: TestJoinedFirst caught it under load.)
func TestBrokerAnswersAgain(t *testing.T) {
	ctx := context.Background()
	brokers := map[string]func(t *testing.T) broker{
		"loopback": func(*testing.T) broker {
			l := NewLoopback(nil)
			return &loopbackBroker{l: l, node: "n1", bag: newMailbag()}
		},
		"redis": func(t *testing.T) broker {
			r := redistest.Start(t, redistest.Options{})
			b, err := newRedisBroker(ctx, r.URL, "n1", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.close() })
			return b
		},
	}
	peers := func(ms []memberRec) []string {
		out := []string{}
		for _, m := range ms {
			out = append(out, m.Peer)
		}
		return out
	}
	member := func(p string) protocol.Member { return protocol.Member{Peer: p, Meta: []byte(`{"name":"` + p + `"}`)} }
	for name, newBroker := range brokers {
		t.Run(name, func(t *testing.T) {
			br := newBroker(t)
			for _, p := range []string{"x", "y"} {
				if _, err := br.join(ctx, "n2", "r", member(p), 8, "n2/"+p); err != nil {
					t.Fatal(err)
				}
			}
			before, err := br.join(ctx, "n1", "r", member("a"), 8, "n1/1")
			if err != nil || !slices.Equal(peers(before), []string{"x", "y"}) {
				t.Fatalf("a joins: %v %v, want x y", peers(before), err)
			}
			if _, left, err := br.leave(ctx, "n2", "r", "x", "left", "", "n2/x-leaves"); !left || err != nil {
				t.Fatalf("x leaves: %v %v", left, err)
			}
			if _, err := br.join(ctx, "n2", "r", member("z"), 8, "n2/z"); err != nil {
				t.Fatal(err)
			}

			// a's join again, the same op: the same answer, x included, nothing changed.
			again, err := br.join(ctx, "n1", "r", member("a"), 8, "n1/1")
			if err != nil || !slices.Equal(peers(again), []string{"x", "y"}) {
				t.Errorf("a's join run again: %v %v, want x y (its first answer)", peers(again), err)
			}
			if len(again) == 2 && string(again[0].Meta) != `{"name":"x"}` {
				t.Errorf("a's join run again: x's meta %s", again[0].Meta)
			}
			got, found, err := br.outcome(ctx, "a", "n1/1")
			if err != nil || !found || !slices.Equal(peers(got), []string{"x", "y"}) {
				t.Errorf("outcome of a's join: %v %v %v, want x y", peers(got), found, err)
			}
			// Another op of a join already in: those in now that joined earlier.
			if other, err := br.join(ctx, "n1", "r", member("a"), 8, "n1/2"); err != nil || !slices.Equal(peers(other), []string{"y"}) {
				t.Errorf("a's join under another op: %v %v, want y", peers(other), err)
			}
			if _, found, err := br.outcome(ctx, "a", "n1/unknown"); found || err != nil {
				t.Errorf("outcome of an op never run: found %v, %v", found, err)
			}
			ms, err := br.members(ctx, "r")
			if err != nil || !slices.Equal(peers(ms), []string{"y", "a", "z"}) {
				t.Errorf("members: %v %v, want y a z", peers(ms), err)
			}

			// a leaves; w joins; a's leave again: left, with the members left then.
			rest, left, err := br.leave(ctx, "n1", "r", "a", "left", "", "n1/3")
			if err != nil || !left || !slices.Equal(peers(rest), []string{"y", "z"}) {
				t.Fatalf("a leaves: %v %v %v, want y z", peers(rest), left, err)
			}
			if _, err := br.join(ctx, "n2", "r", member("w"), 8, "n2/w"); err != nil {
				t.Fatal(err)
			}
			rest, left, err = br.leave(ctx, "n1", "r", "a", "left", "", "n1/3")
			if err != nil || !left || !slices.Equal(peers(rest), []string{"y", "z"}) {
				t.Errorf("a's leave run again: %v %v %v, want left, y z", peers(rest), left, err)
			}
			got, found, err = br.outcome(ctx, "a", "n1/3")
			if err != nil || !found || !slices.Equal(peers(got), []string{"y", "z"}) {
				t.Errorf("outcome of a's leave: %v %v %v, want y z", peers(got), found, err)
			}
			if _, left, err := br.leave(ctx, "n1", "r", "a", "left", "", "n1/4"); left || err != nil {
				t.Errorf("a leave under another op of a peer not there: left %v, %v", left, err)
			}
			// The leave that empties the room keeps its answer too.
			for _, p := range []string{"y", "z", "w"} {
				if _, _, err := br.leave(ctx, "n2", "r", p, "left", "", "n2/"+p+"-leaves"); err != nil {
					t.Fatal(err)
				}
			}
			if rest, found, err := br.outcome(ctx, "w", "n2/w-leaves"); err != nil || !found || len(rest) != 0 {
				t.Errorf("outcome of the last leave: %v %v %v, want found, nobody left", peers(rest), found, err)
			}
		})
	}
}
