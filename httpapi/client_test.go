package httpapi

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	list, err := ParseCIDRs([]string{"10.0.0.0/8", "::1", "::ffff:192.168.0.0/112"})
	if err != nil {
		t.Fatal(err)
	}
	proxies := Proxies(list)
	for _, tc := range []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"direct client", "203.0.113.5:4000", nil, "203.0.113.5"},
		{"untrusted peer's header is ignored", "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"trusted proxy", "10.1.2.3:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"trusted proxy, IPv6 loopback", "[::1]:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"mapped proxy range", "192.168.3.4:1", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client-forged left entries are skipped", "10.1.2.3:4000", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"chain of proxies", "10.1.2.3:4000", []string{"198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"several headers", "10.1.2.3:4000", []string{"1.2.3.4", "198.51.100.1"}, "198.51.100.1"},
		{"garbage stops the walk", "10.1.2.3:4000", []string{"198.51.100.1, junk"}, "10.1.2.3"},
		{"all hops trusted", "10.1.2.3:4000", []string{"10.2.2.2"}, "10.2.2.2"},
		{"trusted proxy without header", "10.1.2.3:4000", nil, "10.1.2.3"},
		{"mapped client", "[::ffff:203.0.113.5]:1", nil, "203.0.113.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
			for _, h := range tc.xff {
				r.Header.Add("X-Forwarded-For", h)
			}
			if got := proxies.ClientIP(r).String(); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs([]string{" 10.0.0.1/8 ", "192.0.2.7", "2001:db8::/32", "::ffff:127.0.0.0/104"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "127.0.0.0/8"}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("entry %d: got %s, want %s", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "", "host.example.com", "300.1.1.1"} {
		if _, err := ParseCIDRs([]string{bad}); err == nil {
			t.Errorf("ParseCIDRs(%q): got no error", bad)
		}
	}
}

// TestClientOf: one notion of client for every per-client limit: an IPv4 address, an IPv6 /64.
func TestClientOf(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"198.51.100.1", "198.51.100.1", true},
		{"198.51.100.1", "198.51.100.2", false},
		{"::ffff:198.51.100.1", "198.51.100.1", true},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
	} {
		ca, cb := ClientOf(netip.MustParseAddr(tc.a)), ClientOf(netip.MustParseAddr(tc.b))
		if got := ca == cb; got != tc.same {
			t.Errorf("%s and %s: got same client %v, want %v (%s, %s)", tc.a, tc.b, got, tc.same, ca, cb)
		}
	}
	if got := ClientOf(netip.MustParseAddr("2001:db8:1:2::1")).String(); got != "2001:db8:1:2::/64" {
		t.Errorf("an IPv6 client: got %s, want its /64", got)
	}
}
