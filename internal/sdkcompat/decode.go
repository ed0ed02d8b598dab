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
	VersionTag versionTag      `json:"jsonrpc"`
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
	var d decoded
	if err := d.decode(line, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, nil, err
	}
	if d.isReq {
		req := d.req
		return &req, d.f.ID, nil
	}
	resp := d.resp
	return &resp, d.f.ID, nil
}

// DecodeMessageView is DecodeMessage without the copies: the raw fields of
// the message (a request's params, a response's result, an error's data)
// are slices of line, valid only as long as line is. It is for a reader
// that looks at a frame and lets it go (a relay's rewrites); what it keeps,
// it copies. A View decodes frame after frame without allocating the
// message.
func DecodeMessageView(line []byte) (jsonrpc.Message, error) {
	return new(View).Decode(line)
}

// A View decodes frames as DecodeMessageView does, into itself: the message
// it returns is valid until its next Decode (and its raw fields as long as
// the frame is).
type View struct{ d decoded }

// Decode decodes line into v.
func (v *View) Decode(line []byte) (jsonrpc.Message, error) {
	if err := v.d.decode(line, segjson.DontMatchCaseInsensitiveStructFields|segjson.DontCopyRawMessage); err != nil {
		return nil, err
	}
	if v.d.isReq {
		return &v.d.req, nil
	}
	return &v.d.resp, nil
}

// decoded is a frame decoded: its wire form and the message it is.
type decoded struct {
	f     wireFrame
	isReq bool
	req   jsonrpc.Request
	resp  jsonrpc.Response
}

func (d *decoded) decode(line []byte, flags segjson.ParseFlags) error {
	*d = decoded{}
	if err := checkDepth(line, 1000); err != nil {
		return err
	}
	rest, err := segjson.Parse(line, &d.f, flags)
	if err != nil {
		return fmt.Errorf("unmarshaling jsonrpc message: %w", err)
	}
	f := &d.f
	if len(bytes.TrimSpace(rest)) != 0 {
		return errors.New("unmarshaling jsonrpc message: data after the message")
	}
	if f.VersionTag.s != "2.0" {
		return fmt.Errorf("invalid message version tag %q; expected %q", f.VersionTag.s, "2.0")
	}
	id, err := makeID(f.ID)
	if err != nil {
		return err
	}
	if len(f.Method) > 0 {
		method, ok := commonMethod(f.Method)
		if !ok {
			if _, err := segjson.Parse(f.Method, &method, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
				return fmt.Errorf("unmarshaling jsonrpc message: %w", err)
			}
		}
		d.isReq, d.req = true, jsonrpc.Request{Method: method, ID: id, Params: f.Params}
		return nil
	}
	if !id.IsValid() {
		return errors.New("JSON RPC invalid request")
	}
	d.resp = jsonrpc.Response{ID: id, Result: f.Result}
	if f.Error != nil {
		d.resp.Error = f.Error
	}
	return nil
}

// commonMethod returns the method raw (a JSON string) names if it is one
// most frames carry, written plainly: read without a copy.
func commonMethod(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	switch m := raw[1 : len(raw)-1]; string(m) {
	case "tools/call":
		return "tools/call", true
	case "tools/list":
		return "tools/list", true
	case "notifications/progress":
		return "notifications/progress", true
	case "notifications/cancelled":
		return "notifications/cancelled", true
	case "ping":
		return "ping", true
	}
	return "", false
}

// versionTag is the "jsonrpc" member of a frame, a string: read without a
// copy when it is written "2.0" plainly, as every frame has it.
type versionTag struct{ s string }

func (v *versionTag) UnmarshalJSON(b []byte) error {
	if string(b) == `"2.0"` {
		v.s = "2.0"
		return nil
	}
	_, err := segjson.Parse(b, &v.s, segjson.DontMatchCaseInsensitiveStructFields)
	return err
}

// makeID is jsonrpc.MakeID of the value raw holds, as the SDK's decoder
// reads it (a number as a float64).
func makeID(raw json.RawMessage) (jsonrpc.ID, error) {
	if n, ok := smallInt(raw); ok {
		return jsonrpc.MakeID(float64(n)) // exact: as the SDK reads it
	}
	var v any
	if len(raw) > 0 {
		if _, err := segjson.Parse(raw, &v, 0); err != nil {
			return jsonrpc.ID{}, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
		}
	}
	return jsonrpc.MakeID(v)
}

// smallInt reads raw if it is a JSON integer of at most 15 digits (one a
// float64 holds exactly), as frames' ids are.
func smallInt(raw []byte) (int64, bool) {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 15 || digits[0] == '0' && len(digits) > 1 {
		return 0, false
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if len(digits) < len(raw) {
		n = -n
	}
	return n, true
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
