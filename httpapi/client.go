package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Client is who a request comes from, for every per-client limit (http.rate_limit,
// signaling.max_conns_per_ip): an IPv4 address, or the /64 of an IPv6 address, which one
// subscriber typically holds whole (so hopping between its addresses gains nothing).
type Client struct{ p netip.Prefix }

// ClientOf is the client that address a belongs to.
func ClientOf(a netip.Addr) Client {
	a = a.Unmap()
	if a.Is6() {
		return Client{netip.PrefixFrom(a, 64).Masked()}
	}
	return Client{netip.PrefixFrom(a, a.BitLen())}
}

// String is the client for logs: an address, or an IPv6 /64.
func (c Client) String() string {
	if c.p.Addr().Is4() {
		return c.p.Addr().String()
	}
	return c.p.String()
}

// Proxies is the http.trusted_proxies list: the peers whose X-Forwarded-For is believed.
type Proxies []netip.Prefix

// ParseCIDRs parses a list of CIDRs ("10.0.0.0/8", "fd00::/8"); a bare address is one host, and
// IPv4-mapped IPv6 prefixes (::ffff:10.0.0.0/104) become their IPv4 form. Used for every CIDR
// list in the configuration.
func ParseCIDRs(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, raw := range list {
		s := strings.TrimSpace(raw)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a CIDR (e.g. 10.0.0.0/8) or an IP address", raw)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (ps Proxies) contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Client is the client of r: ClientOf its ClientIP.
func (ps Proxies) Client(r *http.Request) Client { return ClientOf(ps.ClientIP(r)) }

// ClientIP is the address of whoever sent r: the TCP peer, or, when the peer is a trusted
// proxy, the right-most X-Forwarded-For entry that is not itself a trusted proxy. Entries left of
// that one are client-supplied and never believed.
func (ps Proxies) ClientIP(r *http.Request) netip.Addr {
	peer := remoteAddr(r.RemoteAddr)
	if !peer.IsValid() || !ps.contains(peer) {
		return peer
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return client // garbage from the client side: stop at the last hop we trust
		}
		client = a.Unmap()
		if !ps.contains(client) {
			return client
		}
	}
	return client
}

func remoteAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}
