package stunturn

import (
	"io"
	"log/slog"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testRelays is a relay allocator for c advertising public, with its peer policy and metrics.
func testRelays(c Config, public string) (*relayAllocator, *peerPolicy, *metrics) {
	m := newMetrics(prometheus.NewRegistry())
	ip := netip.MustParseAddr(public)
	p := newPeerPolicy(c, &portSet{}, ip)
	return newRelayAllocator(c, ip, p, newFileBudget(0), m, discard()), p, m
}
