package sdkcompat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"
)

// wireFrame is one JSON-RPC message as it crosses the stream. Method stays raw
// so that a present but empty method is told apart from none.
type wireFrame struct {
	VersionTag string          `json:"jsonrpc"`
	ID         json.RawMessage `json:"id,omitempty"`
	Method     json.RawMessage `json:"method"`
	Params     json.RawMessage `json:"params,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      *jsonrpc.Error  `json:"error,omitempty"`
}

// DecodeMessage is jsonrpc.DecodeMessage without its 32 KiB decoder buffer
// per call: the same parser (segmentio) with the same flags, straight from
// the frame. It also refuses data after the message, as the SDK's stdio
// transport does. RawMessage fields are copied, so line may be reused.
func DecodeMessage(line []byte) (jsonrpc.Message, error) {
	msg, _, err := DecodeFrame(line)
	return msg, err
}

// DecodeFrame is DecodeMessage that also returns the message's id exactly
// as it was sent: its JSON text (a number of any length or precision, a
// string with its escapes, or null), or nil when the message has no id.
// The SDK's jsonrpc.ID holds an int64 or a string, so 1.5 becomes 1 and
// 2^53+1 becomes 2^53 in the message; a transport that must echo ids as
// sent (JSON-RPC 2.0 asks it to) answers with the raw id instead. A null id
// makes no valid ID: the message is then a request without one, and only
// the raw id tells it from a notification. Like the message, rawID is a copy.
func DecodeFrame(line []byte) (msg jsonrpc.Message, rawID []byte, err error) {
	return decodeFrame(line, segjson.DontMatchCaseInsensitiveStructFields)
}

// DecodeMessageView is DecodeMessage without the copies: the raw fields of
// the message (a request's params, a response's result, an error's data)
// are slices of line, valid only as long as line is. It is for a reader
// that looks at a frame and lets it go (a relay's rewrites); what it keeps,
// it copies.
func DecodeMessageView(line []byte) (jsonrpc.Message, error) {
	msg, _, err := decodeFrame(line, segjson.DontMatchCaseInsensitiveStructFields|segjson.DontCopyRawMessage)
	return msg, err
}

func decodeFrame(line []byte, flags segjson.ParseFlags) (msg jsonrpc.Message, rawID []byte, err error) {
	if err := checkDepth(line, 1000); err != nil {
		return nil, nil, err
	}
	var f wireFrame
	rest, err := segjson.Parse(line, &f, flags)
	if err != nil {
		return nil, nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, nil, errors.New("unmarshaling jsonrpc message: data after the message")
	}
	if f.VersionTag != "2.0" {
		return nil, nil, fmt.Errorf("invalid message version tag %q; expected %q", f.VersionTag, "2.0")
	}
	id, err := makeID(f.ID)
	if err != nil {
		return nil, nil, err
	}
	if len(f.Method) > 0 {
		var method string
		if _, err := segjson.Parse(f.Method, &method, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
			return nil, nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
		}
		return &jsonrpc.Request{Method: method, ID: id, Params: f.Params}, f.ID, nil
	}
	if !id.IsValid() {
		return nil, nil, errors.New("JSON RPC invalid request")
	}
	resp := &jsonrpc.Response{ID: id, Result: f.Result}
	if f.Error != nil {
		resp.Error = f.Error
	}
	return resp, f.ID, nil
}

// makeID is jsonrpc.MakeID of the value raw holds, as the SDK's decoder
// reads it (a number as a float64).
func makeID(raw json.RawMessage) (jsonrpc.ID, error) {
	var v any
	if len(raw) > 0 {
		if _, err := segjson.Parse(raw, &v, 0); err != nil {
			return jsonrpc.ID{}, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
		}
	}
	return jsonrpc.MakeID(v)
}

// checkDepth bounds JSON nesting as the SDK's decoder does (1000 levels).
func checkDepth(data []byte, maxDepth int) error {
	var depth int
	var inString, escaped bool
	for _, b := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > maxDepth {
				return fmt.Errorf("json: exceeded maximum nesting depth of %d", maxDepth)
			}
		case '}', ']':
			if depth > 0 {
				depth--
			}
		}
	}
	return nil
}
