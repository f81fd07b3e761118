package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/icebox-rtc/icebox/signaling/protocol"
)

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
func decode(frame []byte) (protocol.Message, *protocolError) {
	var m protocol.Message
	if !bytes.HasPrefix(bytes.TrimLeft(frame, " \t\r\n"), []byte("{")) {
		return m, protoErr(protocol.CodeBadMessage, "a message is a JSON object with a type")
	}
	if err := json.Unmarshal(frame, &m); err != nil {
		// Keep the id if only another field was malformed.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(frame, &idOnly)
		m = protocol.Message{ID: idOnly.ID}
		return m, protoErr(protocol.CodeBadMessage, "not valid JSON of the protocol: %v", jsonProblem(err))
	}
	if !validID(m.ID) {
		m.ID = nil
		return m, protoErr(protocol.CodeBadMessage, "id must be a string or a number")
	}
	switch m.Type {
	case protocol.TypeJoin:
		if !protocol.ValidRoom(m.Room) {
			return m, protoErr(protocol.CodeBadRoom, "room names are 1-%d characters of A-Z a-z 0-9 . _ -", protocol.MaxRoomName)
		}
		if len(m.Meta) == 0 || string(m.Meta) == "null" {
			m.Meta = json.RawMessage("{}")
		}
		if m.Meta[0] != '{' {
			return m, protoErr(protocol.CodeBadMessage, "meta must be a JSON object")
		}
		if len(m.Meta) > protocol.MaxMeta {
			return m, protoErr(protocol.CodeTooLarge, "meta is %d bytes; at most %d", len(m.Meta), protocol.MaxMeta)
		}
	case protocol.TypeSignal:
		if m.To == "" {
			return m, protoErr(protocol.CodeBadMessage, "signal needs to: the peer id")
		}
		if len(m.Data) == 0 {
			return m, protoErr(protocol.CodeBadMessage, "signal needs data")
		}
	case protocol.TypeBroadcast:
		if len(m.Data) == 0 {
			return m, protoErr(protocol.CodeBadMessage, "broadcast needs data")
		}
	case protocol.TypeLeave, protocol.TypePing:
	case "":
		return m, protoErr(protocol.CodeBadMessage, "a message needs a type")
	default:
		return m, protoErr(protocol.CodeBadMessage, "unknown type %q", truncate(m.Type, 32))
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

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
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
