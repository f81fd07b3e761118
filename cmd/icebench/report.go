package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// metricOf picks one number of a result.
type metricOf func(turnResult) float64

// row is one line of the comparison: a metric of a scenario, with its target.
type row struct {
	scenario, metric, unit string
	value                  metricOf
	target                 string                   // e.g. "<= 1.0x coturn"
	met                    func(ratio float64) bool // nil: informational
	lowerBetter            bool
}

func writeReport(o *compareOptions, res roundResults, commands []string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Benchmarks\n\n")
	p("icebox against coturn %s (`%s`), measured in one run of `make bench` (`icebench compare`) on\n", version(o.coturn), o.coturn)
	p("one machine, %s. Both servers are pinned to CPU %d (taskset), the load generator to CPU %d; ",
		machine(), o.serverCPU, o.loadCPU)
	p("each server runs alone while measured, and the order alternates between rounds (%d rounds). ", o.rounds)
	p("Numbers are medians over the rounds; ratios are icebox/coturn. Generated %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))

	p("## TURN relay\n\n")
	p("Each allocation sends ChannelData to a UDP echo peer on 127.0.0.1 through the relay and\n")
	p("back (over UDP unless the scenario says TCP; with Send and Data indications after a\n")
	p("CreatePermission in the indications scenario, as Firefox relays); TURN REST credentials with a\n")
	p("distinct user per allocation. CPU per relayed packet is the server's user+system time (from\n")
	p("/proc) over the datagrams it relayed (two per echo).\n\n")
	p("| scenario | metric | icebox | coturn | icebox/coturn | target | met |\n|---|---|---|---|---|---|---|\n")
	rows := []row{
		{"audio: 200 allocations x 50 pps x 172 B", "server CPU per relayed packet", "µs", func(r turnResult) float64 { return r.CPUPerPacketUs }, "<= 0.8x", func(x float64) bool { return x <= 0.8 }, true},
		{"audio", "loss", "%", func(r turnResult) float64 { return 100 * r.Loss }, "", nil, true},
		{"audio", "RTT p50 / p99", "ms", nil, "", nil, true},
		{"video: 50 allocations x 90 pps x 960 B", "server CPU per relayed packet", "µs", func(r turnResult) float64 { return r.CPUPerPacketUs }, "<= 0.8x", func(x float64) bool { return x <= 0.8 }, true},
		{"video", "loss", "%", func(r turnResult) float64 { return 100 * r.Loss }, "", nil, true},
		{"video", "RTT p50 / p99", "ms", nil, "", nil, true},
		{"indications: audio with Send/Data indications (Firefox)", "server CPU per relayed packet", "µs", func(r turnResult) float64 { return r.CPUPerPacketUs }, "<= 1.0x", func(x float64) bool { return x <= 1.0 }, true},
		{"indications", "loss", "%", func(r turnResult) float64 { return 100 * r.Loss }, "", nil, true},
		{"tcp: audio, ChannelData over TCP", "server CPU per relayed packet", "µs", func(r turnResult) float64 { return r.CPUPerPacketUs }, "<= 1.0x", func(x float64) bool { return x <= 1.0 }, true},
		{"tcp", "loss", "%", func(r turnResult) float64 { return 100 * r.Loss }, "", nil, true},
		{"allocation rate", "allocations per second", "/s", func(r turnResult) float64 { return r.AllocationsPerSec }, ">= 1.5x", func(x float64) bool { return x >= 1.5 }, false},
		{"allocation rate", "server CPU per allocation (Allocate, its 401, and the release)", "µs", func(r turnResult) float64 { return r.CPUPerAllocationUs }, "< 1.0x", func(x float64) bool { return x < 1.0 }, true},
		{"idle allocations", "server RSS", "MiB", func(r turnResult) float64 { return float64(r.RSSKiB) / 1024 }, "<= 0.5x", func(x float64) bool { return x <= 0.5 }, true},
	}
	key := map[string]string{}
	for _, sc := range o.scenarios() {
		key[strings.SplitN(sc.name, ":", 2)[0]] = sc.name
	}
	for _, r := range rows {
		name := strings.SplitN(r.scenario, ":", 2)[0]
		byServer := res.turn[key[name]]
		if r.value == nil { // RTT
			ib, cb := byServer["icebox"], byServer["coturn"]
			p("| %s | %s | %.2f / %.2f | %.2f / %.2f | | | |\n", r.scenario, r.metric,
				median(pick(ib, func(x turnResult) float64 { return x.RTTP50ms })), median(pick(ib, func(x turnResult) float64 { return x.RTTP99ms })),
				median(pick(cb, func(x turnResult) float64 { return x.RTTP50ms })), median(pick(cb, func(x turnResult) float64 { return x.RTTP99ms })))
			continue
		}
		i, c := median(pick(byServer["icebox"], r.value)), median(pick(byServer["coturn"], r.value))
		p("| %s | %s | %s | %s | %s | %s | %s |\n", r.scenario, r.metric, num(i, r.unit), num(c, r.unit), ratio(i, c), r.target, verdict(i, c, r.met))
	}
	si := median(pick(res.saturation["icebox"], func(r turnResult) float64 { return r.DeliveredPerSec }))
	sc := median(pick(res.saturation["coturn"], func(r turnResult) float64 { return r.DeliveredPerSec }))
	p("| saturation: 100 allocations, audio packets | highest load relayed with < 1%% loss | %s | %s | %s | >= 1.3x | %s |\n",
		num(si, "pps"), num(sc, "pps"), ratio(si, sc), verdict(si, sc, func(x float64) bool { return x >= 1.3 }))
	ci := median(pick(res.saturation["icebox"], func(r turnResult) float64 { return r.CPUPerPacketUs }))
	cc := median(pick(res.saturation["coturn"], func(r turnResult) float64 { return r.CPUPerPacketUs }))
	p("| saturation | server CPU per relayed packet at that load | %s | %s | %s | | |\n", num(ci, "µs"), num(cc, "µs"), ratio(ci, cc))

	flood := func(rs []turnResult, f func(*floodResult) float64) float64 {
		var xs []float64
		for _, r := range rs {
			if r.Flood != nil {
				xs = append(xs, f(r.Flood))
			}
		}
		return median(xs)
	}
	fl := res.turn[floodScenario]
	fi, fc, fu := fl["icebox"], fl["coturn"], res.turn[floodUnlimitedResult]["icebox"]
	p("\n### Channel flood\n\n")
	p("50 allocations relay audio (50 pps x 172 B over channels) while one more client binds channels\n")
	p("0x4000-0x4FFF (all 4,096 numbers RFC 8656 allows, one request after another, for at most 30 s)\n")
	p("to distinct ports of the echo peer, then deletes its allocation (Refresh with lifetime 0).\n")
	p("icebox refuses channels past turn.max_channels (64 by default); the third column is icebox with\n")
	p("the limit off. The flood's CPU is the server's CPU while it ran, above what the echo load alone\n")
	p("used in the warm-up.\n\n")
	p("| metric | icebox | coturn | icebox, max_channels 0 |\n|---|---|---|---|\n")
	lossOf := func(r turnResult) float64 { return 100 * r.Loss }
	p99Of := func(r turnResult) float64 { return r.RTTP99ms }
	p("| channels the attacker bound | %.0f | %.0f | %.0f |\n", flood(fi, func(f *floodResult) float64 { return float64(f.Bound) }),
		flood(fc, func(f *floodResult) float64 { return float64(f.Bound) }), flood(fu, func(f *floodResult) float64 { return float64(f.Bound) }))
	p("| time to send them | %.2f s | %.2f s | %.2f s |\n", flood(fi, func(f *floodResult) float64 { return f.BindSeconds }),
		flood(fc, func(f *floodResult) float64 { return f.BindSeconds }), flood(fu, func(f *floodResult) float64 { return f.BindSeconds }))
	p("| server CPU of the flood | %.2f s | %.2f s | %.2f s |\n", flood(fi, func(f *floodResult) float64 { return f.CPUSeconds }),
		flood(fc, func(f *floodResult) float64 { return f.CPUSeconds }), flood(fu, func(f *floodResult) float64 { return f.CPUSeconds }))
	p("| deletion answered in | %.1f ms | %.1f ms | %.1f ms |\n", flood(fi, func(f *floodResult) float64 { return f.DeleteMs }),
		flood(fc, func(f *floodResult) float64 { return f.DeleteMs }), flood(fu, func(f *floodResult) float64 { return f.DeleteMs }))
	p("| bystanders' loss | %.3f %% | %.3f %% | %.3f %% |\n", median(pick(fi, lossOf)), median(pick(fc, lossOf)), median(pick(fu, lossOf)))
	p("| bystanders' RTT p99 | %.2f ms | %.2f ms | %.2f ms |\n", median(pick(fi, p99Of)), median(pick(fc, p99Of)), median(pick(fu, p99Of)))

	p("\n### Every round\n\n```\n")
	for _, name := range sortedKeys(res.turn) {
		for _, server := range []string{"icebox", "coturn"} {
			for i, r := range res.turn[name][server] {
				p("%-16s round %d  %s\n", name, i+1, r)
			}
		}
	}
	for _, server := range []string{"icebox", "coturn"} {
		for i, r := range res.saturation[server] {
			p("saturation       round %d  %s\n", i+1, r)
		}
	}
	p("```\n")

	if len(res.signal) > 0 || len(res.latency) > 0 {
		p("\n## Signaling, against a Node.js ws relay\n\n")
		p("coturn has no signaling; the yardstick is `bench/signal-node/server.js`: the same protocol relayed\n")
		p("by Node.js %s and the ws package (no resume, no auth, no Redis), pinned to the same CPU.\n", version(o.node))
		p("Clients in rooms of 4; under load every client signals the next one of its room. CPU per\n")
		p("delivered message is the server's user+system time over the messages delivered.\n\n")
		p("| scenario | metric | icebox | node ws | icebox/node | target | met |\n|---|---|---|---|---|---|---|\n")
		mem := func(rs []signalResult) float64 {
			return median(pickS(rs, func(r signalResult) float64 { return r.RSSPerConnKiB }))
		}
		conns := 0
		if len(res.signal) > 0 {
			conns = res.signal[0].Clients
		}
		mi, mn := mem(res.signal), mem(res.nodeSignal)
		p("| %d idle connections | server RSS per connection | %.1f KiB | %.1f KiB | %s | <= 8 KiB | %s |\n", conns, mi, mn, ratio(mi, mn), yes(mi > 0 && mi <= 8))
		p("| | connects per second | %.0f | %.0f | | | |\n", median(pickS(res.signal, func(r signalResult) float64 { return r.ConnectPerSec })),
			median(pickS(res.nodeSignal, func(r signalResult) float64 { return r.ConnectPerSec })))
		rate := 0.0
		if len(res.latency) > 0 {
			rate = res.latency[0].Rate
		}
		p99 := func(rs []signalResult) float64 {
			return median(pickS(rs, func(r signalResult) float64 { return r.LatencyP99ms }))
		}
		p50 := func(rs []signalResult) float64 {
			return median(pickS(rs, func(r signalResult) float64 { return r.LatencyP50ms }))
		}
		delivered := func(rs []signalResult) float64 {
			return median(pickS(rs, func(r signalResult) float64 { return r.DeliveredPerSec }))
		}
		cpu := func(rs []signalResult) float64 {
			return median(pickS(rs, func(r signalResult) float64 {
				if r.DeliveredPerSec == 0 {
					return 0
				}
				return r.ServerCPU * 1e6 / r.DeliveredPerSec
			}))
		}
		pi, pn := p99(res.latency), p99(res.nodeLatency)
		p("| %.0f signal messages/s offered | delivered | %.0f /s | %.0f /s | | | |\n", rate, delivered(res.latency), delivered(res.nodeLatency))
		p("| | latency p50 / p99 | %.2f / %.2f ms | %.2f / %.2f ms | %s (p99) | p99 <= 1.5 ms | %s |\n",
			p50(res.latency), pi, p50(res.nodeLatency), pn, ratio(pi, pn), yes(pi > 0 && pi <= 1.5))
		ci, cn := cpu(res.latency), cpu(res.nodeLatency)
		p("| | server CPU per delivered message | %.2f µs | %.2f µs | %s | <= 0.8x | %s |\n", ci, cn, ratio(ci, cn), verdict(ci, cn, func(x float64) bool { return x <= 0.8 }))
		p("\n```\n")
		for _, set := range []struct {
			name string
			rs   []signalResult
		}{{"idle", res.signal}, {"load", res.latency}, {"idle", res.nodeSignal}, {"load", res.nodeLatency}} {
			for i, r := range set.rs {
				p("%s  round %d  %s\n", set.name, i+1, r)
			}
		}
		p("```\n")
	}

	if o.micro != "" {
		if b, err := os.ReadFile(o.micro); err == nil {
			p("\n## Micro-benchmarks\n\nThe per-packet relay path in isolation (`go test -run '^$' -bench . -benchmem ./stunturn/`):\n")
			p("zero allocations per relayed packet; the time is the sendto on loopback.\n\n```\n%s```\n", b)
		}
	}

	if len(res.profiles) > 0 {
		p("\n## Where icebox's time goes\n\n")
		p("CPU profiles of icebox (its own `/debug/pprof`, `debug.pprof_listen`) taken in the same run, after the rounds,\n")
		p("%v each, under the loads whose targets are the hardest (`go tool pprof -top FILE` to repeat on the saved file).\n", o.profileTime)
		for _, pr := range res.profiles {
			order := "flat"
			if pr.cum {
				order = "cumulative"
			}
			p("\n### %s: %s\n\n`%s`, by %s time:\n\n```\n%s```\n", pr.name, pr.load, filepath.Base(pr.file), order, pr.top)
		}
		p("\n%s", gapNotes)
	}

	p("\n## How it was run\n\n```sh\nmake bench COTURN=%s   # = bin/icebench compare -icebox bin/icebox -coturn %s -rounds %d -out %s\n```\n\n", o.coturn, o.coturn, o.rounds, o.out)
	p("The servers, as started for each round (SECRET is a fresh random TURN REST secret, the same for both):\n\n```sh\n")
	for _, c := range commands {
		p("%s\n", c)
	}
	p("```\n\nThe load, per scenario (`icebench turn -h`, `icebench signal -h` for the flags):\n\n```sh\n")
	for _, s := range o.scenarios() {
		extra := ""
		if s.opts.indications {
			extra += " -indications"
		}
		if s.opts.transport != "" {
			extra += " -transport " + s.opts.transport
		}
		if s.opts.mode == "flood" {
			extra += fmt.Sprintf(" -flood-channels %d -flood-time %v", s.opts.floodChannels, s.opts.floodTime)
		}
		p("icebench turn -server HOST:PORT -secret SECRET -mode %s -allocations %d -rate %d -size %d -duration %v%s -pid SERVER_PID\n",
			s.opts.mode, s.opts.allocations, s.opts.rate, s.opts.size, s.opts.duration, extra)
	}
	p("icebench turn ... -mode echo -allocations 100 -size 172 -rate 50,100,200,...  # saturation: until 1%% loss\n")
	p("# the channel flood once more against icebox started with --turn.max_channels 0\n")
	p("icebench signal -url ws://HOST:PORT/ws -clients %d -room-size 4 [-rate %.0f] -pid SERVER_PID\n", o.signalClients, o.signalRate)
	p("taskset -c %d node bench/signal-node/server.js PORT  # the signaling yardstick\n", o.serverCPU)
	p("```\n")
	return b.String()
}

func pick(rs []turnResult, f metricOf) []float64 {
	out := make([]float64, 0, len(rs))
	for _, r := range rs {
		out = append(out, f(r))
	}
	return out
}

func pickS(rs []signalResult, f func(signalResult) float64) []float64 {
	out := make([]float64, 0, len(rs))
	for _, r := range rs {
		out = append(out, f(r))
	}
	return out
}

func num(v float64, unit string) string {
	switch {
	case v == 0:
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

func ratio(i, c float64) string {
	if i == 0 || c == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", i/c)
}

func verdict(i, c float64, met func(float64) bool) string {
	if met == nil {
		return ""
	}
	if i == 0 || c == 0 {
		return "?"
	}
	return yes(met(i / c))
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return keys
}

// gapNotes reads the profiles above for the targets that are the hardest to meet: what the
// remaining gap is made of, and the next step on each.
const gapNotes = `### Reading the profiles: where the time goes, and what would move it

- **Relayed packets** (audio, video, saturation). On the fast paths icebox's own code is a few
  percent of its CPU: the time is the kernel's recvmmsg and sendto (syscall frames above; on
  loopback the sender also pays the receiver's softirq). Per wake-up icebox makes the system calls
  coturn makes (one recvmmsg, one sendto per datagram, and no read that only answers EAGAIN), so
  at low rates the ratio is set by the Go scheduler's cost per wake-up (schedule and netpoll, about
  a fifth of icebox's CPU in a profile of the video load), which coturn's event loop does not pay:
  the video profile (fewer, larger packets) shows it most, saturation (many packets per wake-up)
  least. What would move it: reading the relay sockets from shared loops (one epoll wait for many
  sockets, as icebox's signaling does for its connections) instead of one goroutine per
  allocation, and then one sendmmsg for the client-ward datagrams a loop iteration gathers (they
  all leave through the listener socket). pion v4 reads each relay socket in its allocation's own
  goroutine (packetHandler), so this means replacing its read loop: not done.
- **TCP.** The read side cuts and relays every frame within one wait of Go's poller (no read that
  only answers EAGAIN); each ChannelData message to the client is one write, as in coturn. The
  remaining gap is the scheduler's per-wake-up cost, as above, once per connection.
- **Allocation rate** (target >= 1.5x coturn). Neither server uses its whole core in this scenario:
  the rate is bound by the load generator's core and the round trips, so the CPU per allocation is
  the figure that compares the servers. An Allocate is two round trips (401 with a nonce, then the
  authenticated request); icebox verifies MESSAGE-INTEGRITY once in its socket wrapper (against
  every secret) and pion verifies it again, then pion builds the allocation (goroutine, timers,
  maps) and icebox binds a relay socket (socket, bind, registration with the poller: the largest
  single cost). Next steps: hand pion the key icebox already verified, a pool of pre-bound relay
  sockets filled off the request path, and fewer allocations per Allocate in pion's handler.
- **Idle allocations.** About 15 MB of icebox's RSS is its binary's file-backed pages (a fresh
  icebox: 17.5 MB RSS, 14.8 MB of it file-backed); the rest is about 13 KiB per allocation: pion's
  allocation (about 3 KiB of maps, timers and channels), its 1,600-byte read buffer, the reading
  goroutine's stack, icebox's relay socket. icebox's own read buffers are made only when a first
  datagram arrives.
- **Signaling.** An idle connection holds no goroutine: an epoll poller watches parked sockets and
  a pool of workers reads what arrives, so the idle cost is the heap of gorilla's connection, a
  512-byte read buffer, icebox's connection and session, and the socket. Under load (profile
  above) the CPU is mostly the one read and one write system call per message, then JSON
  decoding; Node's ws makes the same two system calls per message, so what would move the ratio
  is fewer system calls: writing the frames queued for one connection in one write (today each
  frame is its own write), and decoding without encoding/json's reflection. The p99 latency is
  the same as Node's on this machine and varies from run to run with what else runs on it (the
  load generator drives 10,000 connections from one core).
`
