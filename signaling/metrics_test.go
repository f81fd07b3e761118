package signaling_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/icebox-rtc/icebox/signaling"
	"github.com/icebox-rtc/icebox/signaling/sigclient"
)

// TestSessionsEndedReasons: each reason of icebox_signaling_sessions_ended_total counts what it
// says. Clients that send leave and then close end as "left" when their grace runs out, not as
// "grace_expired"; clients that drop in their room, or that left, joined again and dropped,
// are the ones whose grace expired.
func TestSessionsEndedReasons(t *testing.T) {
	const grace = time.Minute
	const leavers, droppers, rejoiners = 5, 3, 2
	clock := signaling.NewFakeClock()
	s := start(t, serverOptions{clock: clock, config: func(c *signalingConfig) { c.ResumeGrace = grace }})
	for range leavers { // as the SDK's leave(): leave, then a clean close
		c, _ := join(t, s, "r", nil)
		if err := c.Leave(ctx(t)); err != nil {
			t.Fatal(err)
		}
		_ = c.CloseNormally()
	}
	for range droppers { // the network goes, in the room
		c, _ := join(t, s, "r", nil)
		_ = c.Close()
	}
	for range rejoiners { // left, then joined again: in a room when it drops
		c, _ := join(t, s, "r", nil)
		if err := c.Leave(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Join(ctx(t), "r2", nil); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	clock.WaitPending(t, grace, leavers+droppers+rejoiners) // the server saw every drop
	wantSessionsEnded(t, s, map[string]float64{})           // nothing ends before the grace
	clock.Advance(grace)
	waitFor(t, "every session ends", func() bool {
		return counter(t, s, "icebox_signaling_sessions_ended_total", "", "") == leavers+droppers+rejoiners
	})
	wantSessionsEnded(t, s, map[string]float64{"left": leavers, "grace_expired": droppers + rejoiners})
}

// TestSessionsEndedLeftAfterMove: a session that left its room is still "left" when its grace
// runs out on another node, after a resume moved it there; the node it left counts "moved".
func TestSessionsEndedLeftAfterMove(t *testing.T) {
	const grace = 1700 * time.Millisecond // below the presence timeout (no node looks dead), unlike any other timer
	clock := signaling.NewFakeClock()
	br := &testBroker{name: "loopback", loopback: signaling.NewLoopback(clock), clock: clock}
	a, b := br.twoNodes(t, func(c *signalingConfig) { c.ResumeGrace = grace }, 0)
	bob, _ := join(t, a, "r", nil)
	if err := bob.Leave(ctx(t)); err != nil {
		t.Fatal(err)
	}
	_ = bob.Close()
	clock.WaitPending(t, grace, 1) // node A saw the drop
	bob2 := dial(t, b, sigclient.Options{Resume: bob.Welcome().Resume, Last: bob.LastSeq()})
	if w := bob2.Welcome(); !w.Resumed || w.Room != "" {
		t.Fatalf("resumed on node B: got %s, want resumed in no room", w.Raw)
	}
	_ = bob2.CloseNormally()
	clock.WaitPending(t, grace, 1) // node A's timer stopped with the move; node B saw the close
	clock.Advance(grace)
	waitFor(t, "the session ends on node B", func() bool {
		return counter(t, b, "icebox_signaling_sessions_ended_total", "", "") == 1
	})
	wantSessionsEnded(t, a, map[string]float64{"moved": 1})
	wantSessionsEnded(t, b, map[string]float64{"left": 1})
}

// wantSessionsEnded checks icebox_signaling_sessions_ended_total exactly: the reasons in want
// with their counts, every other known reason at 0, and no other series.
func wantSessionsEnded(t *testing.T, s *server, want map[string]float64) {
	t.Helper()
	const name = "icebox_signaling_sessions_ended_total"
	var b strings.Builder
	fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", name, help(t, s.Registry, name), name)
	for _, r := range []string{"left", "grace_expired", "mailbox_full", "memory", "forbidden", "moved", "shutdown"} {
		fmt.Fprintf(&b, "%s{reason=%q} %v\n", name, r, want[r])
	}
	if err := testutil.GatherAndCompare(s.Registry, strings.NewReader(b.String()), name); err != nil {
		t.Error(err)
	}
}

// help is the help text of the metric name in reg.
func help(t *testing.T, reg prometheus.Gatherer, name string) string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetHelp()
		}
	}
	t.Fatalf("no metric %s", name)
	return ""
}

// TestMetricsInitialised: before any traffic, every labelled signaling counter already has a
// series at 0 for each value its help and README list, so that dashboards show 0, not nothing.
func TestMetricsInitialised(t *testing.T) {
	clock := signaling.NewFakeClock()
	s := start(t, serverOptions{loopback: signaling.NewLoopback(clock), clock: clock})
	want := map[string][]string{
		"icebox_signaling_messages_total": {"join", "signal", "broadcast", "leave", "ping", "invalid"},
		"icebox_signaling_errors_total": {"bad-message", "bad-room", "room-full", "not-joined", "already-joined",
			"unknown-peer", "forbidden", "rate-limited", "too-large", "unavailable"},
		"icebox_signaling_drops_total": {"closed_by_client", "network", "pong_timeout", "too_large", "policy",
			"write_error", "replaced", "moved", "mailbox_full", "memory", "forbidden", "shutdown"},
		"icebox_signaling_refused_total":        {"bad-request", "forbidden", "unauthorized", "rate-limited", "unavailable"},
		"icebox_signaling_resumes_total":        {"resumed", "unknown_token"},
		"icebox_signaling_sessions_ended_total": {"left", "grace_expired", "mailbox_full", "memory", "forbidden", "moved", "shutdown"},
		"icebox_signaling_bus_errors_total": {"join", "leave", "members", "contains", "publish", "session", "move",
			"heartbeat", "reap", "resync", "message"},
		"icebox_signaling_bus_handovers_total": {"handed_over", "adopted", "unknown", "timeout"},
	}
	wantInitialised(t, s.Registry, want)
}

// wantInitialised checks that reg has, for each metric in want, a series at 0 for every label
// value listed (the metrics have one label each).
func wantInitialised(t *testing.T, reg prometheus.Gatherer, want map[string][]string) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{}
	for _, f := range families {
		got[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				got[f.GetName()][l.GetValue()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	for name, values := range want {
		for _, v := range values {
			switch n, ok := got[name][v]; {
			case !ok:
				t.Errorf("%s has no series for %q before any traffic", name, v)
			case n != 0:
				t.Errorf("%s{%q}: got %v before any traffic, want 0", name, v, n)
			}
		}
		if extra := len(got[name]) - len(values); extra > 0 {
			var more []string
			for v := range got[name] {
				if !slices.Contains(values, v) {
					more = append(more, v)
				}
			}
			t.Errorf("%s has series the test does not know: %v", name, more)
		}
	}
}
