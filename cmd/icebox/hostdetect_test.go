package main

import (
	"net/netip"
	"testing"
	"time"
)

func TestPublicAddrs(t *testing.T) {
	addrs := func(list ...string) func() []netip.Addr {
		return func() []netip.Addr {
			var out []netip.Addr
			for _, s := range list {
				out = append(out, netip.MustParseAddr(s))
			}
			return out
		}
	}
	for _, tc := range []struct {
		name                 string
		host, ip             string
		ifaces               func() []netip.Addr
		wantHost, wantIP     string
		hostGuess, ipGuessed bool
	}{
		{"nothing but loopback", "", "", addrs("127.0.0.1", "::1"), "127.0.0.1", "127.0.0.1", true, true},
		{"no interfaces", "", "", addrs(), "127.0.0.1", "127.0.0.1", true, true},
		{"public preferred over private", "", "", addrs("fe80::1", "10.0.0.5", "2001:db8::5", "203.0.113.9"), "203.0.113.9", "203.0.113.9", true, true},
		{"first private when nothing else", "", "", addrs("169.254.1.1", "100.64.0.1", "192.168.1.20"), "100.64.0.1", "100.64.0.1", true, true},
		{"first public wins", "", "", addrs("198.51.100.1", "203.0.113.9"), "198.51.100.1", "198.51.100.1", true, true},
		{"IPv4-mapped counts as IPv4", "", "", addrs("::ffff:203.0.113.9"), "203.0.113.9", "203.0.113.9", true, true},
		{"both configured", "turn.example.com", "203.0.113.1", addrs("10.0.0.5"), "turn.example.com", "203.0.113.1", false, false},
		{"host configured, ip detected", "turn.example.com", "", addrs("203.0.113.9"), "turn.example.com", "203.0.113.9", false, true},
		{"ip configured (1:1 NAT), host follows it", "", "203.0.113.1", addrs("10.0.0.5"), "203.0.113.1", "203.0.113.1", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.PublicHost, c.PublicIP = tc.host, tc.ip
			got := resolvePublicAddrs(c, tc.ifaces)
			if got.Host != tc.wantHost || got.IP.String() != tc.wantIP || got.HostDetected != tc.hostGuess || got.IPDetected != tc.ipGuessed {
				t.Errorf("got %+v, want host %s (detected %v), ip %s (detected %v)", got, tc.wantHost, tc.hostGuess, tc.wantIP, tc.ipGuessed)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for in, want := range map[string]string{"24h": "24h", "168h": "168h", "30s": "30s", "1h30m": "1h30m", "0s": "0s", "90s": "1m30s", "10m": "10m", "1h0m1s": "1h0m1s", "1.5s": "1.5s"} {
		d, _ := time.ParseDuration(in)
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%s): got %q, want %q", in, got, want)
		}
	}
}
