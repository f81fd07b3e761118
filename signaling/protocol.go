package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/icebox-rtc/icebox/credentials"
)

// Message types of the protocol (spec section 5).
const (
	TypeWelcome    = "welcome"
	TypeJoin       = "join"
	TypeJoined     = "joined"
	TypePeerJoined = "peer-joined"
	TypeSignal     = "signal"
	TypeBroadcast  = "broadcast"
	TypeLeave      = "leave"
	TypeLeft       = "left"
	TypePeerLeft   = "peer-left"
	TypePing       = "ping"
	TypePong       = "pong"
	TypeError      = "error"
	TypeBye        = "bye"
)

// Error codes of error messages.
const (
	CodeBadMessage    = "bad-message"
	CodeBadRoom       = "bad-room"
	CodeRoomFull      = "room-full"
	CodeNotJoined     = "not-joined"
	CodeAlreadyJoined = "already-joined"
	CodeUnknownPeer   = "unknown-peer"
	CodeForbidden     = "forbidden"
	CodeRateLimited   = "rate-limited"
	CodeTooLarge      = "too-large"
	CodeUnavailable   = "unavailable"
)

// Reasons in peer-left and bye messages.
const (
	ReasonLeft         = "left"
	ReasonDisconnected = "disconnected"
	ReasonShutdown     = "shutdown"
)

// Limits of the protocol.
const (
	maxRoomName = 64
	maxMeta     = 1024 // bytes of the meta object's JSON
)

// inbound is a message from a client. Unknown fields are ignored; a "from" sent by a client is
// never read.
type inbound struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id,omitempty"`
	Room string          `json:"room,omitempty"`
	Meta json.RawMessage `json:"meta,omitempty"`
	To   string          `json:"to,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

// protocolError is an error message for the client: a code of the protocol and a message.
type protocolError struct {
	Code    string
	Message string
}

func (e *protocolError) Error() string { return e.Code + ": " + e.Message }

func protoErr(code, format string, args ...any) *protocolError {
	return &protocolError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// decode parses and checks one text frame. On error the returned message still carries the id
// when the frame had one, so the error can answer it.
func decode(frame []byte) (inbound, *protocolError) {
	var m inbound
	if !bytes.HasPrefix(bytes.TrimLeft(frame, " \t\r\n"), []byte("{")) {
		return m, protoErr(CodeBadMessage, "a message is a JSON object with a type")
	}
	if err := json.Unmarshal(frame, &m); err != nil {
		// Keep the id if only another field was malformed.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(frame, &idOnly)
		m = inbound{ID: idOnly.ID}
		return m, protoErr(CodeBadMessage, "not valid JSON of the protocol: %v", jsonProblem(err))
	}
	if !validID(m.ID) {
		m.ID = nil
		return m, protoErr(CodeBadMessage, "id must be a string or a number")
	}
	switch m.Type {
	case TypeJoin:
		if !validRoom(m.Room) {
			return m, protoErr(CodeBadRoom, "room names are 1-%d characters of A-Z a-z 0-9 . _ -", maxRoomName)
		}
		if len(m.Meta) == 0 || string(m.Meta) == "null" {
			m.Meta = json.RawMessage("{}")
		}
		if m.Meta[0] != '{' {
			return m, protoErr(CodeBadMessage, "meta must be a JSON object")
		}
		if len(m.Meta) > maxMeta {
			return m, protoErr(CodeTooLarge, "meta is %d bytes; at most %d", len(m.Meta), maxMeta)
		}
	case TypeSignal:
		if m.To == "" {
			return m, protoErr(CodeBadMessage, "signal needs to: the peer id")
		}
		if len(m.Data) == 0 {
			return m, protoErr(CodeBadMessage, "signal needs data")
		}
	case TypeBroadcast:
		if len(m.Data) == 0 {
			return m, protoErr(CodeBadMessage, "broadcast needs data")
		}
	case TypeLeave, TypePing:
	case "":
		return m, protoErr(CodeBadMessage, "a message needs a type")
	default:
		return m, protoErr(CodeBadMessage, "unknown type %q", truncate(m.Type, 32))
	}
	return m, nil
}

func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s must be a %s", te.Field, te.Type)
	}
	return "malformed JSON"
}

// validID accepts an absent id, a string or a number.
func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return true
	}
	switch c := id[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9':
		return true
	}
	return false
}

func validRoom(r string) bool {
	if len(r) == 0 || len(r) > maxRoomName {
		return false
	}
	for i := 0; i < len(r); i++ {
		if !roomChar(r[i]) {
			return false
		}
	}
	return true
}

func roomChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Member is a peer in a room, as joined and peer-joined list it.
type Member struct {
	Peer string          `json:"peer"`
	Meta json.RawMessage `json:"meta"`
}

// Outbound messages. Lists are never nil, so they encode as [].

type welcomeMsg struct {
	Type       string                  `json:"type"`
	Peer       string                  `json:"peer"`
	Resume     string                  `json:"resume"`
	ICEServers []credentials.ICEServer `json:"iceServers"`
	TTL        int64                   `json:"ttl"`
	Resumed    bool                    `json:"resumed,omitempty"`
	Room       string                  `json:"room,omitempty"`
	Peers      *[]Member               `json:"peers,omitempty"` // set, [] at least, when resumed
}

type joinedMsg struct {
	Type  string          `json:"type"`
	Room  string          `json:"room"`
	Peers []Member        `json:"peers"`
	Re    json.RawMessage `json:"re,omitempty"`
}

type peerJoinedMsg struct {
	Type string          `json:"type"`
	Room string          `json:"room"`
	Peer string          `json:"peer"`
	Meta json.RawMessage `json:"meta"`
}

type peerLeftMsg struct {
	Type   string `json:"type"`
	Room   string `json:"room"`
	Peer   string `json:"peer"`
	Reason string `json:"reason"`
}

type replyMsg struct {
	Type string          `json:"type"`
	Re   json.RawMessage `json:"re,omitempty"`
}

type errorMsg struct {
	Type    string          `json:"type"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Re      json.RawMessage `json:"re,omitempty"`
}

type byeMsg struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
}

// encode marshals an outbound message. They are built from parts that were valid JSON on the
// way in, so this does not fail; if it ever did, the client gets an error message instead.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"type":"error","code":"bad-message","message":"the server could not encode a message"}`)
	}
	return b
}

// relayFrame encodes {"type":T,"from":P,"data":D} without reflection: signal and broadcast are
// most of the traffic. from is a peer id (URL-safe base64, nothing to escape) and data is
// JSON the decoder accepted, kept as it came.
func relayFrame(typ, from string, data json.RawMessage) []byte {
	b := make([]byte, 0, len(`{"type":"","from":"","data":}`)+len(typ)+len(from)+len(data))
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","from":"`...)
	b = append(b, from...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}
