package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/sys/unix"
)

// compareOptions are the flags of icebench compare.
type compareOptions struct {
	icebox, coturn string
	rounds         int
	out            string
	serverCPU      int
	loadCPU        int
	quick          bool
	skipSignaling  bool
	signalClients  int
	signalRate     float64
	micro          string
	profileTime    time.Duration
	profileDir     string
	node           string // node.js, for the signaling yardstick
	nodeServer     string
}

func (o *compareOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.icebox, "icebox", "bin/icebox", "icebox binary")
	fs.StringVar(&o.coturn, "coturn", "turnserver", "coturn's turnserver binary")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds, alternating which server goes first")
	fs.StringVar(&o.out, "out", "BENCHMARKS.md", "report to write")
	fs.IntVar(&o.serverCPU, "server-cpu", 0, "CPU the servers are pinned to")
	fs.IntVar(&o.loadCPU, "load-cpu", 1, "CPU the load generator is pinned to")
	fs.BoolVar(&o.quick, "quick", false, "short runs, one round (a smoke test of the harness)")
	fs.BoolVar(&o.skipSignaling, "skip-signaling", false, "skip the signaling scenarios")
	fs.IntVar(&o.signalClients, "signal-clients", 10000, "WebSocket clients of the signaling scenarios")
	fs.Float64Var(&o.signalRate, "signal-rate", 8000, "signal messages per second of the latency scenario")
	fs.StringVar(&o.node, "node", "node", "Node.js, to run the signaling yardstick (\"\": skip it)")
	fs.StringVar(&o.nodeServer, "node-server", "bench/signal-node/server.js", "the yardstick: the same protocol relayed by Node.js and ws (npm ci in its folder first)")
	fs.StringVar(&o.micro, "micro", "", "output of go test -bench to include in the report")
	fs.DurationVar(&o.profileTime, "profile", 8*time.Second, "CPU profile of icebox under the saturation, allocation and signaling loads, this long (0: none)")
	fs.StringVar(&o.profileDir, "profile-dir", "", "where the profiles go (default: next to -out)")
}

// server is one TURN server under test.
type server struct {
	name string
	cmd  *exec.Cmd
	turn string // host:port
	http string // icebox only
	args []string
}

func freePort(network string) int {
	if network == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0
		}
		defer func() { _ = c.Close() }()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// freeTURNPort is a port free for both UDP and TCP.
func freeTURNPort() int {
	for range 100 {
		p := freePort("udp")
		if l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			_ = l.Close()
			return p
		}
	}
	return 0
}

// Relay ranges, outside Linux's default ephemeral range (32768-60999) so that client sockets
// never take a relay port, and apart for the two servers; 10,000 ports each, so that the idle
// scenario's 2,000 allocations fit even while the ports of the allocation-rate scenario's 1,500
// are not given back yet (coturn 4.17.1 keeps them a while: 1,299 of 2,000 failed in 2,200).
const (
	iceboxRelayMin, iceboxRelayMax = 10000, 19999
	coturnRelayMin, coturnRelayMax = 20000, 29999
)

func (o *compareOptions) startIcebox(secret string, extra ...string) (*server, error) {
	turnPort, httpPort := freeTURNPort(), freePort("tcp")
	s := &server{name: "icebox", turn: fmt.Sprintf("127.0.0.1:%d", turnPort), http: fmt.Sprintf("127.0.0.1:%d", httpPort)}
	s.args = []string{"taskset", "-c", strconv.Itoa(o.serverCPU), o.icebox, "serve",
		"--http.listen", s.http, "--turn.udp_listen", s.turn, "--turn.tcp_listen", s.turn,
		"--turn.relay_address", "127.0.0.1", "--public_ip", "127.0.0.1", "--public_host", "127.0.0.1",
		"--turn.relay_port_min", strconv.Itoa(iceboxRelayMin), "--turn.relay_port_max", strconv.Itoa(iceboxRelayMax),
		"--turn.allowed_peer_cidrs", "127.0.0.1/32", "--turn.user_quota", "0", "--credentials.secrets", secret,
		"--http.rate_limit", "0", "--signaling.max_conns_per_ip", "0", "--signaling.rate_limit", "0",
		"--shutdown.drain", "0s", "--log.level", "warn"}
	s.args = append(s.args, extra...)
	s.cmd = exec.Command(s.args[0], s.args[1:]...) //nolint:gosec // the binaries under test, from the flags
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + s.http + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return s, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return nil, errors.New("icebox did not become ready")
}

func (o *compareOptions) startCoturn(secret string) (*server, error) {
	port := freeTURNPort()
	s := &server{name: "coturn", turn: fmt.Sprintf("127.0.0.1:%d", port)}
	s.args = []string{"taskset", "-c", strconv.Itoa(o.serverCPU), o.coturn, "-n",
		"--listening-ip=127.0.0.1", "--listening-port=" + strconv.Itoa(port), "--relay-ip=127.0.0.1",
		"--min-port=" + strconv.Itoa(coturnRelayMin), "--max-port=" + strconv.Itoa(coturnRelayMax),
		"--use-auth-secret", "--static-auth-secret=" + secret, "--realm=icebox",
		"--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers", "--no-multicast-peers",
		"--user-quota=0", "--total-quota=0", "--no-software-attribute", "--pidfile=/dev/null",
		"--log-file=/dev/null", "--no-stdout-log"}
	s.cmd = exec.Command(s.args[0], s.args[1:]...) //nolint:gosec // the binaries under test, from the flags
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	// Ready when it answers a STUN Binding.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if stunAnswers(s.turn) {
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return nil, errors.New("coturn did not answer STUN")
}

func stunAnswers(addr string) bool {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return false
	}
	defer func() { _ = c.Close() }()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	_, _ = c.Write(req.Raw)
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1500)
	_, err = c.Read(buf)
	return err == nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) stop() {
	_ = s.cmd.Process.Signal(unix.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// The server's pid is taskset's until taskset execs the server: it execs in place, so the pid
// is the server's.

// scenario is one measurement, run against both servers.
type scenario struct {
	name string
	opts turnOptions
}

func (o *compareOptions) scenarios() []scenario {
	d, w := 10*time.Second, 2*time.Second
	idle, allocs := 2000, 1500
	if o.quick {
		d, w, idle, allocs = 3*time.Second, time.Second, 300, 100
	}
	return []scenario{
		{"audio", turnOptions{mode: "echo", allocations: 200, rate: 50, size: 172, duration: d, warmup: w}},
		{"video", turnOptions{mode: "echo", allocations: 50, rate: 90, size: 960, duration: d, warmup: w}},
		{"indications", turnOptions{mode: "echo", allocations: 200, rate: 50, size: 172, duration: d, warmup: w, indications: true}},
		{"tcp", turnOptions{mode: "echo", allocations: 200, rate: 50, size: 172, duration: d, warmup: w, transport: "tcp"}},
		{"allocation rate", turnOptions{mode: "alloc", allocations: allocs}},
		{"idle allocations", turnOptions{mode: "idle", allocations: idle}},
		{floodScenario, turnOptions{mode: "flood", allocations: 50, rate: 50, size: 172, duration: d, warmup: w,
			floodChannels: 4096, floodTime: 30 * time.Second}},
	}
}

// The channel flood (issue "hold under abuse"): audio-like bystanders while one client binds
// as many channels as the server lets it and deletes its allocation. icebox runs it twice: as
// configured by default (turn.max_channels 64) and with the limit off.
const (
	floodScenario        = "channel flood"
	floodUnlimitedResult = "channel flood, max_channels 0"
)

// saturation raises the offered load (audio packets) until 1% of it is lost, and returns the
// last load under 1% loss.
func saturation(base turnOptions, quick bool) (turnResult, []turnResult) {
	steps := []int{50, 100, 200, 300, 400, 500, 650, 800, 1000, 1250, 1500, 2000}
	d := 4 * time.Second
	if quick {
		steps, d = []int{50, 200, 500}, 2*time.Second
	}
	var best turnResult
	var all []turnResult
	for _, rate := range steps {
		o := base
		o.mode, o.allocations, o.rate, o.size, o.duration, o.warmup = "echo", 100, rate, 172, d, time.Second
		r, err := runTurn(&o)
		if err != nil {
			break
		}
		all = append(all, r)
		if r.Loss >= 0.01 {
			break
		}
		best = r
	}
	return best, all
}

type roundResults struct {
	turn                    map[string]map[string][]turnResult // scenario -> server -> rounds
	saturation              map[string][]turnResult
	signal, latency         []signalResult // icebox: idle, under load
	nodeSignal, nodeLatency []signalResult // the Node.js ws yardstick
	profiles                []profiled
}

// signalRounds runs the signaling scenarios against url: idle connections, then the load.
func (o *compareOptions) signalRounds(url string, pid int, label string, round int) (idle, load []signalResult) {
	clients := o.signalClients
	if o.quick {
		clients = 1000
	}
	so := signalOptions{url: url, clients: clients, roomSize: 4, concurrency: 64,
		duration: 10 * time.Second, warmup: 2 * time.Second, pid: pid, label: label}
	if r, err := runSignal(&so); err == nil {
		fmt.Fprintf(os.Stderr, "round %d: %s\n", round+1, r)
		idle = append(idle, r)
	} else {
		fmt.Fprintf(os.Stderr, "%s signal idle: %v\n", label, err)
	}
	so.rate = o.signalRate
	if o.quick {
		so.duration = 3 * time.Second
	}
	if r, err := runSignal(&so); err == nil {
		fmt.Fprintf(os.Stderr, "round %d: %s\n", round+1, r)
		load = append(load, r)
	} else {
		fmt.Fprintf(os.Stderr, "%s signal load: %v\n", label, err)
	}
	return idle, load
}

// startNode runs the Node.js ws yardstick pinned like the servers, ready once it accepts.
func (o *compareOptions) startNode() (*server, error) {
	port := freePort("tcp")
	s := &server{name: "node", http: fmt.Sprintf("127.0.0.1:%d", port)}
	s.args = []string{"taskset", "-c", strconv.Itoa(o.serverCPU), o.node, o.nodeServer, strconv.Itoa(port)}
	s.cmd = exec.Command(s.args[0], s.args[1:]...) //nolint:gosec // the yardstick, from the flags
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", s.http); err == nil {
			_ = c.Close()
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return nil, errors.New("node did not listen")
}

func runCompare(o *compareOptions) (fmt.Stringer, error) {
	if o.quick {
		o.rounds = 1
	}
	// The load runs on its own core, the servers on theirs.
	var set unix.CPUSet
	set.Set(o.loadCPU)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pinning the load to CPU %d: %w", o.loadCPU, err)
	}
	runtime.GOMAXPROCS(1)
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		rl.Cur = rl.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	secret := hex.EncodeToString(b)

	res := roundResults{turn: map[string]map[string][]turnResult{}, saturation: map[string][]turnResult{}}
	var commands []string
	for round := range o.rounds {
		order := []string{"icebox", "coturn"}
		if round%2 == 1 {
			order = []string{"coturn", "icebox"}
		}
		for _, name := range order {
			var s *server
			var err error
			if name == "icebox" {
				s, err = o.startIcebox(secret)
			} else {
				s, err = o.startCoturn(secret)
			}
			if err != nil {
				return nil, err
			}
			if round == 0 {
				commands = append(commands, strings.Join(redact(s.args, secret), " "))
			}
			for _, sc := range o.scenarios() {
				opts := sc.opts
				opts.server, opts.secret, opts.pid, opts.label, opts.concurrency = s.turn, secret, s.pid(), name, 16
				opts.transport = cmp.Or(opts.transport, "udp")
				r, err := runTurn(&opts)
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s %s: %v\n", name, sc.name, err)
					continue
				}
				fmt.Fprintf(os.Stderr, "round %d: %s\n", round+1, r)
				if res.turn[sc.name] == nil {
					res.turn[sc.name] = map[string][]turnResult{}
				}
				res.turn[sc.name][name] = append(res.turn[sc.name][name], r)
			}
			if name == "icebox" {
				s.stop() // the same scenario on an icebox without the channel limit
				if r, err := o.floodUnlimited(secret); err == nil {
					fmt.Fprintf(os.Stderr, "round %d: %s\n", round+1, r)
					res.turn[floodUnlimitedResult] = map[string][]turnResult{"icebox": append(res.turn[floodUnlimitedResult]["icebox"], r)}
				} else {
					fmt.Fprintf(os.Stderr, "icebox %s: %v\n", floodUnlimitedResult, err)
				}
				if s, err = o.startIcebox(secret); err != nil {
					return nil, err
				}
			}
			best, steps := saturation(turnOptions{server: s.turn, transport: "udp", secret: secret, pid: s.pid(), label: name, concurrency: 16}, o.quick)
			for _, st := range steps {
				fmt.Fprintf(os.Stderr, "round %d saturation: %s\n", round+1, st)
			}
			res.saturation[name] = append(res.saturation[name], best)

			if name == "icebox" && !o.skipSignaling {
				idle, load := o.signalRounds("ws://"+s.http+"/ws", s.pid(), "icebox", round)
				res.signal, res.latency = append(res.signal, idle...), append(res.latency, load...)
			}
			s.stop()
			if name == "coturn" && !o.skipSignaling && o.node != "" {
				if n, err := o.startNode(); err == nil {
					idle, load := o.signalRounds("ws://"+n.http+"/ws", n.pid(), "node", round)
					res.nodeSignal, res.nodeLatency = append(res.nodeSignal, idle...), append(res.nodeLatency, load...)
					n.stop()
				} else {
					fmt.Fprintf(os.Stderr, "node signaling: %v\n", err)
				}
			}
		}
	}
	if o.profileTime > 0 && !o.quick {
		res.profiles = o.profileLoads(secret)
	}
	report := writeReport(o, res, commands)
	if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil { //nolint:gosec // a report
		return nil, err
	}
	return stringer("wrote " + o.out), nil
}

// floodUnlimited runs the channel flood on an icebox with turn.max_channels 0.
func (o *compareOptions) floodUnlimited(secret string) (turnResult, error) {
	s, err := o.startIcebox(secret, "--turn.max_channels", "0")
	if err != nil {
		return turnResult{}, err
	}
	defer s.stop()
	for _, sc := range o.scenarios() {
		if sc.name == floodScenario {
			opts := sc.opts
			opts.server, opts.transport, opts.secret, opts.pid, opts.label, opts.concurrency = s.turn, "udp", secret, s.pid(), "icebox max_channels 0", 16
			return runTurn(&opts)
		}
	}
	return turnResult{}, errors.New("no flood scenario")
}

type stringer string

func (s stringer) String() string { return string(s) }

func redact(args []string, secret string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, secret, "SECRET")
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	kernel := strings.TrimRight(string(u.Release[:]), "\x00")
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.TrimSpace(strings.TrimPrefix(strings.Split(string(b), "\n")[0], "MemTotal:"))
	}
	return fmt.Sprintf("%s, %d CPUs, %s RAM, Linux %s, %s", model, runtime.NumCPU(), mem, kernel, runtime.Version())
}

// version asks a binary for its version (--version), "unknown" when it does not say.
func version(bin string) string {
	out, err := exec.CommandContext(context.Background(), bin, "--version").CombinedOutput() //nolint:gosec // the binaries under test
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return strings.SplitN(v, "\n", 2)[0]
	}
	return "unknown"
}
