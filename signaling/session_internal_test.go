package signaling

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/icebox-rtc/icebox/credentials"
)

// quietConn is a connection whose writer never runs: the test plays the writer.
func quietConn() *conn {
	c := &conn{closing: make(chan struct{})}
	close(c.closing)
	return c
}

func frames(s *session, c *conn) []string {
	var out []string
	for {
		f, ok := s.next(c)
		if !ok {
			return out
		}
		out = append(out, fmt.Sprintf("%d:%s", f.seq, f.data))
		s.wrote(c, f.seq)
	}
}

func TestMailbox(t *testing.T) {
	var total atomic.Int64
	s := newSession("p", "t", credentials.Identity{}, 0, &total)
	c1 := quietConn()
	s.conn = c1
	for i := range 3 {
		s.push([]byte(fmt.Sprint(i)))
	}
	if got := frames(s, c1); fmt.Sprint(got) != "[1:0 2:1 3:2]" {
		t.Fatalf("got %v", got)
	}
	s.ack(2) // a pong: the client has 1 and 2
	if len(s.queue) != 1 {
		t.Errorf("after ack 2: %d frames kept, want 1", len(s.queue))
	}
	s.push([]byte("3"))

	// A resume that does not say what it has gets every frame no pong acknowledged.
	c2 := quietConn()
	s.conn = c2
	s.rewind(0, false)
	if got := frames(s, c2); fmt.Sprint(got) != "[3:2 4:3]" {
		t.Errorf("resume without last: got %v", got)
	}
	// One that says it has everything up to 3 gets 4 only, and 3 is forgotten.
	c3 := quietConn()
	s.conn = c3
	s.rewind(3, true)
	if got := frames(s, c3); fmt.Sprint(got) != "[4:3]" {
		t.Errorf("resume with last=3: got %v", got)
	}
	// An impossible last (ahead of what was written) is treated as unknown.
	c4 := quietConn()
	s.conn = c4
	s.rewind(99, true)
	if got := frames(s, c4); fmt.Sprint(got) != "[4:3]" {
		t.Errorf("resume with last=99: got %v", got)
	}
	// A stale connection writes nothing.
	if _, ok := s.next(c1); ok {
		t.Errorf("a replaced connection still gets frames")
	}
}

func TestMailboxBounds(t *testing.T) {
	var total atomic.Int64
	s := newSession("p", "t", credentials.Identity{}, 0, &total)
	for i := range maxUnsent {
		if s.push([]byte(fmt.Sprint(i))) != pushed {
			t.Fatalf("push %d refused", i)
		}
	}
	if s.push([]byte("one too many")) != full {
		t.Fatalf("push beyond maxUnsent accepted")
	}
	// Written frames are kept up to maxUnacked, then forgotten oldest first.
	c := quietConn()
	s.conn = c
	frames(s, c)
	for i := range 2 * maxUnacked {
		s.push([]byte(fmt.Sprint(i)))
		frames(s, c)
	}
	if len(s.queue) != maxUnacked {
		t.Errorf("kept %d written frames, want %d", len(s.queue), maxUnacked)
	}
}

// TestMailboxByteBudget: a mailbox holds at most its budget of bytes: written frames kept for a
// replay make room first; unsent frames past it mean the client reads too slowly. The node's
// total follows every byte in and out.
func TestMailboxByteBudget(t *testing.T) {
	var total atomic.Int64
	s := newSession("p", "t", credentials.Identity{}, 1000, &total)
	c := quietConn()
	s.conn = c
	blob := func(b byte) []byte { return []byte(strings.Repeat(string(b), 300)) }
	for _, b := range []byte("abc") {
		if s.push(blob(b)) != pushed {
			t.Fatalf("push %c refused", b)
		}
	}
	if got := total.Load(); got != 900 {
		t.Fatalf("node total: got %d, want 900", got)
	}
	frames(s, c) // written, not acknowledged: kept for a replay
	if s.push(blob('d')) != pushed || s.push(blob('e')) != pushed {
		t.Fatalf("pushes that fit once written frames are forgotten were refused")
	}
	if s.bytes > 1000 || len(s.queue) != 3 || s.queue[0].seq != 3 {
		t.Fatalf("after making room: %d bytes in %d frames from seq %d, want at most 1000 bytes in 3 frames from seq 3",
			s.bytes, len(s.queue), s.queue[0].seq)
	}
	if s.push(blob('f')) != pushed {
		t.Fatalf("push f refused")
	}
	if s.push(blob('g')) != full {
		t.Fatalf("unsent frames past the budget: accepted, want the session to end")
	}
	if got := total.Load(); got != int64(s.bytes) {
		t.Errorf("node total %d, mailbox %d bytes: they differ", got, s.bytes)
	}
	s.mu.Lock()
	s.empty()
	s.mu.Unlock()
	if got := total.Load(); got != 0 {
		t.Errorf("node total after the session ended: got %d, want 0", got)
	}
}
