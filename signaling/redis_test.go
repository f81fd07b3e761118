package signaling_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/signaling"
	"github.com/icebox-rtc/icebox/signaling/protocol"
	"github.com/icebox-rtc/icebox/signaling/redistest"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

// twoNodes starts two hubs sharing one real redis-server.
func twoNodes(t *testing.T, r *redistest.Server, config func(*signalingConfig), presence time.Duration) (*server, *server) {
	t.Helper()
	o := serverOptions{redis: r.URL, presence: presence, config: config}
	return start(t, o), start(t, o)
}

func data(s string) string { return fmt.Sprintf("%q", s) }

// TestRedisTwoNodes: peers on two nodes in one room see each other and exchange signal and
// broadcast messages exactly as on one node, in order per sender.
func TestRedisTwoNodes(t *testing.T) {
	r := redistest.Start(t, redistest.Options{Password: "s3cret"})
	a, b := twoNodes(t, r, nil, 0)

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
}

func published(t *testing.T, s *server) float64 {
	return counter(t, s, "icebox_signaling_bus_published_total", "", "")
}

func received(t *testing.T, s *server) float64 {
	return counter(t, s, "icebox_signaling_bus_received_total", "", "")
}

// TestRedisRoomFullAcrossNodes: joins racing on two nodes never overfill a room.
func TestRedisRoomFullAcrossNodes(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	a, b := twoNodes(t, r, func(c *signalingConfig) { c.MaxRoomSize = 3 }, 0)
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
}

// TestRedisNodeCrash: when a node dies, the peers it held leave their rooms on the other
// node with peer-left "disconnected", after resume_grace and the presence timeout.
func TestRedisNodeCrash(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	a, b := twoNodes(t, r, func(c *signalingConfig) { c.ResumeGrace = 500 * time.Millisecond }, time.Second)
	alice, _ := join(t, a, "r", nil)
	bob, _ := join(t, b, "r", nil)
	expect(t, alice, "peer-joined")

	// Node A dies: no heartbeat, no leave, its sockets cut.
	a.Bus.Crash()
	a.HTTP.CloseClientConnections()

	if m := expect(t, bob, "peer-left"); m.Peer != alice.Welcome().Peer || m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("bob: got %s, want alice's peer-left disconnected", m.Raw)
	}
	quiet(t, bob)
	// The room goes on without her: a new peer on node B sees only bob.
	_, joined := join(t, b, "r", nil)
	if len(joined.Peers) != 1 || joined.Peers[0].Peer != bob.Welcome().Peer {
		t.Fatalf("after the crash: got %s, want only bob", joined.Raw)
	}
}

// TestRedisResumeOnOtherNode: a client that dropped from node A resumes on node B with its
// token: same peer, room and peers, and the messages queued for it on node A, in order; the
// room notices nothing, and the conversation goes on through node B.
func TestRedisResumeOnOtherNode(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	a, b := twoNodes(t, r, func(c *signalingConfig) { c.ResumeGrace = time.Minute }, 0)
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
}

// TestRedisResumeReplacesOpenConnection: when the old connection still looks open on node A
// (a client whose network changed), the resume on node B closes it as replaced.
func TestRedisResumeReplacesOpenConnection(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	a, b := twoNodes(t, r, nil, 0)
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
}

// TestRedisResumeAfterNodeDied: a client of a node that died resumes on another node: it
// keeps its peer id and room (the messages queued on the dead node are lost), and the room
// sees no peer-left.
func TestRedisResumeAfterNodeDied(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	a, b := twoNodes(t, r, func(c *signalingConfig) { c.ResumeGrace = time.Minute }, time.Second)
	alice, _ := join(t, a, "r", nil)
	bob, _ := join(t, b, "r", nil)
	expect(t, alice, "peer-joined")
	if err := bob.Signal(alice.Welcome().Peer, "one"); err != nil {
		t.Fatal(err)
	}
	expect(t, alice, "signal")
	a.Bus.Crash()
	a.HTTP.CloseClientConnections()

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
}

// TestRedisOutage: with Redis gone, joins get unavailable and connected clients stay
// connected (peers on one node still reach each other); when Redis is back, empty after a
// restart, the nodes put their rooms back and a new cross-node exchange works.
func TestRedisOutage(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	a, b := twoNodes(t, r, nil, 900*time.Millisecond)
	alice, _ := join(t, a, "r", nil)
	bob, _ := join(t, b, "r", nil)
	carol, _ := join(t, a, "r", nil)
	expect(t, alice, "peer-joined")
	expect(t, alice, "peer-joined")
	expect(t, bob, "peer-joined")

	r.Stop()
	waitFor(t, "both nodes notice that redis is gone", func() bool { return !a.Bus.Up() && !b.Bus.Up() })
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

	r.Restart() // empty
	waitFor(t, "both nodes are back on redis", func() bool { return a.Bus.Up() && b.Bus.Up() })
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

// TestRedisChurn: while peers on both nodes broadcast, other peers keep dropping and resuming
// on the other node; each of them still gets every message of every sender exactly once and
// in order, as from one icebox.
func TestRedisChurn(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	nodes := [2]*server{}
	nodes[0], nodes[1] = twoNodes(t, r, func(c *signalingConfig) { c.ResumeGrace = time.Minute }, 0)
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
	for i, x := range rxs {
		results[i] = map[string][]int{}
		wg.Go(func() {
			got := 0
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
		time.Sleep(2 * time.Millisecond)
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
					t.Errorf("receiver %d: message %d from a sender is %d (order or duplicate): %v", i, k, v, ks)
					break
				}
			}
		}
	}
}
