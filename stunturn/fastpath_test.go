package stunturn_test

import (
	"testing"
	"time"

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
