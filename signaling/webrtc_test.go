package signaling_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/icebox-rtc/icebox/signaling/sigclient"
	"github.com/icebox-rtc/icebox/stunturn"
)

// wire is what two pion peers exchange through signal messages.
type wire struct {
	SDP       *webrtc.SessionDescription `json:"sdp,omitempty"`
	Candidate *webrtc.ICECandidateInit   `json:"candidate,omitempty"`
}

// newPeer is a pion/webrtc peer that gathers on loopback only.
func newPeer(t *testing.T) *webrtc.PeerConnection {
	t.Helper()
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.LoggerFactory = stunturn.NewLoggerFactory(slog.New(slog.NewTextHandler(io.Discard, nil)), 1, 1)
	pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// relaySignals sends pc's candidates to peer, and applies what arrives from it.
func relaySignals(t *testing.T, pc *webrtc.PeerConnection, c *sigclient.Client, peer string, onOffer func(webrtc.SessionDescription)) {
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand != nil {
			init := cand.ToJSON()
			_ = c.Signal(peer, wire{Candidate: &init})
		}
	})
	go func() {
		var early []webrtc.ICECandidateInit // trickled before the description they belong to
		for m := range c.Messages() {
			if m.Type != "signal" || m.From != peer {
				continue
			}
			var w wire
			if err := json.Unmarshal(m.Data, &w); err != nil {
				t.Errorf("signal data: %v", err)
				return
			}
			switch {
			case w.SDP != nil && w.SDP.Type == webrtc.SDPTypeOffer:
				onOffer(*w.SDP)
			case w.SDP != nil:
				if err := pc.SetRemoteDescription(*w.SDP); err != nil {
					t.Errorf("answer: %v", err)
				}
			case w.Candidate != nil:
				early = append(early, *w.Candidate)
			}
			if pc.RemoteDescription() != nil {
				for _, cand := range early {
					if err := pc.AddICECandidate(cand); err != nil {
						t.Errorf("candidate: %v", err)
					}
				}
				early = nil
			}
		}
	}()
}

// TestPionPeersNegotiate: two pion/webrtc peers exchange a real offer, answer and trickled
// candidates through /ws and end with an open data channel.
func TestPionPeersNegotiate(t *testing.T) {
	s := start(t, serverOptions{})
	alice, _ := join(t, s, "call", map[string]any{"name": "alice"})
	bob, joined := join(t, s, "call", map[string]any{"name": "bob"})
	if len(joined.Peers) != 1 {
		t.Fatalf("bob sees %v", joined.Peers)
	}
	expect(t, alice, "peer-joined")
	alicePC, bobPC := newPeer(t), newPeer(t)

	got := make(chan string, 1)
	alicePC.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) { got <- string(m.Data) })
	})
	relaySignals(t, alicePC, alice, bob.Welcome().Peer, func(offer webrtc.SessionDescription) {
		if err := alicePC.SetRemoteDescription(offer); err != nil {
			t.Errorf("offer: %v", err)
			return
		}
		answer, err := alicePC.CreateAnswer(nil)
		if err == nil {
			err = alicePC.SetLocalDescription(answer)
		}
		if err != nil {
			t.Errorf("answer: %v", err)
			return
		}
		_ = alice.Signal(bob.Welcome().Peer, wire{SDP: alicePC.LocalDescription()})
	})
	relaySignals(t, bobPC, bob, alice.Welcome().Peer, nil)

	dc, err := bobPC.CreateDataChannel("chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	dc.OnOpen(func() { _ = dc.SendText("hello over a negotiated data channel") })
	offer, err := bobPC.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bobPC.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	if err := bob.Signal(alice.Welcome().Peer, wire{SDP: bobPC.LocalDescription()}); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-got:
		if msg != "hello over a negotiated data channel" {
			t.Errorf("got %q", msg)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no data channel message; states: alice %v, bob %v", alicePC.ConnectionState(), bobPC.ConnectionState())
	}
	if alicePC.ConnectionState() != webrtc.PeerConnectionStateConnected || bobPC.ConnectionState() != webrtc.PeerConnectionStateConnected {
		t.Errorf("states: alice %v, bob %v, want connected", alicePC.ConnectionState(), bobPC.ConnectionState())
	}
}
