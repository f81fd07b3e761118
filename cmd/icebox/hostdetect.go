package main

import (
	"net"
	"net/netip"
)

// publicAddrs is where clients reach this node: the host put into every iceServers URL and
// the IPv4 address advertised as the TURN relay address.
type publicAddrs struct {
	Host string
	IP   netip.Addr
	// HostDetected and IPDetected say the value was not configured but guessed.
	HostDetected, IPDetected bool
}

// resolvePublicAddrs fills public_host and public_ip from the configuration, or, where unset,
// from the first global unicast IPv4 address of this machine's interfaces (a public address is
// preferred over a private one), else 127.0.0.1.
func resolvePublicAddrs(c Config, ifaceAddrs func() []netip.Addr) publicAddrs {
	var p publicAddrs
	var guess netip.Addr
	if c.PublicHost == "" || c.PublicIP == "" {
		guess = detectIPv4(ifaceAddrs())
	}
	if c.PublicIP != "" {
		p.IP = netip.MustParseAddr(c.PublicIP).Unmap() // validated
	} else {
		p.IP, p.IPDetected = guess, true
	}
	if c.PublicHost != "" {
		p.Host = c.PublicHost
	} else {
		p.Host, p.HostDetected = p.IP.String(), true
	}
	return p
}

func detectIPv4(addrs []netip.Addr) netip.Addr {
	var private netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() || !a.IsGlobalUnicast() {
			continue
		}
		if !a.IsPrivate() && !isSharedOrSpecial(a) {
			return a
		}
		if !private.IsValid() {
			private = a
		}
	}
	if private.IsValid() {
		return private
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// isSharedOrSpecial covers ranges that IsPrivate misses but no client on the internet reaches:
// carrier-grade NAT (100.64/10) and link-local.
func isSharedOrSpecial(a netip.Addr) bool {
	return netip.MustParsePrefix("100.64.0.0/10").Contains(a) || a.IsLinkLocalUnicast()
}

// interfaceAddrs lists this machine's interface addresses in interface order.
func interfaceAddrs() []netip.Addr {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					out = append(out, ip.Unmap())
				}
			}
		}
	}
	return out
}
