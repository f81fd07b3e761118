package stunturn

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// relayStats counts what one relay socket relayed. The per-packet paths add to their own
// socket's counters only (no counter shared between allocations, whose cache line every core
// would fight over); the two directions are written by different goroutines, so they sit on
// different cache lines. The turn metrics read them when scraped (relayCollector).
type relayStats struct {
	toPeer   dirStats // written by the client's side: a listener's read loop or pion's handler
	_        [64 - 24]byte
	fromPeer dirStats // written by the relay socket's own read loop
	_        [64 - 24]byte
	created  time.Time
}

type dirStats struct {
	packets, bytes, dropped atomic.Uint64
}

func (d *dirStats) relayed(n int) {
	d.packets.Add(1)
	d.bytes.Add(uint64(n))
}

// totals are counters summed over relay sockets: the closed ones, and at a scrape the live ones.
type totals struct {
	toPeer, fromPeer [3]uint64 // packets, bytes, dropped
}

func (t *totals) add(s *relayStats) {
	for i, d := range []*dirStats{&s.toPeer, &s.fromPeer} {
		dst := &t.toPeer
		if i == 1 {
			dst = &t.fromPeer
		}
		dst[0] += d.packets.Load()
		dst[1] += d.bytes.Load()
		dst[2] += d.dropped.Load()
	}
}

// relayCollector exports icebox_turn_relayed_packets_total, _relayed_bytes_total and
// _peer_packets_dropped_total by direction: what closed relay sockets relayed plus what the
// open ones have relayed so far.
type relayCollector struct {
	a                       *relayAllocator
	packets, bytes, dropped *prometheus.Desc
}

func newRelayCollector(a *relayAllocator) *relayCollector {
	dir := []string{"direction"}
	return &relayCollector{
		a: a,
		packets: prometheus.NewDesc("icebox_turn_relayed_packets_total",
			"Datagrams relayed between clients and peers, by direction.", dir, nil),
		bytes: prometheus.NewDesc("icebox_turn_relayed_bytes_total",
			"Payload bytes relayed between clients and peers, by direction.", dir, nil),
		dropped: prometheus.NewDesc("icebox_turn_peer_packets_dropped_total",
			"Datagrams dropped by the peer policy on a relay socket, by direction.", dir, nil),
	}
}

func (c *relayCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.dropped
}

func (c *relayCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.a.totals()
	for _, d := range []struct {
		label string
		v     [3]uint64
	}{{dirToPeer, t.toPeer}, {dirFromPeer, t.fromPeer}} {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(d.v[0]), d.label)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(d.v[1]), d.label)
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(d.v[2]), d.label)
	}
}
