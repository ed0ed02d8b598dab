package relay

import (
	"bytes"
	"encoding/json"
	"fmt"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// taskField marks a frame whose task context a relay must extend.
var taskField = []byte(`"` + tasks.MetaKey + `"`)

// mayHoldTask reports whether b may hold the task field: written plainly,
// or with a JSON escape that spells some of its characters (\uXXXX, \/),
// which the next node's decoder reads as the same key. A frame for which it
// is false passes undecoded; one that hides the key behind escapes must
// not, or the next node would read a path the relay never checked.
func mayHoldTask(b []byte) bool {
	return bytes.Contains(b, taskField) || HasKeyEscape(b)
}

// HasKeyEscape reports whether b holds a JSON escape (\uXXXX, \/) that could
// spell a key another way than plainly: a rewrite that looks for a key's
// bytes must then decode the frame.
func HasKeyEscape(b []byte) bool {
	return bytes.Contains(b, []byte(`\u`)) || bytes.Contains(b, []byte(`\/`))
}

// TaskHop returns the rewrite that makes the node self a hop of the task
// tree for a session it relays from caller: it extends the task context of
// each tools/call by this hop, so that the serving node's guard sees a path
// that ends with its caller (self), loops through self are refused, and
// budgets and deadlines shrink here too. A frame without a task context
// passes undecoded; one with it is decoded to its envelope, and the field is
// replaced in place. It is nil for the node's own sessions (caller == self),
// whose calls already end their path with it.
func TaskHop(self, caller lpeer.ID) FrameRewrite {
	if caller == self {
		return nil
	}
	selfText, from := self.String(), caller.String()
	return func(frame []byte) ([]byte, []byte, error) {
		if !mayHoldTask(frame) {
			return frame, nil, nil
		}
		msg, err := sdkcompat.DecodeMessage(frame)
		if err != nil {
			return nil, nil, err
		}
		req, ok := msg.(*jsonrpc.Request)
		if !ok || req.Method != "tools/call" {
			return frame, nil, nil
		}
		old, next, refusal := extendTask(req.Params, selfText, from)
		switch {
		case refusal != "":
			return nil, refusalFrame(req, refusal), nil
		case old == "":
			return frame, nil, nil
		}
		if out, ok := spliceMeta(frame, old, next); ok {
			return out, nil, nil
		}
		params, err := replaceMeta(req.Params, next)
		if err != nil {
			return nil, refusalFrame(req, err.Error()), nil
		}
		req.Params = params
		out, err := jsonrpc.EncodeMessage(req)
		return out, nil, err
	}
}

// TaskHopMessages is TaskHop for a Pump, on decoded messages.
func TaskHopMessages(self, caller lpeer.ID) Rewrite {
	if caller == self {
		return nil
	}
	selfText, from := self.String(), caller.String()
	return func(msg jsonrpc.Message) (jsonrpc.Message, jsonrpc.Message, error) {
		req, ok := msg.(*jsonrpc.Request)
		if !ok || req.Method != "tools/call" || !mayHoldTask(req.Params) {
			return msg, nil, nil
		}
		old, next, refusal := extendTask(req.Params, selfText, from)
		switch {
		case refusal != "":
			return nil, refusalMessage(req, refusal), nil
		case old == "":
			return msg, nil, nil
		}
		params, ok := spliceMeta(req.Params, old, next)
		if !ok {
			var err error
			if params, err = replaceMeta(req.Params, next); err != nil {
				return nil, refusalMessage(req, err.Error()), nil
			}
		}
		out := *req
		out.Params = params
		return &out, nil, nil
	}
}

// extendTask reads the task context of a tools/call's params and returns
// it and the context to pass on from self, or why the call is refused. old
// is empty if the call carries no task context.
func extendTask(params json.RawMessage, self, caller string) (old, next, refusal string) {
	// Decode only the one _meta field the relay needs; the rest of the
	// params, arguments included, is skipped. The field is read as the next
	// node's SDK reads it (same parser; the last of duplicate keys wins,
	// whatever its type), so the relay judges the very value the next node
	// will see.
	// (A pointer, as the SDK's map: "_meta": null clears what came before.)
	var head struct {
		Meta *struct {
			Task json.RawMessage `json:"io.mcpmesh/task"`
		} `json:"_meta"`
	}
	if _, err := segjson.Parse(params, &head, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return "", "", "" // not the relay's to judge: the server answers bad params
	}
	if head.Meta == nil {
		return "", "", ""
	}
	raw := head.Meta.Task
	if len(raw) == 0 || string(raw) == "null" {
		return "", "", "" // no task context: the next node makes the relay's call a root
	}
	var task string
	if _, err := segjson.Parse(raw, &task, 0); err != nil {
		return "", "", fmt.Sprintf("_meta %q: want a string", tasks.MetaKey)
	}
	m, err := tasks.Parse(task)
	if err != nil {
		return "", "", err.Error()
	}
	if err := tasks.Check(m, self, caller); err != nil {
		return "", "", err.Error()
	}
	n := *m
	n.Path = append(append([]string(nil), m.Path...), self)
	n.Budget--
	if left := m.Timeout(); left > 0 {
		n.TimeoutMs = max((left - tasks.Margin(left)).Milliseconds(), 1)
	}
	return task, n.String(), ""
}

// spliceMeta replaces the task field "key":"old" with "key":"next" in b,
// where it is written the compact way (as Go and most encoders write it)
// and only once; ok is false otherwise. The key must appear once in b, and
// b hold no escape that could spell it another way: then that one key is
// the one the next node reads, and not, say, a field of the arguments.
func spliceMeta(b []byte, old, next string) ([]byte, bool) {
	oldValue, _ := json.Marshal(old)
	newValue, _ := json.Marshal(next)
	return SpliceField(b, taskField, oldValue, newValue)
}

// SpliceField replaces "key":old with "key":next in b (key quoted, values
// raw JSON), where it is written the compact way and only once; ok is false
// otherwise (then decode and re-encode, see SetMetaField). The key must
// appear once in b, and b hold no escape that could spell it another way
// (HasKeyEscape): then that one key is the one the next node reads.
func SpliceField(b, key, old, next []byte) ([]byte, bool) {
	if bytes.Count(b, key) != 1 || HasKeyEscape(b) {
		return nil, false
	}
	oldField := append(append(append([]byte(nil), key...), ':'), old...)
	newField := append(append(append([]byte(nil), key...), ':'), next...)
	i := bytes.Index(b, oldField)
	if i < 0 || bytes.Index(b[i+len(oldField):], oldField) >= 0 {
		return nil, false
	}
	out := make([]byte, 0, len(b)+len(newField)-len(oldField)+1) // +1: room for the frame's newline
	out = append(append(append(out, b[:i]...), newField...), b[i+len(oldField):]...)
	return out, true
}

// refusalFrame answers a request the relay will not pass on, as a frame
// (nil for a notification, which has no answer).
func refusalFrame(req *jsonrpc.Request, reason string) []byte {
	msg := refusalMessage(req, reason)
	if msg == nil {
		return nil
	}
	out, _ := jsonrpc.EncodeMessage(msg)
	return out
}

func refusalMessage(req *jsonrpc.Request, reason string) jsonrpc.Message {
	if !req.ID.IsValid() {
		return nil
	}
	return &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: reason}}
}

// replaceMeta sets params._meta[task key] to next, re-encoding the top
// level of params (the other fields stay raw bytes).
func replaceMeta(params json.RawMessage, next string) (json.RawMessage, error) {
	v, err := json.Marshal(next)
	if err != nil {
		return nil, err
	}
	return SetMetaField(params, tasks.MetaKey, v)
}

// SetMetaField sets params._meta[key] to v, re-encoding the top level of
// params (the other fields stay raw bytes).
func SetMetaField(params json.RawMessage, key string, v json.RawMessage) (json.RawMessage, error) {
	var top map[string]json.RawMessage
	if _, err := segjson.Parse(params, &top, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, err
	}
	if top == nil { // "params": null
		top = map[string]json.RawMessage{}
	}
	var meta map[string]json.RawMessage
	if raw, ok := top["_meta"]; ok {
		if _, err := segjson.Parse(raw, &meta, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
			return nil, err
		}
	}
	if meta == nil { // "_meta": null, or missing
		meta = map[string]json.RawMessage{}
	}
	meta[key] = v
	var err error
	if top["_meta"], err = segjson.Marshal(meta); err != nil {
		return nil, err
	}
	return segjson.Marshal(top)
}

// SetField sets the top-level field key of params to v, re-encoding the top
// level of params (the other fields stay raw bytes).
func SetField(params json.RawMessage, key string, v json.RawMessage) (json.RawMessage, error) {
	var top map[string]json.RawMessage
	if _, err := segjson.Parse(params, &top, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, err
	}
	if top == nil {
		top = map[string]json.RawMessage{}
	}
	top[key] = v
	return segjson.Marshal(top)
}
