// Command icebench measures TURN servers and icebox's signaling under load: icebench turn drives
// allocations echoing through a local UDP peer (icebox or coturn alike), icebench signal drives
// WebSocket clients in rooms, and icebench compare runs both servers side by side and writes
// BENCHMARKS.md. It is for benchmarks (make bench), not tests.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

func usage() {
	fmt.Fprint(os.Stderr, `usage: icebench turn|signal|compare [flags]
  turn     TURN allocations echoing through a local UDP peer
  signal   WebSocket clients in rooms exchanging signal messages
  compare  icebox against coturn on one machine; writes BENCHMARKS.md
Run "icebench COMMAND -h" for the flags.
`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var result fmt.Stringer
	var asJSON *bool
	var run func() (fmt.Stringer, error)
	switch os.Args[1] {
	case "turn":
		var o turnOptions
		o.register(fs)
		asJSON = &o.json
		run = func() (fmt.Stringer, error) { return runTurn(&o) }
	case "signal":
		var o signalOptions
		o.register(fs)
		asJSON = &o.json
		run = func() (fmt.Stringer, error) { return runSignal(&o) }
	case "compare":
		var o compareOptions
		o.register(fs)
		asJSON = new(bool)
		run = func() (fmt.Stringer, error) { return runCompare(&o) }
	default:
		usage()
	}
	_ = fs.Parse(os.Args[2:])
	result, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "icebench:", err)
		os.Exit(1)
	}
	if *asJSON {
		b, _ := json.Marshal(result)
		fmt.Println(string(b))
		return
	}
	fmt.Println(result)
}
