package stunturn

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Config is the turn section of icebox's configuration.
type Config struct {
	// Realm is the TURN realm sent in 401 responses and used in the long-term credential key.
	Realm string `mapstructure:"realm"`
	// UDPListen, TCPListen and TLSListen are host:port addresses; "" disables the listener.
	UDPListen string `mapstructure:"udp_listen"`
	TCPListen string `mapstructure:"tcp_listen"`
	TLSListen string `mapstructure:"tls_listen"`
	// UDPSockets is the number of SO_REUSEPORT sockets on UDPListen, each read by its own
	// goroutine; 0 means one per GOMAXPROCS (Linux; elsewhere always one).
	UDPSockets int `mapstructure:"udp_sockets"`
	// RelayAddress is the local IPv4 address relay sockets bind to.
	RelayAddress string `mapstructure:"relay_address"`
	// RelayPortMin and RelayPortMax bound the relay port range, inclusive.
	RelayPortMin int `mapstructure:"relay_port_min"`
	RelayPortMax int `mapstructure:"relay_port_max"`
	// AllowedPeerCIDRs carves exceptions out of the peer deny-list. The configuration's text is
	// parsed once, where it is loaded (cmd/icebox).
	AllowedPeerCIDRs []netip.Prefix `mapstructure:"allowed_peer_cidrs"`
	// DeniedPeerCIDRs is added to the built-in peer deny-list.
	DeniedPeerCIDRs []netip.Prefix `mapstructure:"denied_peer_cidrs"`
	// UserQuota is the number of concurrent allocations per credential user; 0 is unlimited.
	UserQuota int `mapstructure:"user_quota"`
	// TotalQuota is the number of allocations on this node; 0 means as many as relay ports.
	TotalQuota int `mapstructure:"total_quota"`
	// MaxPermissions bounds the permissions (peer IPs) of one allocation; 0 is unlimited.
	MaxPermissions int `mapstructure:"max_permissions"`
	// MaxChannels bounds the channel bindings of one allocation; 0 is unlimited.
	MaxChannels int `mapstructure:"max_channels"`
}

// maxUDPSockets bounds turn.udp_sockets: more readers than cores only add contention.
const maxUDPSockets = 256

// DefaultConfig returns the built-in defaults of the turn section.
func DefaultConfig() Config {
	return Config{
		Realm:            "icebox",
		UDPListen:        ":3478",
		TCPListen:        ":3478",
		TLSListen:        "",
		UDPSockets:       0,
		RelayAddress:     "0.0.0.0",
		RelayPortMin:     49152,
		RelayPortMax:     65535,
		AllowedPeerCIDRs: []netip.Prefix{},
		DeniedPeerCIDRs:  []netip.Prefix{},
		UserQuota:        100,
		TotalQuota:       0,
		MaxPermissions:   64,
		MaxChannels:      64,
	}
}

// Validate reports every invalid value, each error starting with the key's name.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	if strings.TrimSpace(c.Realm) == "" {
		bad("realm", "must not be empty")
	}
	// The listen addresses are checked by whoever binds them (cmd/icebox), with http.listen;
	// so is that TURN has at least one listener, which may be the edge port's.

	if c.UDPSockets < 0 || c.UDPSockets > maxUDPSockets {
		bad("udp_sockets", "%d is out of range 0-%d (0 means one per GOMAXPROCS)", c.UDPSockets, maxUDPSockets)
	}
	if ip, err := netip.ParseAddr(c.RelayAddress); err != nil || !ip.Is4() {
		bad("relay_address", "%q is not an IPv4 address", c.RelayAddress)
	}
	portOK := true
	for _, p := range []struct {
		key  string
		port int
	}{{"relay_port_min", c.RelayPortMin}, {"relay_port_max", c.RelayPortMax}} {
		if p.port < 1 || p.port > 65535 {
			bad(p.key, "%d is out of range 1-65535", p.port)
			portOK = false
		}
	}
	if portOK && c.RelayPortMin > c.RelayPortMax {
		bad("relay_port_min", "%d is greater than relay_port_max %d", c.RelayPortMin, c.RelayPortMax)
	}

	if c.UserQuota < 0 {
		bad("user_quota", "%d is negative (0 means unlimited)", c.UserQuota)
	}
	if c.TotalQuota < 0 {
		bad("total_quota", "%d is negative (0 means as many as relay ports)", c.TotalQuota)
	}
	if c.MaxPermissions < 0 {
		bad("max_permissions", "%d is negative (0 means unlimited)", c.MaxPermissions)
	}
	// 0x4000-0x4FFF: no allocation can hold more channels than that.
	if c.MaxChannels < 0 || c.MaxChannels > maxChannel-minChannel+1 {
		bad("max_channels", "%d is out of range 0-%d (0 means unlimited)", c.MaxChannels, maxChannel-minChannel+1)
	}
	return errors.Join(errs...)
}
