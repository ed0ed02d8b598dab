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
	ID         any             `json:"id,omitempty"`
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
	if err := checkDepth(line, 1000); err != nil {
		return nil, err
	}
	var f wireFrame
	rest, err := segjson.Parse(line, &f, segjson.DontMatchCaseInsensitiveStructFields)
	if err != nil {
		return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unmarshaling jsonrpc message: data after the message")
	}
	if f.VersionTag != "2.0" {
		return nil, fmt.Errorf("invalid message version tag %q; expected %q", f.VersionTag, "2.0")
	}
	id, err := jsonrpc.MakeID(f.ID)
	if err != nil {
		return nil, err
	}
	if len(f.Method) > 0 {
		var method string
		if _, err := segjson.Parse(f.Method, &method, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
			return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
		}
		return &jsonrpc.Request{Method: method, ID: id, Params: f.Params}, nil
	}
	if !id.IsValid() {
		return nil, errors.New("JSON RPC invalid request")
	}
	resp := &jsonrpc.Response{ID: id, Result: f.Result}
	if f.Error != nil {
		resp.Error = f.Error
	}
	return resp, nil
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
