package signaling

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/icebox-rtc/icebox/credentials"
)

// Mailbox limits.
const (
	// maxUnsent frames may wait for a peer (a slow reader, or one between a drop and its
	// resume); one more ends the session: it could not be resumed without a gap.
	maxUnsent = 256
	// maxUnacked frames written but not yet known to be received are kept for a resume.
	maxUnacked = 256
)

// frame is one message for a peer, numbered in its session.
type frame struct {
	seq  uint64
	data []byte // the JSON object without seq: {"type":...}
}

// session is one peer: its id, room and resume token, and its mailbox. It outlives a dropped
// connection for resume_grace.
//
// Every message after the welcome goes through the mailbox and carries "seq", counting from 1.
// Frames stay in the mailbox until the client is known to have them: a WebSocket ping carries
// the seq last written and its pong acknowledges every frame up to it; a resume may say
// ?last=SEQ. So a resume replays what a silently dropped socket swallowed, and the client can
// drop duplicates by seq.
type session struct {
	peer string
	id   credentials.Identity
	op   sync.Mutex // serialises the handling of the session's messages

	mu      sync.Mutex
	room    string
	meta    json.RawMessage
	token   string
	conn    *conn       // nil while disconnected
	queue   []frame     // unacknowledged frames, by seq: written ones, then unsent ones
	written uint64      // highest seq ever written: what lies beyond counts against maxUnsent
	cursor  uint64      // last seq written to the current connection (lower after a resume)
	nextSeq uint64      // seq of the next frame
	grace   *time.Timer // running while disconnected
	ended   bool
}

func newSession(peer, token string, id credentials.Identity) *session {
	return &session{peer: peer, token: token, id: id, nextSeq: 1}
}

// push appends data to the mailbox; false means it is full and the session must end.
func (s *session) push(data []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return true // gone: nothing to deliver, nothing to end
	}
	if s.nextSeq-1-s.written >= maxUnsent {
		return false
	}
	s.queue = append(s.queue, frame{seq: s.nextSeq, data: data})
	s.nextSeq++
	if s.conn != nil {
		s.conn.kick()
	}
	return true
}

// next returns the next frame c has to write, if c is still the session's connection.
func (s *session) next(c *conn) (frame, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != c || s.ended || s.cursor+1 >= s.nextSeq {
		return frame{}, false
	}
	i := s.index(s.cursor + 1)
	if i < 0 { // cannot happen: frames are only dropped up to the cursor
		return frame{}, false
	}
	return s.queue[i], true
}

// index is where the frame seq sits in the queue; it is there (seq > every dropped frame).
func (s *session) index(seq uint64) int {
	return len(s.queue) - int(s.nextSeq-seq)
}

// wrote records that c wrote the frame seq, and forgets the oldest written frames beyond
// maxUnacked.
func (s *session) wrote(c *conn, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A frame written by a connection that dropped meanwhile still went out: the client may
	// have it and say so when it resumes (last), so it counts as written.
	if seq <= s.written {
		if s.conn == c && seq > s.cursor {
			s.cursor = seq
		}
		return
	}
	s.written = seq
	if s.conn != c {
		return
	}
	s.cursor = seq
	if unacked := s.index(s.written + 1); unacked > maxUnacked {
		s.drop(unacked - maxUnacked)
	}
}

// rewind makes the next connection start after last, the last seq its client has (resume
// with ?last=), or, when it did not say, at the oldest frame not known to be received.
// Frames it says it has are forgotten.
func (s *session) rewind(last uint64, known bool) {
	oldest := s.nextSeq // no frame kept
	if len(s.queue) > 0 {
		oldest = s.queue[0].seq
	}
	// A last beyond what was recorded as written is still fine while it names a frame that
	// exists: its write finished on the old connection just before it dropped.
	if !known || last+1 < oldest || last >= s.nextSeq {
		last = oldest - 1
	}
	s.drop(s.index(last + 1))
	s.cursor = last
	s.written = max(s.written, last)
}

// ack forgets every frame up to seq: the client has them (its pong answered a ping sent
// after them).
func (s *session) ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq = min(seq, s.cursor) // never forget what this connection did not write
	if len(s.queue) > 0 && seq >= s.queue[0].seq {
		s.drop(s.index(seq + 1))
	}
}

// drop removes the first n frames; s.mu is held.
func (s *session) drop(n int) {
	if n == 0 {
		return
	}
	clear(s.queue[:n]) // let the frames go
	s.queue = s.queue[n:]
	if len(s.queue) == 0 {
		s.queue = nil // and the array
	}
}

// lastWritten is the seq of the last frame written to the current connection, for pings.
func (s *session) lastWritten() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}
