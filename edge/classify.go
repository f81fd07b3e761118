package edge

import "encoding/binary"

// route is where a connection goes, by its first bytes.
type route int

const (
	routeMore    route = iota // not decided yet: read more
	routeUnknown              // neither TLS, TURN nor HTTP: closed
	routeTLS                  // a TLS ClientHello (before TLS only)
	routeTURN                 // a STUN message or ChannelData
	routeHTTP                 // an HTTP/1 request line or the HTTP/2 preface
)

// Sizes of what classify looks at.
const (
	stunMagicCookie = 0x2112A442
	// maxMethod is the longest HTTP method token classify waits for (OPTIONS, CONNECT; PRI of
	// HTTP/2's preface), plus the space after it.
	maxMethod = 10
	// sniffBytes is enough bytes for any decision of classify.
	sniffBytes = maxMethod + 1
	// maxChannelData is the largest ChannelData payload a relay carries (a UDP datagram
	// within icebox's 1600-byte frames).
	maxChannelData = 1600 - 4
)

// classify decides where a connection goes from its first bytes b; plain says no TLS was
// negotiated yet (only then does 0x16 start a handshake). routeMore asks for more bytes: the
// caller reads until classify decides, within the first-bytes deadline.
//
// HTTP is tried before ChannelData: the first byte of "GET " is also that of channel 0x4745.
// Text never looks like ChannelData icebox accepts, as its would-be length is beyond any frame
// a relay carries; and the first message of a TURN connection is STUN anyway (a channel is
// bound on a connection before data flows on it).
func classify(b []byte, plain bool) route {
	if len(b) == 0 {
		return routeMore
	}
	c := b[0]
	switch {
	case plain && c == 0x16: // TLS handshake record
		return routeTLS
	case c&0xC0 == 0: // STUN: the two top bits are zero, the magic cookie at bytes 4-7
		if len(b) < 8 {
			return routeMore
		}
		if binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie {
			return routeTURN
		}
		return routeUnknown
	}
	if r := classifyMethod(b); r != routeUnknown {
		return r
	}
	if c >= 0x40 && c <= 0x4F { // ChannelData: channel numbers 0x4000-0x4FFF (RFC 8656)
		if len(b) < 4 {
			return routeMore
		}
		if binary.BigEndian.Uint16(b[2:4]) > maxChannelData {
			return routeUnknown // more than any relay carries: not TURN
		}
		return routeTURN
	}
	return routeUnknown
}

// classifyMethod recognizes an HTTP request line by its method: 3 to 9 capital letters, then
// a space.
func classifyMethod(b []byte) route {
	for i, c := range b {
		switch {
		case c == ' ' && i >= 3:
			return routeHTTP
		case c < 'A' || c > 'Z' || i >= maxMethod-1:
			return routeUnknown
		}
	}
	return routeMore
}
