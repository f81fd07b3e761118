package signaling_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icebox-rtc/icebox/signaling/protocol"
	"github.com/icebox-rtc/icebox/signaling/redistest"
)

// TestJoinedFirst: 1,000 clients join 50 rooms at once, on one node and on two, and a fifth
// of them leave again as soon as they are in. On every connection joined comes before any
// other message about its room, every peer-joined names a peer not yet known and every
// peer-left one that is, and in the end each client's view (joined.peers, then peer-joined
// and peer-left) is its room's membership.
func TestJoinedFirst(t *testing.T) {
	const clients, rooms = 1000, 50
	config := func(c *signalingConfig) { c.MaxRoomSize = clients / rooms }
	t.Run("one node", func(t *testing.T) {
		joinStorm(t, []*server{start(t, serverOptions{config: config})}, clients, rooms)
	})
	t.Run("two nodes", func(t *testing.T) {
		r := redistest.Start(t, redistest.Options{})
		a, b := twoNodes(t, r, config, 0)
		joinStorm(t, []*server{a, b}, clients, rooms)
	})
}

// stormClient is one client of joinStorm, with what it saw.
type stormClient struct {
	ws         *websocket.Conn
	room       string
	leaves     bool
	peer       string
	mu         sync.Mutex
	joined     bool
	left       bool
	view       map[string]bool
	violations []string
}

func (c *stormClient) record(m protocol.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left || (m.Room != "" && m.Room != c.room) {
		return
	}
	bad := func(format string, args ...any) { c.violations = append(c.violations, fmt.Sprintf(format, args...)) }
	switch m.Type {
	case protocol.TypeJoined:
		if c.joined {
			bad("a second joined: %s", m.Raw)
		}
		c.joined, c.view = true, map[string]bool{}
		for _, p := range m.Peers {
			c.view[p.Peer] = true
		}
	case protocol.TypePeerJoined, protocol.TypePeerLeft, protocol.TypeBroadcast, protocol.TypeSignal:
		switch {
		case !c.joined:
			bad("before joined: %s", m.Raw)
		case m.Type == protocol.TypePeerJoined && c.view[m.Peer]:
			bad("peer-joined of a peer it knows: %s", m.Raw)
		case m.Type == protocol.TypePeerLeft && !c.view[m.Peer]:
			bad("peer-left of a peer it does not know: %s", m.Raw)
		case m.Type == protocol.TypePeerJoined:
			c.view[m.Peer] = true
		case m.Type == protocol.TypePeerLeft:
			delete(c.view, m.Peer)
		}
	case protocol.TypeLeft:
		c.left = true
	}
}

// joinStorm runs the clients of TestJoinedFirst over nodes (client i on node i%len(nodes)).
func joinStorm(t *testing.T, nodes []*server, clients, rooms int) {
	cs := make([]*stormClient, clients)
	var dials sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range cs {
		dials.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ws, _, err := websocket.DefaultDialer.Dial(nodes[i%len(nodes)].URL, nil)
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			var w protocol.Message
			if err := ws.ReadJSON(&w); err != nil {
				t.Errorf("welcome %d: %v", i, err)
				return
			}
			cs[i] = &stormClient{ws: ws, room: fmt.Sprintf("r%d", i%rooms), leaves: i%5 == 4, peer: w.Peer}
		})
	}
	dials.Wait()
	if t.Failed() {
		return
	}
	t.Cleanup(func() {
		for _, c := range cs {
			_ = c.ws.Close()
		}
	})
	var readers sync.WaitGroup
	startLine := make(chan struct{})
	for i, c := range cs {
		node := nodes[i%len(nodes)]
		readers.Go(func() {
			<-startLine
			if err := c.ws.WriteJSON(map[string]any{"type": "join", "room": c.room}); err != nil {
				t.Errorf("join: %v", err)
				return
			}
			_ = c.ws.SetReadDeadline(time.Now().Add(3 * time.Minute))
			retries := 0
			for {
				_, frame, err := c.ws.ReadMessage()
				if err != nil {
					return // closed at the end of the test
				}
				var m protocol.Message
				if err := json.Unmarshal(frame, &m); err != nil {
					t.Errorf("frame %s: %v", frame, err)
					return
				}
				m.Raw = frame
				if m.Type == protocol.TypeError && m.Code == protocol.CodeUnavailable && retries < 20 {
					// A node under this load may find Redis too slow for a while: a client
					// tries again once the node has it back, as the SDK does.
					retries++
					waitFor(t, "the node has redis back", func() bool { return node.Bus == nil || node.Bus.Up() })
					if err := c.ws.WriteJSON(map[string]any{"type": "join", "room": c.room}); err != nil {
						t.Errorf("join: %v", err)
						return
					}
					continue
				}
				if m.Type == protocol.TypeError {
					t.Errorf("client in %s: %s", c.room, frame)
				}
				c.record(m)
				if m.Type == protocol.TypeJoined && c.leaves {
					if err := c.ws.WriteJSON(map[string]any{"type": "leave"}); err != nil {
						t.Errorf("leave: %v", err)
						return
					}
				}
			}
		})
	}
	close(startLine)

	// The rooms as they end: the clients that stay.
	members := map[string]map[string]bool{}
	for _, c := range cs {
		if members[c.room] == nil {
			members[c.room] = map[string]bool{}
		}
		if !c.leaves {
			members[c.room][c.peer] = true
		}
	}
	settled := func() (bool, string) {
		for _, c := range cs {
			c.mu.Lock()
			want := maps.Clone(members[c.room])
			delete(want, c.peer)
			done := (c.leaves && c.left) || (!c.leaves && c.joined && maps.Equal(c.view, want))
			view := slices.Sorted(maps.Keys(c.view))
			c.mu.Unlock()
			if !done {
				return false, fmt.Sprintf("a client of %s (leaves: %v) sees %v, want %v", c.room, c.leaves, view, slices.Sorted(maps.Keys(want)))
			}
		}
		return true, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	why := ""
	for ok := false; !ok; {
		if ok, why = settled(); ok {
			break
		}
		select {
		case <-ctx.Done():
			ok = true
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer func() {
		if why != "" {
			t.Errorf("the views did not settle: %s", why)
		}
	}()
	n := 0
	for _, c := range cs {
		c.mu.Lock()
		for _, v := range c.violations {
			if n < 10 {
				t.Errorf("client in %s: %s", c.room, v)
			}
			n++
		}
		c.mu.Unlock()
	}
	if n > 0 {
		t.Errorf("%d violations in all", n)
	}
}
