package stunturn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

func stunFrame(body int) []byte {
	b := make([]byte, stunHeaderSize+body)
	binary.BigEndian.PutUint16(b[0:2], 0x0001)
	binary.BigEndian.PutUint16(b[2:4], uint16(body))
	binary.BigEndian.PutUint32(b[4:8], magicCookie)
	for i := stunHeaderSize; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

func channelFrame(n int) []byte {
	b := make([]byte, 4+(n+3)&^3)
	binary.BigEndian.PutUint16(b[0:2], 0x4001)
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	for i := 4; i < 4+n; i++ {
		b[i] = byte(n + i)
	}
	return b
}

// TestStreamFramesCut: frames come out whole and in order however the stream is cut into
// reads, a STUN message longer than the buffer included; bytes that are not TURN are an error.
func TestStreamFramesCut(t *testing.T) {
	frames := [][]byte{stunFrame(0), channelFrame(5), stunFrame(6000), channelFrame(1500), channelFrame(0), stunFrame(80)}
	stream := bytes.Join(frames, nil)
	for _, cut := range []int{1, 3, 7, 100, 4096, len(stream)} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			s := streamFrames{key: "test"}
			var got [][]byte
			for off := 0; len(got) < len(frames); {
				f, err := s.next()
				if err != nil {
					t.Fatal(err)
				}
				if f != nil {
					got = append(got, append([]byte(nil), f...))
					continue
				}
				if off == len(stream) {
					t.Fatalf("%d frames of %d, and the stream is over", len(got), len(frames))
				}
				space := s.space()
				n := copy(space, stream[off:min(off+cut, len(stream))])
				s.w += n
				off += n
			}
			for i := range frames {
				if !bytes.Equal(got[i], frames[i]) {
					t.Errorf("frame %d: got %d bytes, want %d", i, len(got[i]), len(frames[i]))
				}
			}
		})
	}
	for _, bad := range [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), channelFrame(2000), append(stunFrame(0)[:4], 0, 0, 0, 0)} {
		s := streamFrames{key: "test"}
		s.w = copy(s.space(), append(bad, make([]byte, 20)...))
		if _, err := s.next(); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%q: got %v, want ErrBadFrame", bad[:8], err)
		}
	}
}

// BenchmarkStreamFrames: cutting ChannelData frames (audio-sized) out of a TCP stream's
// buffer, as each read of a TURN-over-TCP connection does before the fast path.
func BenchmarkStreamFrames(b *testing.B) {
	frame := channelFrame(172)
	stream := bytes.Repeat(frame, streamBuffer/len(frame))
	s := streamFrames{key: "bench"}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := s.next()
		if err != nil {
			b.Fatal(err)
		}
		if f == nil {
			s.r, s.w = 0, copy(s.space(), stream)
		}
	}
}
