package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// profiled is where icebox's CPU goes under one load: `go tool pprof -top` of a CPU profile
// taken from icebox's own /debug/pprof (debug.pprof_listen) while the load runs.
type profiled struct {
	name, load, file, top string
	cum                   bool
}

// profileLoads runs the loads whose targets are hardest to meet against a fresh icebox with
// the Go profiler on. It needs the go command (for go tool pprof); without it, nothing.
func (o *compareOptions) profileLoads(secret string) []profiled {
	gobin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "profiles: no go command:", err)
		return nil
	}
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", freePort("tcp"))
	s, err := o.startIcebox(secret, "--debug.pprof_listen", pprofAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profiles:", err)
		return nil
	}
	defer s.stop()
	dir := filepath.Dir(o.out)
	if o.profileDir != "" {
		dir = o.profileDir
	}
	_ = os.MkdirAll(dir, 0o750)

	base := turnOptions{server: s.turn, transport: "udp", secret: secret, pid: s.pid(), label: "icebox", concurrency: 16}
	type load struct {
		name, load string
		cum        bool          // sorted by cumulative time: where a request's path spends it
		ramp       time.Duration // from the load's start to the profile's
		run        func(ctx context.Context)
	}
	loads := []load{
		{"saturation", "100 allocations x 800 pps x 172 B (echo)", false, time.Second, func(ctx context.Context) {
			opts := base
			opts.mode, opts.allocations, opts.rate, opts.size, opts.duration, opts.warmup = "echo", 100, 800, 172, o.profileTime+2*time.Second, time.Second
			_, _ = runTurn(&opts)
		}},
		{"allocation rate", "batches of 1500 allocations, released after each batch", true, time.Second, func(ctx context.Context) {
			for ctx.Err() == nil {
				opts := base
				opts.mode, opts.allocations = "alloc", 1500
				if _, err := runTurn(&opts); err != nil {
					return
				}
			}
		}},
	}
	if !o.skipSignaling {
		// The clients connect and warm up for 6 s (at about 5,000 connects/s), then send for
		// longer than the profile takes.
		loads = append(loads, load{"signaling", fmt.Sprintf("%d clients in rooms of 4, %.0f messages/s", o.signalClients, o.signalRate), true, 6 * time.Second, func(context.Context) {
			so := signalOptions{url: "ws://" + s.http + "/ws", clients: o.signalClients, roomSize: 4, concurrency: 64, rate: o.signalRate,
				duration: o.profileTime + 4*time.Second, warmup: 4 * time.Second, pid: s.pid(), label: "icebox"}
			_, _ = runSignal(&so)
		}})
	}
	var out []profiled
	for _, l := range loads {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { l.run(ctx) })
		time.Sleep(l.ramp) // the load ramps up
		file := filepath.Join(dir, "profile-"+strings.ReplaceAll(l.name, " ", "-")+".pb.gz")
		err := fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(o.profileTime.Seconds())), file)
		cancel()
		wg.Wait()
		if err != nil {
			fmt.Fprintln(os.Stderr, "profile", l.name+":", err)
			continue
		}
		args := []string{"tool", "pprof", "-top", "-nodecount=30"}
		if l.cum {
			args = append(args, "-cum")
		}
		top, err := exec.Command(gobin, append(args, file)...).Output() //nolint:gosec // go, from PATH
		if err != nil {
			fmt.Fprintln(os.Stderr, "pprof", l.name+":", err)
			continue
		}
		out = append(out, profiled{name: l.name, load: l.load, file: file, cum: l.cum, top: trimPprof(string(top))})
	}
	return out
}

func fetch(url, file string) error {
	resp, err := http.Get(url) //nolint:gosec,noctx // icebox's profiler on loopback
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file) //nolint:gosec // next to the report
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// trimPprof drops pprof's header lines that name local files and build ids.
func trimPprof(s string) string {
	var keep []string
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Type:") || strings.HasPrefix(line, "Time:") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n") + "\n"
}
