package main

import (
	"bufio"
	"crypto/md5" //nolint:gosec // the TURN long-term key is MD5 by RFC 5389
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

// turnConn is a minimal TURN client for load: control requests are synchronous (setup only),
// data is ChannelData written and read with no allocation per packet.
type turnConn struct {
	conn     net.Conn
	stream   bool
	r        *bufio.Reader
	username string
	pass     string
	realm    string
	nonce    string
	key      []byte
	relay    netip.AddrPort
}

func dialTURN(server, transport string) (*turnConn, error) {
	network := "udp4"
	if transport == "tcp" {
		network = "tcp4"
	}
	conn, err := net.DialTimeout(network, server, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &turnConn{conn: conn, stream: transport == "tcp"}
	if c.stream {
		c.r = bufio.NewReaderSize(conn, 64<<10)
	}
	if u, ok := conn.(*net.UDPConn); ok {
		_ = u.SetReadBuffer(1 << 20)
		_ = u.SetWriteBuffer(1 << 20)
	}
	return c, nil
}

func (c *turnConn) Close() error { return c.conn.Close() }

// readFrame reads one datagram (UDP) or one STUN/ChannelData frame (TCP) into buf.
func (c *turnConn) readFrame(buf []byte) (int, error) {
	if !c.stream {
		return c.conn.Read(buf)
	}
	head, err := c.r.Peek(4)
	if err != nil {
		return 0, err
	}
	size := 20 + int(binary.BigEndian.Uint16(head[2:4]))
	if head[0]&0xC0 == 0x40 {
		size = 4 + (int(binary.BigEndian.Uint16(head[2:4]))+3)&^3
	}
	if size > len(buf) {
		return 0, fmt.Errorf("frame of %d bytes", size)
	}
	return io.ReadFull(c.r, buf[:size])
}

// roundtrip sends a request and waits for the response with its transaction id.
func (c *turnConn) roundtrip(setters ...stun.Setter) (*stun.Message, error) {
	req, err := stun.Build(append([]stun.Setter{stun.TransactionID}, setters...)...)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 2048)
	for attempt, rto := 0, 250*time.Millisecond; attempt < 6; attempt, rto = attempt+1, rto*2 {
		if _, err := c.conn.Write(req.Raw); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(rto)
		if c.stream {
			deadline = time.Now().Add(10 * time.Second)
		}
		_ = c.conn.SetReadDeadline(deadline)
		for {
			n, err := c.readFrame(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && !c.stream {
					break // retransmit
				}
				return nil, err
			}
			m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if m.Decode() == nil && m.TransactionID == req.TransactionID {
				_ = c.conn.SetReadDeadline(time.Time{})
				return m, nil
			}
		}
	}
	return nil, errors.New("no response")
}

func errorOf(m *stun.Message) error {
	if m.Type.Class != stun.ClassErrorResponse {
		return nil
	}
	var code stun.ErrorCodeAttribute
	_ = code.GetFrom(m)
	return fmt.Errorf("%v: error %d %s", m.Type.Method, code.Code, code.Reason)
}

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.t, a.v)
	return nil
}

// authenticated sends a request with long-term credentials, learning the nonce on a 401 or 438.
func (c *turnConn) authenticated(method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	for range 3 {
		all := append([]stun.Setter{stun.NewType(method, stun.ClassRequest)}, setters...)
		if c.nonce != "" {
			all = append(all, stun.NewUsername(c.username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce), stun.MessageIntegrity(c.key))
		}
		resp, err := c.roundtrip(all...)
		if err != nil {
			return nil, err
		}
		var code stun.ErrorCodeAttribute
		if code.GetFrom(resp) == nil && (code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce) {
			var nonce stun.Nonce
			var realm stun.Realm
			if nonce.GetFrom(resp) != nil || realm.GetFrom(resp) != nil {
				return nil, errorOf(resp)
			}
			if c.nonce != "" && code.Code == stun.CodeUnauthorized {
				return nil, errorOf(resp) // credentials refused
			}
			c.nonce, c.realm = nonce.String(), realm.String()
			h := md5.Sum([]byte(c.username + ":" + c.realm + ":" + c.pass)) //nolint:gosec // RFC 5389
			c.key = h[:]
			continue
		}
		return resp, errorOf(resp)
	}
	return nil, errors.New("authentication did not settle")
}

// allocate makes a UDP relay with the credentials.
func (c *turnConn) allocate(username, password string) error {
	c.username, c.pass = username, password
	resp, err := c.authenticated(stun.MethodAllocate, rawAttr{stun.AttrRequestedTransport, []byte{17, 0, 0, 0}})
	if err != nil {
		return err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		return err
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	c.relay = netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
	return nil
}

// channelBind binds channel to peer (which also creates the permission).
func (c *turnConn) channelBind(channel uint16, peer netip.AddrPort) error {
	ch := make([]byte, 4)
	binary.BigEndian.PutUint16(ch, channel)
	xpa := &stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}
	_, err := c.authenticated(stun.MethodChannelBind, rawAttr{stun.AttrChannelNumber, ch}, peerAttr{xpa})
	return err
}

// createPermission asks for a permission toward peer's IP (for Send indications).
func (c *turnConn) createPermission(peer netip.AddrPort) error {
	xpa := &stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}
	_, err := c.authenticated(stun.MethodCreatePermission, peerAttr{xpa})
	return err
}

type peerAttr struct{ a *stun.XORMappedAddress }

func (p peerAttr) AddTo(m *stun.Message) error { return p.a.AddToAs(m, stun.AttrXORPeerAddress) }

// refresh with lifetime 0 releases the allocation.
func (c *turnConn) release() {
	_, _ = c.authenticated(stun.MethodRefresh, rawAttr{stun.AttrLifetime, []byte{0, 0, 0, 0}})
}
