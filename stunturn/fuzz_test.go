package stunturn_test

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"

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
		req, err := c.Signed(methods[int(method)%len(methods)], turntest.Attr(stun.AttrType(attr), value))
		if err != nil {
			return // an attribute stun refuses to build
		}
		_ = c.Write(req)
		alive(t, srv, "udp")
	})
}
