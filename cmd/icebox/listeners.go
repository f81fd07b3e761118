package main

import (
	"fmt"
	"net"
)

// sharedListeners reports every pair of listeners configured on the same port of the same
// protocol where one would take the other's address: the same host, or one of them on every
// address ("" / 0.0.0.0 / ::). The start would fail on the second bind, naming one key; this
// names both. Port 0 (a free port) never clashes.
func sharedListeners(c Config) []error {
	type listener struct{ key, proto, addr string }
	ls := []listener{
		{"http.listen", "tcp", c.HTTP.Listen},
		{"turn.udp_listen", "udp", c.TURN.UDPListen},
		{"turn.tcp_listen", "tcp", c.TURN.TCPListen},
		{"turn.tls_listen", "tcp", c.TURN.TLSListen},
		{"edge.listen", "tcp", c.Edge.Listen},
		{"edge.udp_listen", "udp", c.Edge.UDPListen},
		{"acme.http_listen", "tcp", c.ACME.HTTPListen},
		{"debug.pprof_listen", "tcp", c.Debug.PprofListen},
	}
	var errs []error
	for i, a := range ls {
		for _, b := range ls[i+1:] {
			if a.proto == b.proto && sameSocket(a.addr, b.addr) {
				errs = append(errs, fmt.Errorf("%s: %q takes the same %s port as %s %q: give one of them another port",
					a.key, a.addr, a.proto, b.key, b.addr))
			}
		}
	}
	return errs
}

// sameSocket reports whether binding listen addresses a and b would clash.
func sameSocket(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if a == "" || b == "" || errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	any := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" || h == "[::]" }
	return ha == hb || any(ha) || any(hb)
}
