package signaling

import (
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/httpapi"
)

// Mailbox limits (besides signaling.max_queued_bytes).
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
//
// The mailbox is bounded in bytes too (signaling.max_queued_bytes): written frames not yet
// acknowledged are forgotten first to make room, and a client whose unsent frames alone pass
// the bound reads too slowly: its session ends. Every byte is also counted in the node's
// total (queued), which the hub keeps under max_queued_bytes_total.
type session struct {
	peer string
	op   sync.Mutex // serialises the handling of the session's messages

	// client is whose signaling.max_conns_per_ip slot the session holds; h.mu guards it.
	client httpapi.Client

	mu      sync.Mutex
	id      credentials.Identity // the claims of the token the current connection presented
	room    string
	meta    json.RawMessage
	token   string
	conn    *conn   // nil while disconnected
	queue   []frame // unacknowledged frames, by seq: written ones, then unsent ones
	written uint64  // highest seq ever written: what lies beyond counts against maxUnsent
	cursor  uint64  // last seq written to the current connection (lower after a resume)
	nextSeq uint64  // seq of the next frame
	bytes   int     // of every frame in queue
	unsent  int     // bytes of the frames beyond written
	grace   Timer   // running while disconnected
	ended   bool
	// left: the client's last word about rooms was leave (it joined none since), so a grace
	// that runs out ends the session as "left", not "grace_expired".
	left bool

	budget int           // max_queued_bytes (0: no bound)
	total  *atomic.Int64 // the node's queued bytes
}

func newSession(peer, token string, id credentials.Identity, budget int, total *atomic.Int64) *session {
	return &session{peer: peer, token: token, id: id, nextSeq: 1, budget: budget, total: total}
}

// pushResult is what became of a frame pushed into a mailbox.
type pushResult int

const (
	pushed  pushResult = iota
	dropped            // the session ended meanwhile: nothing to deliver
	full               // the client reads too slowly: the session must end
)

// push appends data to the mailbox.
func (s *session) push(data []byte) pushResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return dropped
	}
	if s.nextSeq-1-s.written >= maxUnsent {
		return full
	}
	if s.budget > 0 {
		if s.unsent+len(data) > s.budget {
			return full
		}
		// Make room: written frames are only kept for a replay.
		n := 0
		for b := s.bytes; n < len(s.queue) && s.queue[n].seq <= s.written && b+len(data) > s.budget; n++ {
			b -= len(s.queue[n].data)
		}
		s.drop(n)
	}
	s.queue = append(s.queue, frame{seq: s.nextSeq, data: data})
	s.nextSeq++
	s.bytes += len(data)
	s.unsent += len(data)
	s.total.Add(int64(len(data)))
	if s.conn != nil {
		s.conn.kick()
	}
	return pushed
}

// next returns the next frame c has to write, if c is still the session's connection.
func (s *session) next(c *conn) (frame, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != c || s.ended || s.cursor+1 >= s.nextSeq {
		return frame{}, false
	}
	i := s.index(s.cursor + 1)
	if i < 0 {
		// The frames a resume was replaying were forgotten to make room (max_queued_bytes):
		// go on with the oldest there is.
		if len(s.queue) == 0 {
			s.cursor = s.nextSeq - 1
			return frame{}, false
		}
		s.cursor, i = s.queue[0].seq-1, 0
	}
	return s.queue[i], true
}

// index is where the frame seq sits in the queue; it is there (seq > every dropped frame).
func (s *session) index(seq uint64) int {
	return len(s.queue) - int(s.nextSeq-seq)
}

// lastQueued is the seq of the newest frame in the mailbox (0: none yet).
func (s *session) lastQueued() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextSeq - 1
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
	s.markWritten(seq)
	if s.conn != c {
		return
	}
	s.cursor = seq
	if unacked := s.index(s.written + 1); unacked > maxUnacked {
		s.drop(unacked - maxUnacked)
	}
}

// markWritten moves written up to seq, and the frames it passes out of the unsent bytes;
// s.mu is held.
func (s *session) markWritten(seq uint64) {
	if seq <= s.written {
		return
	}
	for i := max(s.index(s.written+1), 0); i < len(s.queue) && s.queue[i].seq <= seq; i++ {
		s.unsent -= len(s.queue[i].data)
	}
	s.written = seq
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
	s.markWritten(last)
	s.drop(s.index(last + 1))
	s.cursor = last
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

// trim forgets the written frames (kept only for a replay), to give memory back; it returns
// the bytes freed.
func (s *session) trim() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.bytes
	s.drop(max(s.index(s.written+1), 0))
	return before - s.bytes
}

// drop removes the first n frames; s.mu is held.
func (s *session) drop(n int) {
	if n <= 0 {
		return
	}
	freed := 0
	for _, f := range s.queue[:n] {
		freed += len(f.data)
		if f.seq > s.written {
			s.unsent -= len(f.data)
		}
	}
	s.bytes -= freed
	s.total.Add(-int64(freed))
	clear(s.queue[:n]) // let the frames go
	s.queue = s.queue[n:]
	if len(s.queue) == 0 {
		s.queue = nil // and the array
	}
}

// empty forgets the whole mailbox (the session ended or moved on); s.mu is held.
func (s *session) empty() {
	s.drop(len(s.queue))
}

// queued is the bytes of the unsent frames, for choosing whom to cut when the node's total
// is past its bound.
func (s *session) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unsent
}

// lastWritten is the seq of the last frame written to the current connection, for pings.
func (s *session) lastWritten() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}
