// Package sigclient is a Go client of icebox's signaling protocol (WebSocket at /ws): for Go
// apps such as pion/webrtc peers, for icebox check, and for icebox's own tests.
//
//	c, err := sigclient.Dial(ctx, "wss://icebox.example.com/ws", sigclient.Options{Token: token})
//	joined, err := c.Join(ctx, "room-1", map[string]any{"name": "bot"})
//	for m := range c.Messages() { ... m.Type == "signal" ... }
package sigclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// Message is any message from the server (protocol.Message: the types the server encodes).
type Message = protocol.Message

// Member is a peer of a room.
type Member = protocol.Member

// ICEServer is one entry of iceServers.
type ICEServer = protocol.ICEServer

// Error is an error message from the server.
type Error struct {
	Code, Message string
}

func (e *Error) Error() string { return "signaling: " + e.Code + ": " + e.Message }

// ErrClosed is returned once the connection is closed.
var ErrClosed = errors.New("signaling connection closed")

// Options for Dial.
type Options struct {
	// Token is sent as ?token= (auth.mode token or jwt).
	Token string
	// Resume is a resume token from an earlier welcome; Last the seq of the last message of
	// that session the caller handled (0: unknown).
	Resume string
	Last   uint64
	// Header is sent with the upgrade request (e.g. Origin).
	Header http.Header
	// Dialer is used instead of websocket.DefaultDialer.
	Dialer *websocket.Dialer
}

// Client is one signaling connection.
type Client struct {
	ws      *websocket.Conn
	welcome Message

	writeMu sync.Mutex
	nextID  atomic.Uint64

	mu      sync.Mutex
	waiting map[string]chan Message
	lastSeq uint64

	msgs chan Message
	done chan struct{}
	err  error
}

// Dial connects to url (ws:// or wss://, path /ws) and waits for the welcome.
func Dial(ctx context.Context, rawURL string, o Options) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	if o.Token != "" {
		q.Set("token", o.Token)
	}
	if o.Resume != "" {
		q.Set("resume", o.Resume)
		if o.Last > 0 {
			q.Set("last", strconv.FormatUint(o.Last, 10))
		}
	}
	u.RawQuery = q.Encode()
	d := o.Dialer
	if d == nil {
		d = websocket.DefaultDialer
	}
	ws, resp, err := d.DialContext(ctx, u.String(), o.Header)
	if err != nil {
		if resp != nil {
			var body struct {
				Error struct{ Code, Message string }
			}
			if json.NewDecoder(resp.Body).Decode(&body) == nil && body.Error.Code != "" {
				err = fmt.Errorf("%w: %d %s", &Error{Code: body.Error.Code, Message: body.Error.Message}, resp.StatusCode, body.Error.Message)
			}
			_ = resp.Body.Close()
		}
		return nil, err
	}
	c := &Client{ws: ws, waiting: map[string]chan Message{}, msgs: make(chan Message, 1024), done: make(chan struct{})}
	_, frame, err := ws.ReadMessage()
	if err != nil {
		_ = ws.Close()
		return nil, err
	}
	if err := json.Unmarshal(frame, &c.welcome); err != nil || c.welcome.Type != protocol.TypeWelcome {
		_ = ws.Close()
		return nil, fmt.Errorf("signaling: expected a welcome, got %s", frame)
	}
	c.welcome.Raw = frame
	go c.readLoop()
	return c, nil
}

// Welcome is the server's welcome: peer id, resume token, iceServers.
func (c *Client) Welcome() Message { return c.welcome }

// Conn is the underlying WebSocket connection, for tests that misbehave on purpose.
func (c *Client) Conn() *websocket.Conn { return c.ws }

func (c *Client) readLoop() {
	defer close(c.done)
	defer close(c.msgs)
	for {
		_, frame, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			for _, ch := range c.waiting {
				close(ch)
			}
			c.waiting = map[string]chan Message{}
			c.mu.Unlock()
			return
		}
		var m Message
		if json.Unmarshal(frame, &m) != nil {
			continue
		}
		m.Raw = frame
		c.mu.Lock()
		if m.Seq > c.lastSeq {
			c.lastSeq = m.Seq
		} else if m.Seq != 0 {
			c.mu.Unlock()
			continue // a duplicate replayed by a resume
		}
		ch := c.waiting[string(m.Re)]
		if ch != nil {
			delete(c.waiting, string(m.Re))
		}
		c.mu.Unlock()
		if ch != nil {
			ch <- m
			continue
		}
		c.msgs <- m
	}
}

// Messages yields what the server sends unasked: peer-joined, peer-left, signal, broadcast,
// bye, and errors without re. It is closed when the connection ends.
func (c *Client) Messages() <-chan Message { return c.msgs }

// LastSeq is the seq of the last message received, for a resume.
func (c *Client) LastSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastSeq
}

// Err is why the connection ended (a *websocket.CloseError carries the close code).
func (c *Client) Err() error {
	<-c.done
	return c.err
}

// Send writes one message as is (any JSON value), without waiting for an answer.
func (c *Client) Send(v any) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.ws.WriteJSON(v)
}

// Request sends msg with a fresh id and waits for the reply or error carrying it as re.
func (c *Client) Request(ctx context.Context, msg map[string]any) (Message, error) {
	id := strconv.FormatUint(c.nextID.Add(1), 10)
	msg["id"] = id
	ch := make(chan Message, 1)
	key := strconv.Quote(id)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return Message{}, ErrClosed
	}
	c.waiting[key] = ch
	c.mu.Unlock()
	if err := c.Send(msg); err != nil {
		return Message{}, err
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return Message{}, ErrClosed
		}
		if m.Type == protocol.TypeError {
			return m, &Error{Code: m.Code, Message: m.Message}
		}
		return m, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, key)
		c.mu.Unlock()
		return Message{}, ctx.Err()
	}
}

// Join joins room with meta (nil: {}) and returns the joined message (peers already there).
func (c *Client) Join(ctx context.Context, room string, meta any) (Message, error) {
	m := map[string]any{"type": "join", "room": room}
	if meta != nil {
		m["meta"] = meta
	}
	return c.Request(ctx, m)
}

// Leave leaves the room.
func (c *Client) Leave(ctx context.Context) error {
	_, err := c.Request(ctx, map[string]any{"type": "leave"})
	return err
}

// Ping asks for a pong.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Request(ctx, map[string]any{"type": "ping"})
	return err
}

// Signal sends data to peer to. Success has no answer; an error (unknown-peer, not-joined)
// arrives on Messages.
func (c *Client) Signal(to string, data any) error {
	return c.Send(map[string]any{"type": "signal", "to": to, "data": data})
}

// Broadcast sends data to every other peer of the room.
func (c *Client) Broadcast(data any) error {
	return c.Send(map[string]any{"type": "broadcast", "data": data})
}

// Close closes the connection without leaving: the session waits for a resume.
func (c *Client) Close() error {
	err := c.ws.Close()
	<-c.done
	return err
}

// CloseNormally sends a close frame, then closes.
func (c *Client) CloseNormally() error {
	c.writeMu.Lock()
	_ = c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c.writeMu.Unlock()
	return c.Close()
}
