package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// signalOptions are the flags of icebench signal.
type signalOptions struct {
	url         string
	url2        string // every other client connects here: cross-node latency
	token       string
	clients     int
	roomSize    int
	rate        float64
	concurrency int
	duration    time.Duration
	warmup      time.Duration
	pid         int
	json        bool
	label       string
}

func (o *signalOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.url, "url", "ws://127.0.0.1:8080/ws", "signaling URL")
	fs.StringVar(&o.url2, "url2", "", "a second node's signaling URL (same Redis): every other client connects there, so each message crosses nodes (rooms of an even size)")
	fs.StringVar(&o.token, "token", "", "token (auth.mode token or jwt)")
	fs.IntVar(&o.clients, "clients", 1000, "WebSocket clients")
	fs.IntVar(&o.roomSize, "room-size", 4, "clients per room")
	fs.Float64Var(&o.rate, "rate", 0, "signal messages per second, over all clients (0: idle)")
	fs.IntVar(&o.concurrency, "concurrency", 64, "connections opened at once")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "time before measuring")
	fs.IntVar(&o.pid, "pid", 0, "server process id: RSS per connection from /proc")
	fs.BoolVar(&o.json, "json", false, "print JSON")
	fs.StringVar(&o.label, "label", "icebox", "a name for the server in the output")
}

// signalResult is one run of icebench signal.
type signalResult struct {
	Label           string  `json:"label,omitempty"`
	Clients         int     `json:"clients"`
	RoomSize        int     `json:"room_size"`
	ConnectPerSec   float64 `json:"connects_per_sec"`
	RSSBaseKiB      int64   `json:"rss_base_kib,omitempty"`
	RSSIdleKiB      int64   `json:"rss_idle_kib,omitempty"`
	RSSPerConnKiB   float64 `json:"rss_per_conn_kib,omitempty"`
	Rate            float64 `json:"rate,omitempty"`
	SentPerSec      float64 `json:"sent_per_sec,omitempty"`
	DeliveredPerSec float64 `json:"delivered_per_sec,omitempty"`
	Loss            float64 `json:"loss"`
	LatencyP50ms    float64 `json:"latency_p50_ms,omitempty"`
	LatencyP99ms    float64 `json:"latency_p99_ms,omitempty"`
	ServerCPU       float64 `json:"server_cpu,omitempty"`
	Errors          int     `json:"errors"`
}

func (r signalResult) String() string {
	s := fmt.Sprintf("%s signal: %d clients in rooms of %d, %.0f connects/s", r.Label, r.Clients, r.RoomSize, r.ConnectPerSec)
	if r.RSSPerConnKiB > 0 {
		s += fmt.Sprintf(", server RSS %.1f KiB per idle connection", r.RSSPerConnKiB)
	}
	if r.Rate > 0 {
		s += fmt.Sprintf(", %.0f msgs/s offered, %.0f sent, %.0f delivered (loss %.3f%%), latency p50 %.2f ms p99 %.2f ms, server %.2f cores",
			r.Rate, r.SentPerSec, r.DeliveredPerSec, 100*r.Loss, r.LatencyP50ms, r.LatencyP99ms, r.ServerCPU)
	}
	if r.Errors > 0 {
		s += fmt.Sprintf(", %d errors", r.Errors)
	}
	return s
}

// sigClient is a lean protocol client: the reader goroutine records latencies.
type sigClient struct {
	ws   *websocket.Conn
	peer string
	wmu  sync.Mutex
	mu   sync.Mutex // guards lat
	lat  []float64
	got  chan string // joined replies
}

func (c *sigClient) sendRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *sigClient) send(v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteJSON(v)
}

func runSignal(o *signalOptions) (signalResult, error) {
	res := signalResult{Label: o.label, Clients: o.clients, RoomSize: o.roomSize, Rate: o.rate}
	var urls []string
	for _, raw := range []string{o.url, o.url2} {
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			return res, err
		}
		if o.token != "" {
			q := u.Query()
			q.Set("token", o.token)
			u.RawQuery = q.Encode()
		}
		urls = append(urls, u.String())
	}
	runtime.GC()
	time.Sleep(time.Second)
	res.RSSBaseKiB = rssKiB(o.pid)

	epoch := time.Now()
	var t0, t1 atomic.Int64
	var delivered, sent, errs atomic.Int64
	clients := make([]*sigClient, o.clients)
	dialer := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	next := atomic.Int64{}
	var wg sync.WaitGroup
	start := time.Now()
	for range max(o.concurrency, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= o.clients {
					return
				}
				ws, resp, err := dialer.Dial(urls[i%len(urls)], http.Header{})
				if resp != nil && resp.Body != nil {
					_ = resp.Body.Close()
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				var welcome protocol.Message
				if err := ws.ReadJSON(&welcome); err != nil {
					errs.Add(1)
					_ = ws.Close()
					continue
				}
				c := &sigClient{ws: ws, peer: welcome.Peer, got: make(chan string, 1)}
				clients[i] = c
				go func() { // reader
					for {
						_, b, err := ws.ReadMessage()
						if err != nil {
							return
						}
						// Signals are most of the load: read their timestamp without decoding JSON.
						if i := bytes.Index(b, []byte(`"data":{"t":`)); i >= 0 && bytes.Contains(b, []byte(`"type":"signal"`)) {
							rest := b[i+len(`"data":{"t":`):]
							end := bytes.IndexByte(rest, '}')
							at, err := strconv.ParseInt(string(rest[:max(end, 0)]), 10, 64)
							if err != nil {
								continue
							}
							if a, z := t0.Load(), t1.Load(); a != 0 && at >= a && (z == 0 || at < z) {
								delivered.Add(1)
								c.mu.Lock()
								c.lat = append(c.lat, float64(time.Since(epoch).Nanoseconds()-at)/1e6)
								c.mu.Unlock()
							}
							continue
						}
						var m protocol.Message
						if json.Unmarshal(b, &m) == nil && (m.Type == protocol.TypeJoined || m.Type == protocol.TypeError) {
							select {
							case c.got <- m.Type:
							default:
							}
						}
					}
				}()
			}
		}()
	}
	wg.Wait()
	res.ConnectPerSec = float64(o.clients-int(errs.Load())) / time.Since(start).Seconds()
	defer func() {
		for _, c := range clients {
			if c != nil {
				_ = c.ws.Close()
			}
		}
	}()

	// Rooms of roomSize, joined in order.
	for i, c := range clients {
		if c == nil {
			continue
		}
		if err := c.send(map[string]any{"type": protocol.TypeJoin, "room": fmt.Sprintf("bench-%d", i/max(o.roomSize, 1))}); err != nil {
			errs.Add(1)
			continue
		}
		select {
		case t := <-c.got:
			if t != protocol.TypeJoined {
				errs.Add(1)
			}
		case <-time.After(10 * time.Second):
			errs.Add(1)
		}
	}
	runtime.GC()
	time.Sleep(2 * time.Second)
	res.RSSIdleKiB = rssKiB(o.pid)
	if res.RSSBaseKiB > 0 {
		res.RSSPerConnKiB = float64(res.RSSIdleKiB-res.RSSBaseKiB) / float64(o.clients)
	}
	res.Errors = int(errs.Load())
	if o.rate <= 0 {
		return res, nil
	}

	// Load: messages from client i to the next one of its room, spread evenly over time.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		const tick = time.Millisecond
		credit := 0.0
		i := 0
		var msg []byte
		t := time.NewTicker(tick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			// The credit follows the clock, not the ticks: a ticker drops ticks when late.
			now := time.Now()
			credit += o.rate * now.Sub(last).Seconds()
			last = now
			for ; credit >= 1; credit-- {
				c := clients[i%len(clients)]
				room := (i % len(clients)) / o.roomSize
				to := clients[room*o.roomSize+((i%len(clients))%o.roomSize+1)%o.roomSize]
				i++
				if c == nil || to == nil || c == to {
					continue
				}
				now := time.Since(epoch).Nanoseconds()
				msg = append(msg[:0], `{"type":"signal","to":"`...)
				msg = append(msg, to.peer...)
				msg = append(msg, `","data":{"t":`...)
				msg = strconv.AppendInt(msg, now, 10)
				msg = append(msg, "}}"...)
				if err := c.sendRaw(msg); err != nil {
					errs.Add(1)
				} else if a, z := t0.Load(), t1.Load(); a != 0 && now >= a && (z == 0 || now < z) {
					sent.Add(1)
				}
			}
		}
	}()
	time.Sleep(o.warmup)
	cpu0 := cpuSeconds(o.pid)
	t0.Store(time.Since(epoch).Nanoseconds())
	time.Sleep(o.duration)
	t1.Store(time.Since(epoch).Nanoseconds())
	if o.pid > 0 {
		res.ServerCPU = (cpuSeconds(o.pid) - cpu0) / o.duration.Seconds()
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	<-done
	window := time.Duration(t1.Load() - t0.Load()).Seconds()
	res.DeliveredPerSec = float64(delivered.Load()) / window
	res.SentPerSec = float64(sent.Load()) / window
	if n := sent.Load(); n > 0 {
		res.Loss = max(0, 1-float64(delivered.Load())/float64(n))
	}
	var all []float64
	for _, c := range clients {
		if c != nil {
			_ = c.ws.SetReadDeadline(time.Now())
		}
	}
	time.Sleep(100 * time.Millisecond)
	for _, c := range clients {
		if c != nil {
			c.mu.Lock()
			all = append(all, c.lat...)
			c.mu.Unlock()
		}
	}
	res.LatencyP50ms, res.LatencyP99ms = percentile(all, 0.5), percentile(all, 0.99)
	res.Errors = int(errs.Load())
	if len(all) == 0 {
		return res, errors.New("no message was delivered")
	}
	return res, nil
}
