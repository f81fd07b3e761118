// Package protocol holds the messages of icebox's signaling protocol (WebSocket at /ws, spec
// section 5) as Go types: the one set of types the server (package signaling) encodes and the
// Go client (package sigclient) decodes, so the two cannot drift apart.
package protocol

import "encoding/json"

// Message types.
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

// WebSocket close codes icebox sends besides the standard ones (1008 policy, 1009 too large,
// 1012 restart).
const (
	// CloseReplaced: a resume of the same session took over from this connection.
	CloseReplaced = 4001
)

// Limits of the protocol.
const (
	// MaxRoomName is the longest room name.
	MaxRoomName = 64
	// MaxMeta is the largest meta object, in bytes of its JSON.
	MaxMeta = 1024
)

// ValidRoom reports whether r is a room name: 1-64 of A-Z a-z 0-9 . _ -.
func ValidRoom(r string) bool {
	if len(r) == 0 || len(r) > MaxRoomName {
		return false
	}
	for i := 0; i < len(r); i++ {
		if c := r[i]; (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// Member is a peer in a room, as joined, peer-joined and a resumed welcome list it.
type Member struct {
	Peer string          `json:"peer"`
	Meta json.RawMessage `json:"meta"`
}

// ICEServer is one entry of a welcome's iceServers (RTCIceServer).
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Message is any message, as a client reads it: the fields of every type, zero where a type
// has none. Seq is icebox's extension: every message after the welcome carries one.
type Message struct {
	Type       string          `json:"type"`
	Seq        uint64          `json:"seq,omitempty"`
	ID         json.RawMessage `json:"id,omitempty"`
	Re         json.RawMessage `json:"re,omitempty"`
	Peer       string          `json:"peer,omitempty"`
	Resume     string          `json:"resume,omitempty"`
	Resumed    bool            `json:"resumed,omitempty"`
	ICEServers []ICEServer     `json:"iceServers,omitempty"`
	TTL        int64           `json:"ttl,omitempty"`
	Room       string          `json:"room,omitempty"`
	Peers      []Member        `json:"peers,omitempty"`
	Meta       json.RawMessage `json:"meta,omitempty"`
	To         string          `json:"to,omitempty"`
	From       string          `json:"from,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	Code       string          `json:"code,omitempty"`
	Message    string          `json:"message,omitempty"`
	// Raw is the frame as received.
	Raw []byte `json:"-"`
}

// The messages the server sends, each with exactly its fields: lists are never nil, so they
// encode as [].

// Welcome is the first message of every connection.
type Welcome struct {
	Type       string      `json:"type"`
	Peer       string      `json:"peer"`
	Resume     string      `json:"resume"`
	ICEServers []ICEServer `json:"iceServers"`
	TTL        int64       `json:"ttl"`
	Resumed    bool        `json:"resumed,omitempty"`
	Room       string      `json:"room,omitempty"`
	Peers      *[]Member   `json:"peers,omitempty"` // set, [] at least, when resumed
}

// Joined answers a join: the peers already in the room.
type Joined struct {
	Type  string          `json:"type"`
	Room  string          `json:"room"`
	Peers []Member        `json:"peers"`
	Re    json.RawMessage `json:"re,omitempty"`
}

// PeerJoined tells the members of a room about a new one.
type PeerJoined struct {
	Type string          `json:"type"`
	Room string          `json:"room"`
	Peer string          `json:"peer"`
	Meta json.RawMessage `json:"meta"`
}

// PeerLeft tells the members of a room that one is gone, and why.
type PeerLeft struct {
	Type   string `json:"type"`
	Room   string `json:"room"`
	Peer   string `json:"peer"`
	Reason string `json:"reason"`
}

// Reply is a reply without content (pong, left).
type Reply struct {
	Type string          `json:"type"`
	Re   json.RawMessage `json:"re,omitempty"`
}

// Error is an error message.
type Error struct {
	Type    string          `json:"type"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Re      json.RawMessage `json:"re,omitempty"`
}

// Bye is the last message before the server closes a connection on shutdown.
type Bye struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
}
