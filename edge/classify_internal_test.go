package edge

import (
	"bytes"
	"testing"
)

var stunBinding = []byte("\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl")

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name  string
		b     string
		plain bool
		want  route
	}{
		{"nothing yet", "", true, routeMore},
		{"tls handshake", "\x16\x03\x01\x02\x00", true, routeTLS},
		{"0x16 inside tls is not a handshake", "\x16\x03\x01\x02\x00\x01\x02\x03", false, routeUnknown},
		{"stun binding", string(stunBinding), true, routeTURN},
		{"stun over tls", string(stunBinding), false, routeTURN},
		{"stun header cut short", string(stunBinding[:6]), true, routeMore},
		{"stun without the magic cookie (RFC 3489)", "\x00\x01\x00\x00\x01\x02\x03\x04abcdefghijkl", true, routeUnknown},
		{"channeldata", "\x40\x00\x00\x04data", false, routeTURN},
		{"channeldata 0x4fff", "\x4f\xff\x00\x00", true, routeTURN},
		{"channeldata header cut short", "\x40\x00", true, routeMore},
		{"channel above 0x4fff", "\x50\x00\x00\x04data", true, routeUnknown},
		{"get", "GET / HTTP/1.1\r\n", true, routeHTTP},
		{"options", "OPTIONS * HTTP/1.1\r\n", false, routeHTTP},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false, routeHTTP},
		{"method cut short", "GE", true, routeMore},
		{"method too short", "GO / HTTP/1.1", true, routeUnknown},
		{"lower-case method", "get / HTTP/1.1", true, routeUnknown},
		{"a word too long for a method", "ABCDEFGHIJKL", true, routeUnknown},
		{"capitals then binary: channeldata", "\x41\x42\x00\x08abcdefgh", true, routeTURN},
		{"ssh", "SSH-2.0-OpenSSH_9.6\r\n", true, routeUnknown},
		{"binary noise", "\xff\xfe\x00", true, routeUnknown},
	} {
		if got := classify([]byte(tc.b), tc.plain); got != tc.want {
			t.Errorf("%s: classify(%q, plain %v) = %v, want %v", tc.name, tc.b, tc.plain, got, tc.want)
		}
	}
}

// FuzzClassify: classify never panics, decides within sniffBytes, and its decision on a prefix
// stands whatever follows (the edge reads no further once it decided).
func FuzzClassify(f *testing.F) {
	for _, seed := range [][]byte{stunBinding, []byte("GET / HTTP/1.1\r\n"), []byte("PRI * HTTP/2.0\r\n"), {0x16, 3, 1}, {0x40, 0, 0, 4, 1, 2, 3, 4}} {
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, plain bool) {
		full := classify(b, plain)
		if full == routeMore && len(b) >= sniffBytes {
			t.Fatalf("classify(%q) wants more after %d bytes", b, len(b))
		}
		for n := range len(b) {
			if r := classify(b[:n], plain); r != routeMore && r != full {
				t.Fatalf("classify(%q) = %v, but its prefix %q decided %v", b, full, b[:n], r)
			}
		}
		if full == routeTLS && (!plain || !bytes.HasPrefix(b, []byte{0x16})) {
			t.Fatalf("classify(%q, plain %v) = TLS", b, plain)
		}
	})
}
