// Package turnclient is icebox's own TURN client on the wire (RFC 8656 over UDP, TCP or TLS):
// it sends exactly the requests and attributes it is asked for, malformed ones included, so
// tests can probe the server, and relays ChannelData without an allocation per packet, so the
// benchmarks can load it. It is the one TURN wire client of the tests and of cmd/icebench.
package turnclient

import (
	"bufio"
	"crypto/md5" //nolint:gosec // RFC 5389 long-term credential key
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"
)

// Client is a TURN client over UDP, TCP or TLS. Requests are retransmitted over UDP until
// answered; a reader goroutine routes responses to their requests and data to Recv (or to
// Options.OnData).
type Client struct {
	network string
	conn    net.Conn
	onData  func(channel uint16, payload []byte)

	username, password, realm, nonce string
	key                              []byte

	mu      sync.Mutex
	waiting map[[stun.TransactionIDSize]byte]chan *stun.Message
	data    chan Data
	done    chan struct{}
}

// Data is what arrived from a peer through the relay.
type Data struct {
	Peer    netip.AddrPort // from a Data indication; zero for ChannelData
	Channel uint16         // from ChannelData; 0 for a Data indication
	Payload []byte
}

// ErrorResponse is a STUN error response.
type ErrorResponse struct {
	Method stun.Method
	Code   stun.ErrorCode
	Reason string
}

func (e *ErrorResponse) Error() string {
	return fmt.Sprintf("%v error %d %s", e.Method, e.Code, e.Reason)
}

// Options of Dial.
type Options struct {
	// TLS configures the "tls" network.
	TLS *tls.Config
	// OnData, when set, gets the payload of every ChannelData (with its channel) and Data
	// indication (channel 0) as it is read, on the reader goroutine (payload is valid during
	// the call only), instead of Recv: the load generator's path, with no allocation.
	OnData func(channel uint16, payload []byte)
	// LocalAddr, when set, is the address the client sends from (another 127.0.0.0/8 address:
	// another client).
	LocalAddr netip.Addr
}

// Dial connects to a TURN server: network is "udp", "tcp" or "tls".
func Dial(network, addr string, o Options) (*Client, error) {
	var conn net.Conn
	var err error
	d := net.Dialer{Timeout: 5 * time.Second}
	if o.LocalAddr.IsValid() {
		if network == "udp" {
			d.LocalAddr = &net.UDPAddr{IP: o.LocalAddr.AsSlice()}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: o.LocalAddr.AsSlice()}
		}
	}
	switch network {
	case "udp":
		conn, err = d.Dial("udp4", addr)
	case "tcp":
		conn, err = d.Dial("tcp", addr)
	case "tls":
		conn, err = tls.DialWithDialer(&d, "tcp", addr, o.TLS)
	default:
		return nil, fmt.Errorf("unknown network %q", network)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, addr, err)
	}
	return NewClient(network, conn, o), nil
}

// NewClient is a client on a connection dialed elsewhere (network "udp", "tcp" or "tls": how
// to frame what it reads).
func NewClient(network string, conn net.Conn, o Options) *Client {
	if u, ok := conn.(*net.UDPConn); ok {
		// Room for a burst while a loaded machine leaves the reader unscheduled: a loss seen
		// must be the server's, not this socket's (capped by net.core.rmem_max).
		_ = u.SetReadBuffer(4 << 20)
		_ = u.SetWriteBuffer(1 << 20)
	}
	c := &Client{
		network: network, conn: conn, onData: o.OnData,
		waiting: map[[stun.TransactionIDSize]byte]chan *stun.Message{},
		data:    make(chan Data, 1024),
		done:    make(chan struct{}),
	}
	go c.readLoop()
	return c
}

// Close closes the connection (an allocation over UDP stays until it expires).
func (c *Client) Close() {
	_ = c.conn.Close()
	<-c.done
}

// LocalAddr is the client's address as the server sees it on loopback.
func (c *Client) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// readLoop reads datagrams (UDP) or frames (TCP, TLS) into one buffer: nothing is
// allocated per packet on the ChannelData path.
func (c *Client) readLoop() {
	defer close(c.done)
	if c.network == "udp" {
		buf := make([]byte, 65536+20)
		for {
			n, err := c.conn.Read(buf)
			if err != nil {
				return
			}
			c.dispatch(buf[:n])
		}
	}
	r := bufio.NewReaderSize(c.conn, 65536+24)
	for {
		frame, err := readStreamFrame(r)
		if err != nil {
			return
		}
		c.dispatch(frame)
		_, _ = r.Discard(len(frame))
	}
}

// readStreamFrame peeks at the next STUN message or ChannelData (padded to 4 bytes) of a
// stream; the caller discards it once handled.
func readStreamFrame(r *bufio.Reader) ([]byte, error) {
	head, err := r.Peek(4)
	if err != nil {
		return nil, err
	}
	size := 20 + int(binary.BigEndian.Uint16(head[2:4]))
	if head[0]&0xC0 == 0x40 {
		size = 4 + (int(binary.BigEndian.Uint16(head[2:4]))+3)&^3
	}
	return r.Peek(size)
}

// dispatch handles one datagram or frame; it copies what it keeps.
func (c *Client) dispatch(b []byte) {
	if len(b) >= 4 && b[0]&0xC0 == 0x40 {
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if 4+n > len(b) {
			return
		}
		if c.onData != nil {
			c.onData(binary.BigEndian.Uint16(b[0:2]), b[4:4+n])
			return
		}
		c.deliver(Data{Channel: binary.BigEndian.Uint16(b[0:2]), Payload: append([]byte(nil), b[4:4+n]...)})
		return
	}
	if c.onData != nil {
		if data, ok := dataIndication(b); ok {
			c.onData(0, data)
			return
		}
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return
	}
	if m.Type == stun.NewType(stun.MethodData, stun.ClassIndication) {
		var peer stun.XORMappedAddress
		var data []byte
		if peer.GetFromAs(m, stun.AttrXORPeerAddress) == nil {
			data, _ = m.Get(stun.AttrData)
			ip, _ := netip.AddrFromSlice(peer.IP)
			c.deliver(Data{Peer: netip.AddrPortFrom(ip.Unmap(), uint16(peer.Port)), Payload: data})
		}
		return
	}
	c.mu.Lock()
	ch := c.waiting[m.TransactionID]
	delete(c.waiting, m.TransactionID)
	c.mu.Unlock()
	if ch != nil {
		ch <- m
	}
}

// dataIndication is the DATA of a Data indication, read in place.
func dataIndication(b []byte) ([]byte, bool) {
	if len(b) < 20 || binary.BigEndian.Uint16(b[0:2]) != 0x0017 {
		return nil, false
	}
	for p := 20; p+4 <= len(b); {
		t, l := binary.BigEndian.Uint16(b[p:p+2]), int(binary.BigEndian.Uint16(b[p+2:p+4]))
		if p+4+l > len(b) {
			return nil, false
		}
		if t == uint16(stun.AttrData) {
			return b[p+4 : p+4+l], true
		}
		p += 4 + (l+3)&^3
	}
	return nil, false
}

func (c *Client) deliver(d Data) {
	select {
	case c.data <- d:
	default:
	}
}

// Recv waits up to timeout for data from a peer; ok is false when none came.
func (c *Client) Recv(timeout time.Duration) (Data, bool) {
	select {
	case d := <-c.data:
		return d, true
	case <-time.After(timeout):
		return Data{}, false
	}
}

// Roundtrip sends a request built from setters and returns the response (an error response
// too, as a message). Over UDP the request is retransmitted until answered.
func (c *Client) Roundtrip(setters ...stun.Setter) (*stun.Message, error) {
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID}, setters...)...)
	if err != nil {
		return nil, err
	}
	ch := make(chan *stun.Message, 1)
	c.mu.Lock()
	c.waiting[m.TransactionID] = ch
	c.mu.Unlock()
	rto := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if _, err := c.conn.Write(m.Raw); err != nil {
			return nil, err
		}
		select {
		case resp := <-ch:
			return resp, nil
		case <-c.done:
			return nil, io.EOF
		case <-time.After(rto):
			if c.network != "udp" || attempt >= 7 {
				if c.network != "udp" && attempt < 50 {
					continue // a stream does not lose the request; keep waiting
				}
				return nil, fmt.Errorf("no response to %v", m.Type)
			}
			rto = min(2*rto, 2*time.Second)
		}
	}
}

// Write sends raw bytes (an indication, ChannelData or garbage).
func (c *Client) Write(b []byte) error {
	_, err := c.conn.Write(b)
	return err
}

func asError(resp *stun.Message) error {
	if resp.Type.Class != stun.ClassErrorResponse {
		return nil
	}
	var code stun.ErrorCodeAttribute
	_ = code.GetFrom(resp)
	return &ErrorResponse{Method: resp.Type.Method, Code: code.Code, Reason: string(code.Reason)}
}

// Authenticated sends an authenticated request with the client's credentials, fetching a
// nonce first (or again when stale).
func (c *Client) Authenticated(method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	for range 3 {
		if c.nonce == "" {
			resp, err := c.Roundtrip(append([]stun.Setter{stun.NewType(method, stun.ClassRequest)}, setters...)...)
			if err != nil {
				return nil, err
			}
			var code stun.ErrorCodeAttribute
			if code.GetFrom(resp) != nil || code.Code != stun.CodeUnauthorized {
				return resp, asError(resp)
			}
			var nonce stun.Nonce
			var realm stun.Realm
			if nonce.GetFrom(resp) != nil || realm.GetFrom(resp) != nil {
				return resp, errors.New("401 without NONCE and REALM")
			}
			c.nonce, c.realm = nonce.String(), realm.String()
			c.key = key(c.username, c.realm, c.password)
		}
		all := append([]stun.Setter{stun.NewType(method, stun.ClassRequest)}, setters...)
		all = append(all, stun.NewUsername(c.username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
			stun.MessageIntegrity(c.key), stun.Fingerprint)
		resp, err := c.Roundtrip(all...)
		if err != nil {
			return nil, err
		}
		var code stun.ErrorCodeAttribute
		if code.GetFrom(resp) == nil && code.Code == stun.CodeStaleNonce {
			c.nonce = ""
			continue
		}
		return resp, asError(resp)
	}
	return nil, errors.New("stale nonce three times")
}

func key(username, realm, password string) []byte {
	h := md5.Sum([]byte(username + ":" + realm + ":" + password)) //nolint:gosec // RFC 5389
	return h[:]
}

// SetCredentials sets the long-term credentials used from now on.
func (c *Client) SetCredentials(username, password string) {
	c.username, c.password = username, password
	if c.realm != "" {
		c.key = key(username, c.realm, password)
	}
}

// Allocate requests a UDP relay and returns the relayed address.
func (c *Client) Allocate(username, password string) (netip.AddrPort, error) {
	c.SetCredentials(username, password)
	resp, err := c.Authenticated(stun.MethodAllocate, requestedTransportUDP{})
	if err != nil {
		return netip.AddrPort{}, err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		return netip.AddrPort{}, err
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port)), nil
}

type requestedTransportUDP struct{}

func (requestedTransportUDP) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})
	return nil
}

// Refresh refreshes the allocation for lifetime (0 deletes it).
func (c *Client) Refresh(lifetime time.Duration) error {
	_, err := c.Authenticated(stun.MethodRefresh, lifetimeAttr(lifetime))
	return err
}

type lifetimeAttr time.Duration

func (l lifetimeAttr) AddTo(m *stun.Message) error {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(time.Duration(l)/time.Second))
	m.Add(stun.AttrLifetime, v)
	return nil
}

// PeerAddress is an XOR-PEER-ADDRESS; IPv6 forces the IPv6 family even for an IPv4-mapped
// address (::ffff:a.b.c.d sent as 16 bytes), which a normal encoder would turn into IPv4.
type PeerAddress struct {
	Addr netip.AddrPort
	IPv6 bool
}

// AddTo encodes the attribute by hand, to control the family.
func (p PeerAddress) AddTo(m *stun.Message) error {
	ip := p.Addr.Addr()
	family, raw := byte(0x01), ip.Unmap().AsSlice()
	if p.IPv6 || !ip.Unmap().Is4() {
		a16 := ip.As16() // an IPv4 address becomes ::ffff:a.b.c.d
		family, raw = 0x02, a16[:]
	}
	v := make([]byte, 4+len(raw))
	v[1] = family
	binary.BigEndian.PutUint16(v[2:4], p.Addr.Port()^uint16(0x2112A442>>16))
	xor := make([]byte, 16)
	binary.BigEndian.PutUint32(xor[0:4], 0x2112A442)
	copy(xor[4:], m.TransactionID[:])
	for i := range raw {
		v[4+i] = raw[i] ^ xor[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

// CreatePermission asks for a permission toward peer.
func (c *Client) CreatePermission(peer PeerAddress) error {
	_, err := c.Authenticated(stun.MethodCreatePermission, peer)
	return err
}

// ChannelBind binds channel (0x4000-0x4FFF) to peer.
func (c *Client) ChannelBind(channel uint16, peer PeerAddress) error {
	_, err := c.Authenticated(stun.MethodChannelBind, channelNumber(channel), peer)
	return err
}

type channelNumber uint16

func (n channelNumber) AddTo(m *stun.Message) error {
	v := make([]byte, 4)
	binary.BigEndian.PutUint16(v, uint16(n))
	m.Add(stun.AttrChannelNumber, v)
	return nil
}

// Send sends payload to peer in a Send indication.
func (c *Client) Send(peer netip.AddrPort, payload []byte) error {
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		PeerAddress{Addr: peer}, rawAttr{stun.AttrData, payload})
	if err != nil {
		return err
	}
	return c.Write(m.Raw)
}

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.t, a.v)
	return nil
}

// SendChannel sends payload as ChannelData on channel (padded to 4 bytes on streams).
func (c *Client) SendChannel(channel uint16, payload []byte) error {
	size := 4 + len(payload)
	if c.network != "udp" {
		size = 4 + (len(payload)+3)&^3
	}
	b := make([]byte, size)
	binary.BigEndian.PutUint16(b[0:2], channel)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(payload)))
	copy(b[4:], payload)
	return c.Write(b)
}

// Binding sends a STUN Binding request and returns the XOR-MAPPED-ADDRESS and the response.
func (c *Client) Binding() (netip.AddrPort, *stun.Message, error) {
	resp, err := c.Roundtrip(stun.BindingRequest)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	var mapped stun.XORMappedAddress
	if err := mapped.GetFrom(resp); err != nil {
		return netip.AddrPort{}, resp, err
	}
	ip, _ := netip.AddrFromSlice(mapped.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(mapped.Port)), resp, nil
}

// Signed builds a request of method with the client's credentials and current nonce (known
// after Allocate), ready to send with Write: for tests that craft their own attributes.
func (c *Client) Signed(method stun.Method, setters ...stun.Setter) ([]byte, error) {
	all := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, setters...)
	all = append(all, stun.NewUsername(c.username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
		stun.MessageIntegrity(c.key))
	m, err := stun.Build(all...)
	if err != nil {
		return nil, err
	}
	return m.Raw, nil
}

// Attr is a raw attribute, for tests that send malformed values on purpose.
func Attr(t stun.AttrType, v []byte) stun.Setter { return rawAttr{t, v} }
