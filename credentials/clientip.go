package credentials

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies is the http.trusted_proxies list: the peers whose X-Forwarded-For is believed.
type Proxies []netip.Prefix

// ParseTrustedProxies parses http.trusted_proxies.
func ParseTrustedProxies(list []string) (Proxies, error) {
	ps, err := ParseCIDRs(list)
	return Proxies(ps), err
}

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
