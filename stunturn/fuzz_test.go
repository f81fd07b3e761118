package stunturn_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/icebox-rtc/icebox/stunturn/turnclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// alive fails the test unless the server still answers a Binding request.
func alive(t *testing.T, srv *turntest.Server, tr string) {
	t.Helper()
	c := turntest.Dial(t, tr, srv.Addr(tr), srv.TLSConfig)
	if _, _, err := c.Binding(); err != nil {
		t.Fatalf("the server stopped answering on %s: %v", tr, err)
	}
	c.Close()
}

// FuzzDatagram: arbitrary datagrams never crash the server or stop it answering.
func FuzzDatagram(f *testing.F) {
	srv := turntest.Start(f, turntest.Options{Config: labConfig(), NoTLS: true})
	f.Fuzz(func(t *testing.T, b []byte) {
		conn, err := net.Dial("udp4", srv.UDP)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(b)
		conn.Close()
		alive(t, srv, "udp")
	})
}

// FuzzStream: arbitrary bytes on a TCP connection never crash the server; a bad frame closes
// only that connection.
func FuzzStream(f *testing.F) {
	srv := turntest.Start(f, turntest.Options{Config: labConfig(), NoTLS: true})
	f.Fuzz(func(t *testing.T, b []byte) {
		conn, err := net.Dial("tcp", srv.TCP)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(b)
		conn.Close()
		alive(t, srv, "tcp")
	})
}

// FuzzAuthenticatedRequest: requests that pass authentication, with an arbitrary attribute,
// reach the attribute parsers behind it (XOR-PEER-ADDRESS, CHANNEL-NUMBER, LIFETIME, ...)
// without crashing the server.
func FuzzAuthenticatedRequest(f *testing.F) {
	srv := turntest.Start(f, turntest.Options{Config: labConfig(), NoTLS: true})
	c := turntest.Dial(f, "udp", srv.UDP, nil)
	cred := srv.Credential("fuzz", time.Hour)
	f.Fuzz(func(t *testing.T, method uint16, attr uint16, value []byte) {
		if srv.Allocations() == 0 { // the first input, or one that was a Refresh to 0
			if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
				t.Fatalf("Allocate: %v", err)
			}
		}
		methods := []stun.Method{stun.MethodAllocate, stun.MethodRefresh, stun.MethodCreatePermission,
			stun.MethodChannelBind, stun.MethodSend, stun.MethodBinding}
		req, err := c.Signed(methods[int(method)%len(methods)], turnclient.Attr(stun.AttrType(attr), value))
		if err != nil {
			return // an attribute stun refuses to build
		}
		_ = c.Write(req)
		alive(t, srv, "udp")
	})
}

// FuzzPermissionRequests: CreatePermission and ChannelBind requests that pass authentication,
// with arbitrary attributes (encoded in b as type, length, value), on one allocation with
// turn.max_permissions and turn.max_channels of 4. Each gets an answer (requests stay under
// 1,200 bytes: a datagram larger than 1,600 is dropped unanswered, as by pion and coturn); the
// allocation never holds more permissions or channels than the limits; and its first channel
// keeps relaying.
func FuzzPermissionRequests(f *testing.F) {
	cfg := labConfig()
	cfg.MaxPermissions, cfg.MaxChannels = 4, 4
	srv := turntest.Start(f, turntest.Options{Config: cfg, NoTLS: true})
	echo, _ := turntest.Echo(f)
	c := turntest.Dial(f, "udp", srv.UDP, nil)
	cred := srv.Credential("fuzz-perm", time.Hour)
	if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
		f.Fatal(err)
	}
	if err := c.ChannelBind(0x4000, peer(echo)); err != nil {
		f.Fatal(err)
	}
	attr := func(t stun.AttrType, v []byte) []byte {
		return append([]byte{byte(t >> 8), byte(t), byte(len(v))}, v...)
	}
	xorPeer := func(addr string) []byte {
		m := &stun.Message{}
		_ = turnclient.PeerAddress{Addr: netip.MustParseAddrPort(addr)}.AddTo(m)
		v, _ := m.Get(stun.AttrXORPeerAddress)
		return v // XORed with a zero transaction ID: it decodes to some address, which is the point
	}
	f.Add(false, attr(stun.AttrXORPeerAddress, xorPeer("93.184.216.34:443")))
	f.Add(false, append(attr(stun.AttrXORPeerAddress, xorPeer("93.184.216.34:443")), attr(stun.AttrXORPeerAddress, xorPeer("10.0.0.1:9"))...))
	f.Add(true, append(attr(stun.AttrChannelNumber, []byte{0x40, 0x01, 0, 0}), attr(stun.AttrXORPeerAddress, xorPeer("127.0.0.1:9"))...))
	f.Add(true, append(attr(stun.AttrChannelNumber, []byte{0x7f, 0xff, 0, 0}), attr(stun.AttrXORPeerAddress, xorPeer("127.0.0.1:9"))...))
	f.Add(true, attr(stun.AttrChannelNumber, []byte{0x40}))
	f.Fuzz(func(t *testing.T, bind bool, b []byte) {
		if len(b) > 1200 {
			b = b[:1200]
		}
		var setters []stun.Setter
		for len(b) >= 3 {
			typ, n := stun.AttrType(uint16(b[0])<<8|uint16(b[1])), int(b[2])
			b = b[3:]
			n = min(n, len(b))
			if typ == stun.AttrMessageIntegrity || typ == stun.AttrFingerprint || typ == stun.AttrUsername ||
				typ == stun.AttrRealm || typ == stun.AttrNonce {
				typ = stun.AttrXORPeerAddress // the client signs the request itself
			}
			setters = append(setters, turnclient.Attr(typ, b[:n]))
			b = b[n:]
		}
		method := stun.MethodCreatePermission
		if bind {
			method = stun.MethodChannelBind
		}
		if _, err := c.Authenticated(method, setters...); err != nil && !isErrorResponse(err) {
			t.Fatalf("no answer: %v", err)
		}
		if perms, channels := srv.PermissionsAndChannels(); perms > 4 || channels > 4 {
			t.Fatalf("the allocation holds %d permissions and %d channels, limits 4 and 4", perms, channels)
		}
		payload := fmt.Appendf(nil, "alive %d", time.Now().UnixNano())
		if err := c.SendChannel(0x4000, payload); err != nil {
			t.Fatal(err)
		}
		for {
			d, ok := c.Recv(5 * time.Second)
			if !ok {
				t.Fatalf("the first channel stopped relaying")
			}
			if string(d.Payload) == string(payload) {
				break
			}
		}
	})
}
