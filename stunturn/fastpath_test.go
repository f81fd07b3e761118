package stunturn_test

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/stunturn/turnclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// TestFastPathFollowsPion: a channel pion binds goes on the fast path, and off it when pion
// removes it (here with its allocation): no ChannelData is relayed after that.
func TestFastPathFollowsPion(t *testing.T) {
	srv := turntest.Start(t, turntest.Options{Config: labConfig(), NoTLS: true})
	echo, echoed := turntest.Echo(t)
	c := turntest.Dial(t, "udp", srv.UDP, nil)
	cred := srv.Credential("fast", time.Hour)
	if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
		t.Fatal(err)
	}
	if err := c.ChannelBind(0x4010, peer(echo)); err != nil {
		t.Fatal(err)
	}
	if n := srv.FastBindings(); n != 1 {
		t.Fatalf("channels on the fast path: got %d, want 1", n)
	}
	if err := c.SendChannel(0x4010, []byte("fast")); err != nil {
		t.Fatal(err)
	}
	if d := recvPayload(t, c, "fast"); d.Channel != 0x4010 {
		t.Errorf("got %+v", d)
	}
	<-echoed
	// A channel number that is not bound is pion's: dropped there.
	if err := c.SendChannel(0x4011, []byte("unbound")); err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(0); err != nil {
		t.Fatal(err)
	}
	// The answer comes first; pion then tears the allocation down on its relay's goroutine.
	if err := c.SendChannel(0x4010, []byte("after")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); srv.FastBindings() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("channels on the fast path after the allocation ended: got %d, want 0", srv.FastBindings())
		}
	}
	if err := c.SendChannel(0x4010, []byte("after")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-echoed:
		t.Errorf("the peer received %q through a channel that no longer exists", got)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestFastPathEveryClient: the data of an established allocation never goes through pion:
// Send indications up and Data indications down (Firefox's way: it binds no channel), and
// ChannelData both ways, over UDP, TCP and TLS. pion logs every packet it handles at debug, so
// a debug log without those lines, while the data arrives, shows the fast path took them.
func TestFastPathEveryClient(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := turntest.Start(t, turntest.Options{Config: labConfig(), Logger: log})
	echo, _ := turntest.Echo(t)
	for _, tr := range []string{"udp", "tcp", "tls"} {
		t.Run(tr, func(t *testing.T) {
			c := turntest.Dial(t, tr, srv.Addr(tr), srv.TLSConfig)
			cred := srv.Credential("fast-"+tr, time.Hour)
			if _, err := c.Allocate(cred.Username, cred.Password); err != nil {
				t.Fatal(err)
			}
			if err := c.CreatePermission(peer(echo)); err != nil {
				t.Fatal(err)
			}
			if err := c.ChannelBind(0x4020, turnclient.PeerAddress{Addr: netip.AddrPortFrom(echo.AddrPort().Addr(), 9)}); err != nil {
				t.Fatal(err) // another port of the peer: the echo itself has no channel
			}
			before := len(buf.String())
			for i := range 3 {
				msg := fmt.Sprintf("indication %d over %s", i, tr)
				if err := c.Send(echo.AddrPort(), []byte(msg)); err != nil {
					t.Fatal(err)
				}
				if d := recvPayload(t, c, msg); d.Peer != echo.AddrPort() || d.Channel != 0 {
					t.Errorf("got %+v, want a Data indication from %v", d, echo)
				}
			}
			if err := c.ChannelBind(0x4021, peer(echo)); err != nil {
				t.Fatal(err)
			}
			mark := len(buf.String())
			for i := range 3 {
				msg := fmt.Sprintf("channel data %d over %s", i, tr)
				if err := c.SendChannel(0x4021, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				if d := recvPayload(t, c, msg); d.Channel != 0x4021 {
					t.Errorf("got %+v, want ChannelData on 0x4021", d)
				}
			}
			out := buf.String()
			for _, seen := range []string{out[before:mark], out[mark:]} {
				for _, pion := range []string{"Received SendIndication", "Received ChannelData", "Relaying message from", "received", "Failed"} {
					if strings.Contains(seen, pion) {
						t.Errorf("pion handled data (%q in its log):\n%s", pion, seen)
					}
				}
			}
		})
	}
}
