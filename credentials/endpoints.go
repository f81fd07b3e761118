package credentials

import (
	"net"
	"strconv"
)

// Endpoints is where clients reach the STUN/TURN listeners: public_host and the port of each
// enabled listener (0 when off).
type Endpoints struct {
	Host          string
	UDP, TCP, TLS int
}

func (e Endpoints) hostPort(port int) string {
	return net.JoinHostPort(e.Host, strconv.Itoa(port)) // brackets an IPv6 literal
}

// STUNURIs are the stun: URIs. A stun: URI has no transport parameter (RFC 7064) and browsers
// use it over UDP only, so there is one only when UDP is on.
func (e Endpoints) STUNURIs() []string {
	if e.UDP == 0 {
		return []string{}
	}
	return []string{"stun:" + e.hostPort(e.UDP)}
}

// TURNURIs are the turn: and turns: URIs of the enabled listeners.
func (e Endpoints) TURNURIs() []string {
	uris := []string{}
	if e.UDP != 0 {
		uris = append(uris, "turn:"+e.hostPort(e.UDP)+"?transport=udp")
	}
	if e.TCP != 0 {
		uris = append(uris, "turn:"+e.hostPort(e.TCP)+"?transport=tcp")
	}
	if e.TLS != 0 {
		uris = append(uris, "turns:"+e.hostPort(e.TLS)+"?transport=tcp")
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
