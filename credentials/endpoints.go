package credentials

import (
	"net"
	"strconv"
)

// Endpoints is where clients reach the STUN/TURN listeners: public_host and the port of each
// enabled listener (0 when off). EdgeUDP and EdgeTLS are the edge port's (edge.udp_listen and
// edge.listen, TURN over TLS), typically 443.
type Endpoints struct {
	Host             string
	UDP, TCP, TLS    int
	EdgeUDP, EdgeTLS int
}

func (e Endpoints) hostPort(port int) string {
	return net.JoinHostPort(e.Host, strconv.Itoa(port)) // brackets an IPv6 literal
}

// STUNURIs are the stun: URIs. A stun: URI has no transport parameter (RFC 7064) and browsers
// use it over UDP only, so there is one only when UDP is on: on turn.udp_listen, else on the
// edge's UDP port (one is enough: both answer with the same mapped address).
func (e Endpoints) STUNURIs() []string {
	switch {
	case e.UDP != 0:
		return []string{"stun:" + e.hostPort(e.UDP)}
	case e.EdgeUDP != 0:
		return []string{"stun:" + e.hostPort(e.EdgeUDP)}
	}
	return []string{}
}

// TURNURIs are the turn: and turns: URIs of the enabled listeners, UDP before TCP before TLS:
// browsers gather candidates in the order of the URIs and prefer what they found first among
// equals, and UDP is the fastest path, TLS the slowest and the one strict networks still let
// through.
func (e Endpoints) TURNURIs() []string {
	uris := []string{}
	for _, l := range []struct {
		port            int
		scheme, network string
	}{
		{e.UDP, "turn", "udp"}, {e.EdgeUDP, "turn", "udp"},
		{e.TCP, "turn", "tcp"},
		{e.TLS, "turns", "tcp"}, {e.EdgeTLS, "turns", "tcp"},
	} {
		if l.port != 0 {
			uris = append(uris, l.scheme+":"+e.hostPort(l.port)+"?transport="+l.network)
		}
	}
	return uris
}

// ICEServer is one entry of RTCConfiguration.iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// ICEServers is the iceServers list for cred: the STUN URI, then the TURN URIs with cred.
func (e Endpoints) ICEServers(cred Credential) []ICEServer {
	servers := []ICEServer{}
	if stun := e.STUNURIs(); len(stun) > 0 {
		servers = append(servers, ICEServer{URLs: stun})
	}
	return append(servers, ICEServer{URLs: e.TURNURIs(), Username: cred.Username, Credential: cred.Password})
}
