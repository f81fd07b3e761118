package stunturn

import (
	"encoding/binary"
	"fmt"
)

// streamFrames cuts what a TCP or TLS connection carries into STUN messages and ChannelData
// messages (with their padding to a multiple of 4, as RFC 8656 requires over streams). The
// bytes read but not cut yet stay in buf[r:w]; a frame returned is a slice of buf, valid until
// the next call of space.
type streamFrames struct {
	key  string // the connection, for errors
	buf  []byte
	r, w int
	need int // bytes the frame at r needs in buf, once known; the header's before
}

// streamBuffer is the buffer of a connection, enough for many frames; a longer STUN message
// grows it.
const streamBuffer = 4096

// next returns the next whole frame, nil when its bytes have not all arrived, or an error
// when the bytes are not TURN.
func (s *streamFrames) next() ([]byte, error) {
	b := s.buf[s.r:s.w]
	s.need = 4
	if len(b) < 4 {
		return nil, nil
	}
	var size int
	switch b[0] & 0xC0 {
	case 0x00: // STUN: 20-byte header + length
		if s.need = stunHeaderSize; len(b) < stunHeaderSize {
			return nil, nil
		}
		if !isSTUN(b) {
			return nil, fmt.Errorf("%w from %s", ErrBadFrame, s.key)
		}
		size = stunHeaderSize + int(binary.BigEndian.Uint16(b[2:4]))
	case 0x40: // ChannelData: channel number 0x4000-0x7FFF, length, data, padding
		size = 4 + (int(binary.BigEndian.Uint16(b[2:4]))+3)&^3
		if size > maxChannelFrame {
			// No relay carries it (pion reads 1600 bytes at most), and waiting for that much
			// of what is likely not TURN at all would hold the connection open.
			return nil, fmt.Errorf("%w from %s: ChannelData of %d bytes", ErrBadFrame, s.key, size)
		}
	default:
		return nil, fmt.Errorf("%w from %s", ErrBadFrame, s.key)
	}
	if s.need = size; len(b) < size {
		return nil, nil
	}
	s.r += size
	return b[:size], nil
}

// space is where the next read goes: after what is there, with room for the frame at r.
func (s *streamFrames) space() []byte {
	if s.buf == nil {
		s.buf = make([]byte, max(streamBuffer, s.need))
	}
	if s.r == s.w {
		s.r, s.w = 0, 0
	}
	if s.r+s.need > len(s.buf) || s.w == len(s.buf) {
		b := s.buf
		if s.need > len(b) {
			b = make([]byte, s.need)
		}
		s.w = copy(b, s.buf[s.r:s.w])
		s.r, s.buf = 0, b
	}
	return s.buf[s.w:]
}
