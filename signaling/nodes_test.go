package signaling_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/signaling"
	"github.com/icebox-rtc/icebox/signaling/protocol"
	"github.com/icebox-rtc/icebox/signaling/redistest"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

// testBroker is what the nodes of a multi-node test share: an in-process Loopback, whose
// nodes run on a clock the test moves, or a real redis-server, on real time.
type testBroker struct {
	name     string
	redis    *redistest.Server
	loopback *signaling.Loopback
	clock    *signaling.FakeClock // the Loopback's nodes' time
	presence time.Duration
}

// onBrokers runs test on a Loopback and on Redis.
func onBrokers(t *testing.T, test func(t *testing.T, br *testBroker)) {
	t.Run("loopback", func(t *testing.T) {
		clock := signaling.NewFakeClock()
		test(t, &testBroker{name: "loopback", loopback: signaling.NewLoopback(clock), clock: clock})
	})
	t.Run("redis", func(t *testing.T) {
		test(t, &testBroker{name: "redis", redis: redistest.Start(t, redistest.Options{Password: "s3cret"})})
	})
}

// twoNodes starts two hubs on br; presence is the nodes' presence timeout (0: the default).
func (br *testBroker) twoNodes(t *testing.T, config func(*signalingConfig), presence time.Duration) (*server, *server) {
	t.Helper()
	return br.nodes(t, serverOptions{presence: presence, config: config})
}

// nodes starts two hubs with o on br.
func (br *testBroker) nodes(t *testing.T, o serverOptions) (*server, *server) {
	t.Helper()
	br.presence = o.presence
	if o.presence == 0 {
		br.presence = signaling.DefaultPresenceTimeout
	}
	if br.redis != nil {
		o.redis = br.redis.URL
	} else {
		o.loopback, o.clock = br.loopback, br.clock
	}
	return start(t, o), start(t, o)
}

// twoNodes starts two hubs sharing one real redis-server.
func twoNodes(t *testing.T, r *redistest.Server, config func(*signalingConfig), presence time.Duration) (*server, *server) {
	t.Helper()
	return (&testBroker{redis: r}).twoNodes(t, config, presence)
}

// stop makes the broker unreachable; restart brings it back, empty.
func (br *testBroker) stop() {
	if br.redis != nil {
		br.redis.Stop()
	} else {
		br.loopback.Stop()
	}
}

func (br *testBroker) restart() {
	if br.redis != nil {
		br.redis.Restart()
	} else {
		br.loopback.Start(true)
	}
}

// elapse lets d pass: the Loopback's clock moves; on Redis real time passes while the test
// waits for what follows.
func (br *testBroker) elapse(d time.Duration) {
	if br.clock != nil {
		br.clock.Advance(d)
	}
}

// waitFor waits until cond holds, time passing a heartbeat at a time, or fails after 15 s.
func (br *testBroker) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, what, func() bool {
		if cond() {
			return true
		}
		br.elapse(br.presence / 3)
		return false
	})
}

func data(s string) string { return fmt.Sprintf("%q", s) }

// TestNodesTwoNodes: peers on two nodes in one room see each other and exchange signal and
// broadcast messages exactly as on one node, in order per sender.
func TestNodesTwoNodes(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		a, b := br.twoNodes(t, nil, 0)

		alice, joined := join(t, a, "r", map[string]any{"name": "alice"})
		if len(joined.Peers) != 0 {
			t.Fatalf("first joiner: got peers %s", joined.Raw)
		}
		bob, joined := join(t, b, "r", map[string]any{"name": "bob"})
		if len(joined.Peers) != 1 || joined.Peers[0].Peer != alice.Welcome().Peer || string(joined.Peers[0].Meta) != `{"name":"alice"}` {
			t.Fatalf("bob on node B: got %s, want alice (node A) with her meta", joined.Raw)
		}
		if m := expect(t, alice, "peer-joined"); m.Peer != bob.Welcome().Peer || string(m.Meta) != `{"name":"bob"}` {
			t.Fatalf("alice: got %s, want bob's peer-joined", m.Raw)
		}
		carol, joined := join(t, b, "r", nil)
		if len(joined.Peers) != 2 || joined.Peers[0].Peer != alice.Welcome().Peer || joined.Peers[1].Peer != bob.Welcome().Peer {
			t.Fatalf("carol: got %s, want alice then bob (join order)", joined.Raw)
		}
		expect(t, alice, "peer-joined")
		expect(t, bob, "peer-joined")

		// Signals across nodes, in order, both ways.
		for i := range 20 {
			if err := alice.Signal(bob.Welcome().Peer, fmt.Sprintf("a%d", i)); err != nil {
				t.Fatal(err)
			}
			if err := bob.Signal(alice.Welcome().Peer, fmt.Sprintf("b%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 20 {
			if m := expect(t, bob, "signal"); m.From != alice.Welcome().Peer || string(m.Data) != data(fmt.Sprintf("a%d", i)) {
				t.Fatalf("bob, signal %d: got %s", i, m.Raw)
			}
			if m := expect(t, alice, "signal"); m.From != bob.Welcome().Peer || string(m.Data) != data(fmt.Sprintf("b%d", i)) {
				t.Fatalf("alice, signal %d: got %s", i, m.Raw)
			}
		}
		// A broadcast from node B reaches node A and node B, not its sender.
		if err := bob.Broadcast("hello all"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*sigclient.Client{alice, carol} {
			if m := expect(t, c, "broadcast"); m.From != bob.Welcome().Peer || string(m.Data) != data("hello all") {
				t.Fatalf("broadcast: got %s", m.Raw)
			}
		}
		quiet(t, bob)
		// An unknown peer is an error, as on one node.
		if err := alice.Signal("nobody", "x"); err != nil {
			t.Fatal(err)
		}
		if m := expect(t, alice, "error"); m.Code != protocol.CodeUnknownPeer {
			t.Fatalf("signal to nobody: got %s", m.Raw)
		}

		// Leave: both nodes' peers hear it.
		if err := bob.Leave(ctx(t)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*sigclient.Client{alice, carol} {
			if m := expect(t, c, "peer-left"); m.Peer != bob.Welcome().Peer || m.Reason != protocol.ReasonLeft {
				t.Fatalf("after bob left: got %s", m.Raw)
			}
		}
		if err := alice.Signal(bob.Welcome().Peer, "gone?"); err != nil {
			t.Fatal(err)
		}
		if m := expect(t, alice, "error"); m.Code != protocol.CodeUnknownPeer {
			t.Fatalf("signal to a peer that left: got %s", m.Raw)
		}

		if published(t, a) == 0 {
			t.Errorf("node A published nothing on the bus")
		}
		if received(t, b) == 0 {
			t.Errorf("node B received nothing from the bus")
		}
	})
}

func published(t *testing.T, s *server) float64 {
	return counter(t, s, "icebox_signaling_bus_published_total", "", "")
}

func received(t *testing.T, s *server) float64 {
	return counter(t, s, "icebox_signaling_bus_received_total", "", "")
}

// TestNodesRoomFullAcrossNodes: joins racing on two nodes never overfill a room.
func TestNodesRoomFullAcrossNodes(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		a, b := br.twoNodes(t, func(c *signalingConfig) { c.MaxRoomSize = 3 }, 0)
		const perNode = 8
		var clients []*sigclient.Client
		for i := range 2 * perNode {
			s := a
			if i%2 == 1 {
				s = b
			}
			clients = append(clients, dial(t, s, sigclient.Options{}))
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		joined, full := 0, 0
		start := make(chan struct{})
		for _, c := range clients {
			wg.Go(func() {
				<-start
				_, err := c.Join(ctx(t), "full", nil)
				var se *sigclient.Error
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					joined++
				case errors.As(err, &se) && se.Code == protocol.CodeRoomFull:
					full++
				default:
					t.Errorf("join: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if joined != 3 || full != 2*perNode-3 {
			t.Fatalf("got %d joined and %d room-full, want 3 and %d", joined, full, 2*perNode-3)
		}
	})
}

// TestNodesNodeCrash: when a node dies, the peers it held leave their rooms on the other
// node with peer-left "disconnected", after resume_grace and the presence timeout.
func TestNodesNodeCrash(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		a, b := br.twoNodes(t, func(c *signalingConfig) { c.ResumeGrace = 500 * time.Millisecond }, time.Second)
		alice, _ := join(t, a, "r", nil)
		bob, _ := join(t, b, "r", nil)
		expect(t, alice, "peer-joined")

		// Node A dies: no heartbeat, no leave, its sockets cut.
		a.Bus.Crash()
		a.HTTP.CloseClientConnections()
		br.elapse(time.Second + 500*time.Millisecond) // the presence timeout and the grace

		if m := expect(t, bob, "peer-left"); m.Peer != alice.Welcome().Peer || m.Reason != protocol.ReasonDisconnected {
			t.Fatalf("bob: got %s, want alice's peer-left disconnected", m.Raw)
		}
		quiet(t, bob)
		// The room goes on without her: a new peer on node B sees only bob.
		_, joined := join(t, b, "r", nil)
		if len(joined.Peers) != 1 || joined.Peers[0].Peer != bob.Welcome().Peer {
			t.Fatalf("after the crash: got %s, want only bob", joined.Raw)
		}
	})
}

// TestNodesResumeOnOtherNode: a client that dropped from node A resumes on node B with its
// token: same peer, room and peers, and the messages queued for it on node A, in order; the
// room notices nothing, and the conversation goes on through node B.
func TestNodesResumeOnOtherNode(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		a, b := br.twoNodes(t, func(c *signalingConfig) { c.ResumeGrace = time.Minute }, 0)
		alice, _ := join(t, b, "r", nil) // on node B
		bob, _ := join(t, a, "r", nil)   // on node A
		carol, _ := join(t, a, "r", nil) // on node A
		expect(t, alice, "peer-joined")
		expect(t, alice, "peer-joined")
		expect(t, bob, "peer-joined")
		if err := alice.Signal(bob.Welcome().Peer, "before"); err != nil {
			t.Fatal(err)
		}
		expect(t, bob, "signal")
		bPeer, token, last := bob.Welcome().Peer, bob.Welcome().Resume, bob.LastSeq()
		if err := bob.Close(); err != nil { // dropped, no leave
			t.Fatal(err)
		}
		base := received(t, a)
		for i := range 5 {
			if err := alice.Signal(bPeer, fmt.Sprintf("queued %d", i)); err != nil {
				t.Fatal(err)
			}
			if err := carol.Signal(bPeer, fmt.Sprintf("carol %d", i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := alice.Ping(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if err := carol.Ping(ctx(t)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the queued messages reach bob's mailbox on node A", func() bool { return received(t, a) >= base+5 })

		bob2 := dial(t, b, sigclient.Options{Resume: token, Last: last})
		w := bob2.Welcome()
		if !w.Resumed || w.Peer != bPeer || w.Room != "r" || len(w.Peers) != 2 {
			t.Fatalf("resumed on node B: got %s, want resumed, peer %s, room r, alice and carol", w.Raw, bPeer)
		}
		var fromAlice, fromCarol []string
		for range 10 {
			m := expect(t, bob2, "signal")
			switch m.From {
			case alice.Welcome().Peer:
				fromAlice = append(fromAlice, string(m.Data))
			case carol.Welcome().Peer:
				fromCarol = append(fromCarol, string(m.Data))
			}
		}
		for i := range 5 {
			if i >= len(fromAlice) || fromAlice[i] != data(fmt.Sprintf("queued %d", i)) {
				t.Fatalf("alice's queued messages: got %v", fromAlice)
			}
			if i >= len(fromCarol) || fromCarol[i] != data(fmt.Sprintf("carol %d", i)) {
				t.Fatalf("carol's queued messages: got %v", fromCarol)
			}
		}
		quiet(t, alice)
		quiet(t, carol)

		// The session goes on from node B, to peers on both nodes.
		for _, c := range []*sigclient.Client{alice, carol} {
			if err := c.Signal(bPeer, "after"); err != nil {
				t.Fatal(err)
			}
			if m := expect(t, bob2, "signal"); m.From != c.Welcome().Peer || string(m.Data) != data("after") {
				t.Fatalf("after the move: got %s", m.Raw)
			}
			if err := bob2.Signal(c.Welcome().Peer, "hi"); err != nil {
				t.Fatal(err)
			}
			if m := expect(t, c, "signal"); m.From != bPeer {
				t.Fatalf("from bob after the move: got %s", m.Raw)
			}
		}
		// The old token is spent on every node.
		again := dial(t, a, sigclient.Options{Resume: token})
		if again.Welcome().Resumed || again.Welcome().Peer == bPeer {
			t.Fatalf("a used token resumed again: %s", again.Welcome().Raw)
		}
	})
}

// TestNodesResumeReplacesOpenConnection: when the old connection still looks open on node A
// (a client whose network changed), the resume on node B closes it as replaced.
func TestNodesResumeReplacesOpenConnection(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		a, b := br.twoNodes(t, nil, 0)
		alice, _ := join(t, a, "r", nil)
		bob, _ := join(t, b, "r", nil)
		expect(t, alice, "peer-joined")
		alice2 := dial(t, b, sigclient.Options{Resume: alice.Welcome().Resume, Last: alice.LastSeq()})
		if !alice2.Welcome().Resumed || alice2.Welcome().Peer != alice.Welcome().Peer {
			t.Fatalf("got %s, want alice resumed", alice2.Welcome().Raw)
		}
		select {
		case _, ok := <-alice.Messages():
			for ok {
				_, ok = <-alice.Messages()
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the old connection on node A stayed open")
		}
		if err := bob.Signal(alice.Welcome().Peer, "to the new one"); err != nil {
			t.Fatal(err)
		}
		if m := expect(t, alice2, "signal"); string(m.Data) != data("to the new one") {
			t.Fatalf("got %s", m.Raw)
		}
		quiet(t, bob)
	})
}

// TestNodesResumeAfterNodeDied: a client of a node that died resumes on another node: it
// keeps its peer id and room (the messages queued on the dead node are lost), and the room
// sees no peer-left.
func TestNodesResumeAfterNodeDied(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		a, b := br.twoNodes(t, func(c *signalingConfig) { c.ResumeGrace = time.Minute }, time.Second)
		alice, _ := join(t, a, "r", nil)
		bob, _ := join(t, b, "r", nil)
		expect(t, alice, "peer-joined")
		if err := bob.Signal(alice.Welcome().Peer, "one"); err != nil {
			t.Fatal(err)
		}
		expect(t, alice, "signal")
		a.Bus.Crash()
		a.HTTP.CloseClientConnections()
		// On the Loopback, node A's heartbeat is a presence timeout old; on Redis it is
		// fresh, and node B asks it first and adopts the session when no answer comes.
		br.elapse(time.Second)

		alice2 := dial(t, b, sigclient.Options{Resume: alice.Welcome().Resume, Last: alice.LastSeq()})
		w := alice2.Welcome()
		if !w.Resumed || w.Peer != alice.Welcome().Peer || w.Room != "r" || len(w.Peers) != 1 || w.Peers[0].Peer != bob.Welcome().Peer {
			t.Fatalf("got %s, want alice resumed in room r with bob", w.Raw)
		}
		if err := bob.Signal(alice.Welcome().Peer, "two"); err != nil {
			t.Fatal(err)
		}
		m := expect(t, alice2, "signal")
		if string(m.Data) != data("two") || m.Seq <= alice.LastSeq() {
			t.Fatalf("got %s, want two with a seq after %d", m.Raw, alice.LastSeq())
		}
		quiet(t, bob)
	})
}

// TestNodesOutage: with Redis gone, joins get unavailable and connected clients stay
// connected (peers on one node still reach each other); when Redis is back, empty after a
// restart, the nodes put their rooms back and a new cross-node exchange works.
func TestNodesOutage(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		a, b := br.twoNodes(t, nil, 900*time.Millisecond)
		alice, _ := join(t, a, "r", nil)
		bob, _ := join(t, b, "r", nil)
		carol, _ := join(t, a, "r", nil)
		expect(t, alice, "peer-joined")
		expect(t, alice, "peer-joined")
		expect(t, bob, "peer-joined")

		br.stop()
		br.waitFor(t, "both nodes notice that redis is gone", func() bool { return !a.Bus.Up() && !b.Bus.Up() })
		if counter(t, a, "icebox_signaling_bus_up", "", "") != 0 {
			t.Errorf("icebox_signaling_bus_up is not 0 during the outage")
		}
		c := dial(t, a, sigclient.Options{})
		var se *sigclient.Error
		if _, err := c.Join(ctx(t), "other", nil); !errors.As(err, &se) || se.Code != protocol.CodeUnavailable {
			t.Fatalf("join during the outage: got %v, want unavailable", err)
		}
		for _, cl := range []*sigclient.Client{alice, bob, carol} {
			if err := cl.Ping(ctx(t)); err != nil {
				t.Fatalf("a connected client lost its connection: %v", err)
			}
		}
		if err := alice.Signal(carol.Welcome().Peer, "same node"); err != nil {
			t.Fatal(err)
		}
		if m := expect(t, carol, "signal"); string(m.Data) != data("same node") {
			t.Fatalf("got %s", m.Raw)
		}
		// Bob's socket drops during the outage: he resumes on his node, with the peers he had.
		bob.Close()
		bob = dial(t, b, sigclient.Options{Resume: bob.Welcome().Resume, Last: bob.LastSeq()})
		if w := bob.Welcome(); !w.Resumed || w.Room != "r" || len(w.Peers) != 2 {
			t.Fatalf("resume during the outage: got %s, want resumed with alice and carol", w.Raw)
		}
		// Carol leaves during the outage: the room hears it once Redis is back.
		if err := carol.Leave(ctx(t)); err != nil {
			t.Fatal(err)
		}

		br.restart() // empty
		br.waitFor(t, "both nodes are back on redis", func() bool { return a.Bus.Up() && b.Bus.Up() })
		br.elapse(900 * time.Millisecond) // up for a presence timeout: the room is told
		for _, cl := range []*sigclient.Client{alice, bob} {
			if m := expect(t, cl, "peer-left"); m.Peer != carol.Welcome().Peer {
				t.Fatalf("after the outage: got %s, want carol's peer-left", m.Raw)
			}
		}
		// The room was put back: signals cross the nodes again.
		if err := alice.Signal(bob.Welcome().Peer, "after"); err != nil {
			t.Fatal(err)
		}
		if m := expect(t, bob, "signal"); string(m.Data) != data("after") {
			t.Fatalf("got %s", m.Raw)
		}
		// A new cross-node exchange.
		dave, _ := join(t, a, "x", nil)
		erin, joined := join(t, b, "x", nil)
		if len(joined.Peers) != 1 || joined.Peers[0].Peer != dave.Welcome().Peer {
			t.Fatalf("after the restart: got %s, want dave", joined.Raw)
		}
		expect(t, dave, "peer-joined")
		if err := erin.Signal(dave.Welcome().Peer, "new"); err != nil {
			t.Fatal(err)
		}
		if m := expect(t, dave, "signal"); string(m.Data) != data("new") {
			t.Fatalf("got %s", m.Raw)
		}
		quiet(t, alice)
		quiet(t, bob)
	})
}

// TestRedisUnreachable: NewRedisBus fails, naming the URL without its password.
func TestRedisUnreachable(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	r.Stop()
	url := fmt.Sprintf("redis://:hunter2@%s/0", r.Addr)
	_, err := signaling.NewRedisBus(t.Context(), signaling.RedisOptions{URL: url})
	if err == nil {
		t.Fatal("no error without redis")
	}
	if msg := err.Error(); !containsAll(msg, r.Addr) || containsAll(msg, "hunter2") {
		t.Fatalf("error %q: want the address, without the password", msg)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds, or fails after 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNodesChurn: while peers on both nodes broadcast, other peers keep dropping and resuming
// on the other node; each of them still gets every message of every sender exactly once and
// in order, as from one icebox.
func TestNodesChurn(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		nodes := [2]*server{}
		nodes[0], nodes[1] = br.twoNodes(t, func(c *signalingConfig) { c.ResumeGrace = time.Minute }, 0)
		const senders, receivers, perSender, moves = 3, 4, 60, 4

		type rx struct {
			c    *sigclient.Client
			node int
		}
		var rxs []*rx
		for i := range receivers {
			c, _ := join(t, nodes[i%2], "churn", nil)
			rxs = append(rxs, &rx{c: c, node: i % 2})
		}
		var txs []*sigclient.Client
		for i := range senders {
			c, _ := join(t, nodes[(i+1)%2], "churn", nil)
			txs = append(txs, c)
			go func() { // senders hear each other: keep their mailboxes empty
				for range c.Messages() {
				}
			}()
		}

		var wg sync.WaitGroup
		results := make([]map[string][]int, receivers)
		trail := make([][]string, receivers) // what each receiver read: connection, seq, sender and k
		for i, x := range rxs {
			results[i] = map[string][]int{}
			wg.Go(func() {
				got, conn := 0, 0
				record := func(m sigclient.Message) bool {
					if m.Type != "broadcast" {
						return true
					}
					var k int
					if err := jsonUnmarshal(m.Data, &k); err != nil {
						t.Errorf("receiver %d: data %s", i, m.Data)
						return false
					}
					results[i][m.From] = append(results[i][m.From], k)
					trail[i] = append(trail[i], fmt.Sprintf("c%d/s%d/%.4s:%d", conn, m.Seq, m.From, k))
					got++
					return true
				}
				for got < senders*perSender {
					select {
					case m, ok := <-x.c.Messages():
						if !ok {
							t.Errorf("receiver %d: connection ended: %v", i, x.c.Err())
							return
						}
						if !record(m) {
							return
						}
						if got%(senders*perSender/(moves+1)) == 0 && got < senders*perSender {
							// Drop, and resume on the other node, from the last message it has:
							// what the client read before the socket closed, it keeps.
							_ = x.c.Close()
							for m := range x.c.Messages() {
								if !record(m) {
									return
								}
							}
							token, last := x.c.Welcome().Resume, x.c.LastSeq()
							x.node = 1 - x.node
							c, err := sigclient.Dial(ctx(t), nodes[x.node].URL, sigclient.Options{Resume: token, Last: last})
							if err != nil {
								t.Errorf("receiver %d: resume: %v", i, err)
								return
							}
							if !c.Welcome().Resumed {
								t.Errorf("receiver %d: not resumed: %s", i, c.Welcome().Raw)
								return
							}
							x.c = c // and it may move on again at once
							conn++
						}
					case <-time.After(20 * time.Second):
						t.Errorf("receiver %d: stuck after %d messages", i, got)
						return
					}
				}
			})
		}
		for k := range perSender {
			for _, c := range txs {
				if err := c.Broadcast(k); err != nil {
					t.Fatal(err)
				}
			}
		}
		wg.Wait()
		for _, x := range rxs {
			_ = x.c.Close()
		}
		for i := range receivers {
			for _, c := range txs {
				ks := results[i][c.Welcome().Peer]
				if len(ks) != perSender {
					t.Errorf("receiver %d got %d messages from a sender, want %d: %v", i, len(ks), perSender, ks)
					continue
				}
				for k, v := range ks {
					if v != k {
						t.Errorf("receiver %d: message %d from a sender is %d (order or duplicate): %v\nread (connection/seq/sender:k): %v", i, k, v, ks, trail[i])
						break
					}
				}
			}
		}
	})
}

// TestNodesRestartThenNodeDies: the broker restarts empty, and the nodes put back what they
// hold (rooms, peers, sessions and their resume tokens); then a node dies, and its clients
// resume on the other node with their peer ids and rooms (at least 95% must; all do here),
// and no room keeps a stale peer.
func TestNodesRestartThenNodeDies(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		const rooms, perRoom = 10, 4
		a, b := br.twoNodes(t, func(c *signalingConfig) { c.ResumeGrace = time.Minute }, time.Second)
		type member struct {
			c    *sigclient.Client
			room string
		}
		var onA []member
		for r := range rooms {
			room := fmt.Sprintf("room-%d", r)
			join(t, b, room, nil) // someone on node B in every room
			for range perRoom {
				c, _ := join(t, a, room, nil)
				onA = append(onA, member{c, room})
			}
		}

		br.stop()
		br.waitFor(t, "both nodes notice that the broker is gone", func() bool { return !a.Bus.Up() && !b.Bus.Up() })
		br.restart() // empty
		br.waitFor(t, "both nodes are back and put back what they hold", func() bool { return a.Bus.Up() && b.Bus.Up() })

		a.Bus.Crash()
		a.HTTP.CloseClientConnections()
		br.elapse(time.Second) // on the Loopback, node A's heartbeat is a presence timeout old
		var mu sync.Mutex
		var wg sync.WaitGroup
		resumed := 0
		for _, m := range onA {
			wg.Go(func() {
				c, err := sigclient.Dial(ctx(t), b.URL, sigclient.Options{Resume: m.c.Welcome().Resume, Last: m.c.LastSeq()})
				if err != nil {
					t.Errorf("resume: %v", err)
					return
				}
				defer c.Close()
				w := c.Welcome()
				mu.Lock()
				defer mu.Unlock()
				if w.Resumed && w.Peer == m.c.Welcome().Peer && w.Room == m.room {
					resumed++
				}
			})
		}
		wg.Wait()
		if resumed < len(onA)*95/100 {
			t.Fatalf("%d of %d clients of the dead node resumed on the other, want at least 95%%", resumed, len(onA))
		}
		// Every room holds its peers once: a newcomer sees the one of node B and the resumed.
		for r := range rooms {
			_, joined := join(t, b, fmt.Sprintf("room-%d", r), nil)
			if len(joined.Peers) != 1+perRoom {
				t.Errorf("room-%d: got %d peers, want %d", r, len(joined.Peers), 1+perRoom)
			}
		}
	})
}

// TestNodesOutageLog: an outage is logged as it starts and ends, and meanwhile at most once a
// summary period, however many operations fail; the metrics count every one.
func TestNodesOutageLog(t *testing.T) {
	onBrokers(t, func(t *testing.T, br *testBroker) {
		logs := &logRecorder{}
		a, b := br.nodes(t, serverOptions{presence: 900 * time.Millisecond, logger: slog.New(logs)})
		alice, _ := join(t, a, "r", nil)
		bob, _ := join(t, b, "r", nil)
		expect(t, alice, "peer-joined")
		br.stop()
		br.waitFor(t, "both nodes notice that the broker is gone", func() bool { return !a.Bus.Up() && !b.Bus.Up() })

		const failures = 300
		carol := dial(t, a, sigclient.Options{})
		for i := range failures {
			if _, err := carol.Join(ctx(t), "another", nil); !isCode(err, "unavailable") {
				t.Fatalf("join %d during the outage: %v", i, err)
			}
			if err := alice.Signal(bob.Welcome().Peer, i); err != nil {
				t.Fatal(err)
			}
		}
		if err := alice.Ping(ctx(t)); err != nil { // the signals were handled
			t.Fatal(err)
		}
		if got := counter(t, a, "icebox_signaling_bus_errors_total", "", ""); got < 2*failures {
			t.Errorf("bus errors counted: got %v, want at least %d", got, 2*failures)
		}
		if got := logs.count(slog.LevelWarn); got > 2 {
			t.Errorf("%d warnings or errors logged during the outage, want the loss of the broker only (once per node):\n%s", got, logs)
		}
		if br.clock != nil { // a summary period passes: one line per node says what failed
			br.elapse(time.Minute)
			waitFor(t, "the summary is logged", func() bool { return logs.find("signaling: redis still unreachable; operations failed") >= 1 })
		}
		br.restart()
		br.waitFor(t, "both nodes are back", func() bool { return a.Bus.Up() && b.Bus.Up() })
		if got := logs.find("signaling: redis is back"); got != 2 {
			t.Errorf("got %d lines saying the broker is back, want one per node", got)
		}
		if got := logs.count(slog.LevelWarn); got > 4 {
			t.Errorf("%d warnings or errors logged for the outage, want the loss and one summary per node:\n%s", got, logs)
		}
	})
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.records = append(l.records, r.Clone())
	l.mu.Unlock()
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// count is the number of records at level or above.
func (l *logRecorder) count(level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r.Level >= level {
			n++
		}
	}
	return n
}

// find is the number of records with msg.
func (l *logRecorder) find(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r.Message == msg {
			n++
		}
	}
	return n
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.records {
		fmt.Fprintf(&b, "%s %s\n", r.Level, r.Message)
	}
	return b.String()
}
