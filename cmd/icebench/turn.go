package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/net/ipv4"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/stunturn/turnclient"
)

// turnOptions are the flags of icebench turn.
type turnOptions struct {
	server, transport       string
	secret, user, password  string
	allocations, rate, size int
	concurrency             int
	duration, warmup        time.Duration
	pid                     int
	mode                    string
	floodChannels           int
	floodTime               time.Duration
	indications             bool
	json                    bool
	label                   string
}

func (o *turnOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.server, "server", "127.0.0.1:3478", "TURN server host:port")
	fs.StringVar(&o.transport, "transport", "udp", "udp or tcp to the server")
	fs.StringVar(&o.secret, "secret", "", "TURN REST shared secret: a distinct user per allocation")
	fs.StringVar(&o.user, "user", "", "static long-term user (instead of -secret)")
	fs.StringVar(&o.password, "password", "", "password of -user")
	fs.IntVar(&o.allocations, "allocations", 200, "allocations")
	fs.IntVar(&o.rate, "rate", 50, "packets per second per allocation")
	fs.IntVar(&o.size, "size", 172, "payload bytes per packet")
	fs.IntVar(&o.concurrency, "concurrency", 16, "allocations made at once")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "time before measuring")
	fs.IntVar(&o.pid, "pid", 0, "server process id: CPU per relayed packet and RSS from /proc")
	fs.StringVar(&o.mode, "mode", "echo", "echo (relay load), alloc (allocation rate), idle (RSS of idle allocations) or "+
		"flood (echo load while one more client binds -flood-channels channels and deletes its allocation)")
	fs.IntVar(&o.floodChannels, "flood-channels", 4096, "channel numbers the flood tries, from 0x4000 up (4096: all of RFC 8656's)")
	fs.DurationVar(&o.floodTime, "flood-time", 30*time.Second, "the flood stops binding after this long (a server with quadratic channel lookups takes minutes)")
	fs.BoolVar(&o.indications, "indications", false, "echo: relay with Send and Data indications after a CreatePermission, as Firefox does, instead of ChannelData")
	fs.BoolVar(&o.json, "json", false, "print JSON")
	fs.StringVar(&o.label, "label", "", "a name for the server in the output")
}

// turnResult is one run of icebench turn.
type turnResult struct {
	Label              string       `json:"label,omitempty"`
	Mode               string       `json:"mode"`
	Transport          string       `json:"transport"`
	Indications        bool         `json:"indications,omitempty"`
	Allocations        int          `json:"allocations"`
	Rate               int          `json:"rate_per_allocation"`
	Size               int          `json:"size"`
	AllocationsPerSec  float64      `json:"allocations_per_sec,omitempty"`
	OfferedPerSec      float64      `json:"offered_pps,omitempty"`
	DeliveredPerSec    float64      `json:"delivered_pps,omitempty"`
	Loss               float64      `json:"loss"`
	RTTP50ms           float64      `json:"rtt_p50_ms,omitempty"`
	RTTP99ms           float64      `json:"rtt_p99_ms,omitempty"`
	CPUPerPacketUs     float64      `json:"cpu_us_per_packet,omitempty"`
	CPUPerAllocationUs float64      `json:"cpu_us_per_allocation,omitempty"`
	ServerCPU          float64      `json:"server_cpu,omitempty"` // cores
	RSSKiB             int64        `json:"rss_kib,omitempty"`
	Errors             int          `json:"errors"`
	Flood              *floodResult `json:"flood,omitempty"`
}

// floodResult is what the attacker of -mode flood did and cost the server.
type floodResult struct {
	Tried        int     `json:"tried"`
	Bound        int     `json:"bound"`
	Refused      int     `json:"refused"` // error responses
	BindSeconds  float64 `json:"bind_seconds"`
	DeleteMs     float64 `json:"delete_ms"`          // the Refresh with lifetime 0, answered
	CPUSeconds   float64 `json:"server_cpu_seconds"` // server CPU of the flood, above the echo load
	ErrorMessage string  `json:"error,omitempty"`
}

func (r turnResult) String() string {
	s := fmt.Sprintf("%s %s: %d allocations", r.Label, r.Mode, r.Allocations)
	switch r.Mode {
	case "alloc":
		s += fmt.Sprintf(", %.0f allocations/s", r.AllocationsPerSec)
		if r.CPUPerAllocationUs > 0 {
			s += fmt.Sprintf(", server %.1f µs CPU per allocation (%.2f cores)", r.CPUPerAllocationUs, r.ServerCPU)
		}
	case "idle":
		s += fmt.Sprintf(", server RSS %d KiB", r.RSSKiB)
	default:
		if f := r.Flood; f != nil {
			s += fmt.Sprintf(", flood: %d of %d channels bound (%d refused) in %.2f s, deletion answered in %.1f ms, server CPU of the flood %.2f s;",
				f.Bound, f.Tried, f.Refused, f.BindSeconds, f.DeleteMs, f.CPUSeconds)
			if f.ErrorMessage != "" {
				s += " flood error: " + f.ErrorMessage + ";"
			}
		}
		framing := "ChannelData"
		if r.Indications {
			framing = "Send/Data indications"
		}
		s += fmt.Sprintf(" x %d pps x %d B over %s (%s): offered %.0f pps, delivered %.0f pps, loss %.3f%%, RTT p50 %.2f ms p99 %.2f ms",
			r.Rate, r.Size, r.Transport, framing, r.OfferedPerSec, r.DeliveredPerSec, 100*r.Loss, r.RTTP50ms, r.RTTP99ms)
		if r.CPUPerPacketUs > 0 {
			s += fmt.Sprintf(", server %.2f µs CPU per relayed packet (%.2f cores), RSS %d KiB", r.CPUPerPacketUs, r.ServerCPU, r.RSSKiB)
		}
	}
	if r.Errors > 0 {
		s += fmt.Sprintf(", %d errors", r.Errors)
	}
	return s
}

// credential returns the username and password of allocation i.
func (o *turnOptions) credential(i int) (string, string) {
	if o.secret == "" {
		return o.user, o.password
	}
	name := credentials.Username(time.Now().Add(time.Hour), "bench"+strconv.Itoa(i))
	return name, credentials.Password(o.secret, name)
}

// echoPeer answers every datagram to where it came from (the relay), in batches.
type echoPeer struct {
	conn *net.UDPConn
	done chan struct{}
}

func startEchoPeer() (*echoPeer, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(8 << 20)
	_ = conn.SetWriteBuffer(8 << 20)
	p := &echoPeer{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		pc := ipv4.NewPacketConn(conn)
		msgs := make([]ipv4.Message, 64)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		for {
			n, err := pc.ReadBatch(msgs, 0)
			if err != nil {
				return
			}
			out := msgs[:n]
			for i := range out {
				out[i].Buffers[0] = out[i].Buffers[0][:out[i].N]
			}
			for len(out) > 0 {
				w, err := pc.WriteBatch(out, 0)
				if err != nil {
					break
				}
				out = out[w:]
			}
			for i := range msgs[:n] {
				msgs[i].Buffers[0] = msgs[i].Buffers[0][:cap(msgs[i].Buffers[0])]
			}
		}
	}()
	return p, nil
}

func (p *echoPeer) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *echoPeer) close() {
	_ = p.conn.Close()
	<-p.done
}

// turnConn is one client of the load: turnclient's wire client, whose relayed data (ChannelData
// or Data indications) goes to the handler in onData (set when the measurement starts), with no
// allocation per packet.
type turnConn struct {
	*turnclient.Client
	stream bool
	onData atomic.Pointer[func(payload []byte)]
}

func dialTURN(server, transport string) (*turnConn, error) {
	c := &turnConn{stream: transport != "udp"}
	client, err := turnclient.Dial(transport, server, turnclient.Options{OnData: func(channel uint16, p []byte) {
		if f := c.onData.Load(); f != nil && (channel == benchChannel || channel == 0) {
			(*f)(p)
		}
	}})
	if err != nil {
		return nil, err
	}
	c.Client = client
	return c, nil
}

func (c *turnConn) allocate(username, password string) error {
	_, err := c.Allocate(username, password)
	return err
}

// channelBind binds channel to peer (which also creates the permission).
func (c *turnConn) channelBind(channel uint16, peer netip.AddrPort) error {
	return c.ChannelBind(channel, turnclient.PeerAddress{Addr: peer})
}

// createPermission asks for a permission toward peer's IP (for Send indications).
func (c *turnConn) createPermission(peer netip.AddrPort) error {
	return c.CreatePermission(turnclient.PeerAddress{Addr: peer})
}

// allocateAll makes n allocations, concurrency at a time, and returns them with the time taken.
func allocateAll(o *turnOptions, n int, bind func(c *turnConn, i int) error) ([]*turnConn, time.Duration, int) {
	conns := make([]*turnConn, n)
	var errs atomic.Int64
	next := atomic.Int64{}
	var wg sync.WaitGroup
	start := time.Now()
	for range max(o.concurrency, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := dialTURN(o.server, o.transport)
				if err == nil {
					u, p := o.credential(i)
					if err = c.allocate(u, p); err == nil && bind != nil {
						err = bind(c, i)
					}
					if err != nil {
						c.Close()
					}
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	var ok []*turnConn
	for _, c := range conns {
		if c != nil {
			ok = append(ok, c)
		}
	}
	return ok, took, int(errs.Load())
}

func releaseAll(conns []*turnConn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			_ = c.Refresh(0) // releases the allocation
			c.Close()
			<-sem
		}()
	}
	wg.Wait()
}

const benchChannel = 0x4000

// runTurn runs one TURN scenario.
func runTurn(o *turnOptions) (turnResult, error) {
	res := turnResult{Label: o.label, Mode: o.mode, Transport: o.transport, Allocations: o.allocations, Rate: o.rate, Size: o.size,
		Indications: o.indications}
	switch o.mode {
	case "alloc":
		cpu0 := cpuSeconds(o.pid)
		conns, took, errs := allocateAll(o, o.allocations, nil)
		cpu1 := cpuSeconds(o.pid)
		res.AllocationsPerSec = float64(len(conns)) / took.Seconds()
		if o.pid > 0 && len(conns) > 0 {
			res.ServerCPU = (cpu1 - cpu0) / took.Seconds()
			res.CPUPerAllocationUs = (cpu1 - cpu0) * 1e6 / float64(len(conns))
		}
		res.Errors = errs
		releaseAll(conns)
		return res, nil
	case "idle":
		conns, _, errs := allocateAll(o, o.allocations, nil)
		res.Errors = errs
		time.Sleep(2 * time.Second)
		res.RSSKiB = rssKiB(o.pid)
		releaseAll(conns)
		return res, nil
	case "echo", "flood":
	default:
		return res, fmt.Errorf("unknown -mode %q", o.mode)
	}

	peer, err := startEchoPeer()
	if err != nil {
		return res, err
	}
	defer peer.close()
	conns, _, errs := allocateAll(o, o.allocations, func(c *turnConn, _ int) error {
		if o.indications {
			return c.createPermission(peer.addr())
		}
		return c.channelBind(benchChannel, peer.addr())
	})
	res.Errors = errs
	if len(conns) == 0 {
		return res, errors.New("no allocation succeeded")
	}
	defer releaseAll(conns)

	// The clock: packets sent inside [t0, t1) are measured; their echoes are counted whenever
	// they arrive, until the end of the drain.
	epoch := time.Now()
	var t0, t1 atomic.Int64 // nanoseconds since epoch; 0 until set
	var sent, recv atomic.Int64
	rtts := make([]samples, len(conns))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(max(o.rate, 1))
	for i, c := range conns {
		// The receiver: on the client's reader goroutine, as each packet comes back.
		receive := func(data []byte) {
			if len(data) < 8 {
				return
			}
			at := int64(binary.BigEndian.Uint64(data[0:8]))
			if a, b := t0.Load(), t1.Load(); a != 0 && at >= a && (b == 0 || at < b) {
				recv.Add(1)
				rtts[i].add(float64(time.Since(epoch).Nanoseconds()-at) / 1e6)
			}
		}
		c.onData.Store(&receive)
		wg.Go(func() { // sender
			pkt, stamp := channelDataPacket(o.size, c.stream)
			if o.indications {
				pkt, stamp = sendIndicationPacket(o.size, peer.addr())
			}
			// Spread the allocations' phases over one interval.
			time.Sleep(time.Duration(i) * interval / time.Duration(len(conns)))
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				now := time.Since(epoch).Nanoseconds()
				binary.BigEndian.PutUint64(pkt[stamp:stamp+8], uint64(now))
				if err := c.Write(pkt); err != nil {
					return
				}
				if a, b := t0.Load(), t1.Load(); a != 0 && now >= a && (b == 0 || now < b) {
					sent.Add(1)
				}
			}
		})
	}

	warm := time.Now()
	cpuWarm := cpuSeconds(o.pid)
	time.Sleep(o.warmup)
	cpu0 := cpuSeconds(o.pid)
	t0.Store(time.Since(epoch).Nanoseconds())
	if o.mode == "flood" {
		// The echo load alone costs this much CPU a second: the flood's cost is what it adds.
		base := (cpu0 - cpuWarm) / time.Since(warm).Seconds()
		start := time.Now()
		res.Flood = flood(o, peer.addr(), len(conns))
		took := time.Since(start)
		if o.pid > 0 {
			res.Flood.CPUSeconds = max(0, cpuSeconds(o.pid)-cpu0-base*took.Seconds())
		}
		// The window covers the flood and what follows it (the deletion's teardown).
		time.Sleep(max(o.duration-took, 2*time.Second))
	} else {
		time.Sleep(o.duration)
	}
	t1.Store(time.Since(epoch).Nanoseconds())
	cpu1 := cpuSeconds(o.pid)
	res.RSSKiB = rssKiB(o.pid)
	time.Sleep(time.Second) // the drain: echoes of the last packets
	close(stop)
	wg.Wait()
	for _, c := range conns {
		c.onData.Store(nil)
	}

	window := time.Duration(t1.Load() - t0.Load()).Seconds()
	s, r := float64(sent.Load()), float64(recv.Load())
	res.OfferedPerSec = s / window
	res.DeliveredPerSec = r / window
	if s > 0 {
		res.Loss = max(0, 1-r/s)
	}
	var all []float64
	for i := range rtts {
		all = append(all, rtts[i].all()...)
	}
	res.RTTP50ms, res.RTTP99ms = percentile(all, 0.50), percentile(all, 0.99)
	if o.pid > 0 && s+r > 0 {
		res.CPUPerPacketUs = (cpu1 - cpu0) * 1e6 / (s + r) // two relayed datagrams per echo
		res.ServerCPU = (cpu1 - cpu0) / window
	}
	return res, nil
}

// samples are the round trips of one allocation, added on its reader goroutine.
type samples struct {
	mu   sync.Mutex
	rtts []float64
}

func (s *samples) add(ms float64) {
	s.mu.Lock()
	s.rtts = append(s.rtts, ms)
	s.mu.Unlock()
}

func (s *samples) all() []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rtts
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	return xs[min(len(xs)-1, int(p*float64(len(xs))))]
}

// flood is the attacker of -mode flood: one more allocation that binds channels 0x4000,
// 0x4001, ... (o.floodChannels numbers) to distinct ports of the echo peer, one request after
// another, then deletes its allocation.
func flood(o *turnOptions, peer netip.AddrPort, index int) *floodResult {
	r := &floodResult{}
	c, err := dialTURN(o.server, o.transport)
	if err != nil {
		r.ErrorMessage = err.Error()
		return r
	}
	defer c.Close()
	u, p := o.credential(index)
	if err := c.allocate(u, p); err != nil {
		r.ErrorMessage = err.Error()
		return r
	}
	start := time.Now()
	for i := range min(o.floodChannels, 0x10000-0x4000) {
		if o.floodTime > 0 && time.Since(start) > o.floodTime {
			r.ErrorMessage = fmt.Sprintf("stopped after %v", o.floodTime)
			break
		}
		r.Tried++
		to := netip.AddrPortFrom(peer.Addr(), uint16(10000+i%50000))
		if err := c.channelBind(uint16(0x4000+i), to); err != nil {
			if _, refused := errors.AsType[*turnclient.ErrorResponse](err); !refused {
				r.ErrorMessage = err.Error() // no answer: the server is stuck or gone
				break
			}
			r.Refused++
			continue
		}
		r.Bound++
	}
	r.BindSeconds = time.Since(start).Seconds()
	start = time.Now()
	if err := c.Refresh(0); err != nil {
		r.ErrorMessage = "delete: " + err.Error()
	}
	r.DeleteMs = float64(time.Since(start).Microseconds()) / 1000
	return r
}

// channelDataPacket is a ChannelData message of size bytes on benchChannel (padded on streams),
// and where its timestamp goes.
func channelDataPacket(size int, stream bool) ([]byte, int) {
	pkt := make([]byte, 4+((size+3)&^3))
	binary.BigEndian.PutUint16(pkt[0:2], benchChannel)
	binary.BigEndian.PutUint16(pkt[2:4], uint16(size))
	if !stream {
		pkt = pkt[:4+size]
	}
	return pkt, 4
}

// sendIndicationPacket is a Send indication of size bytes to peer, and where its timestamp
// goes (the start of its DATA).
func sendIndicationPacket(size int, peer netip.AddrPort) ([]byte, int) {
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		turnclient.PeerAddress{Addr: peer}, turnclient.Attr(stun.AttrData, make([]byte, size)))
	if err != nil {
		panic(err) // fixed attributes: cannot fail
	}
	return m.Raw, len(m.Raw) - ((size + 3) &^ 3)
}
