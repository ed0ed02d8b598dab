package relay

import (
	"bytes"
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// MeshPrefix starts every _meta key of the mesh's own (io.mcpmesh/task,
// io.mcpmesh/delegation, io.mcpmesh/ask): what the mesh adds to a message
// goes there, and nowhere else.
const MeshPrefix = "io.mcpmesh/"

var meshKey = []byte(`"` + MeshPrefix)

// Chain returns the rewrite that applies rws in turn: a frame one of them
// drops or answers goes no further. Nil rewrites are skipped; Chain of none
// is nil.
func Chain(rws ...FrameRewrite) FrameRewrite {
	var live []FrameRewrite
	for _, rw := range rws {
		if rw != nil {
			live = append(live, rw)
		}
	}
	switch len(live) {
	case 0:
		return nil
	case 1:
		return live[0]
	}
	return func(frame []byte) ([]byte, []byte, error) {
		for _, rw := range live {
			fwd, reply, err := rw(frame)
			if err != nil || fwd == nil {
				return fwd, reply, err
			}
			frame = fwd
		}
		return frame, nil, nil
	}
}

// StripMeshMeta is the rewrite of what goes to a server outside the mesh (a
// program, an HTTP endpoint): it removes the mesh's own _meta keys from the
// params of every request and notification, which the server must not see
// (the node that serves it has read them), and the _meta object itself when
// nothing else was in it. A frame without the prefix written plainly (or an
// escape that could spell it) passes undecoded.
func StripMeshMeta(frame []byte) ([]byte, []byte, error) {
	if !bytes.Contains(frame, meshKey) && !HasKeyEscape(frame) {
		return frame, nil, nil
	}
	msg, err := sdkcompat.DecodeMessage(frame)
	if err != nil {
		return nil, nil, err
	}
	req, ok := msg.(*jsonrpc.Request)
	if !ok || len(req.Params) == 0 {
		return frame, nil, nil
	}
	params, changed, err := stripMeta(req.Params)
	if err != nil || !changed {
		return frame, nil, nil // not ours to judge: the server answers bad params
	}
	out := *req
	out.Params = params
	b, err := jsonrpc.EncodeMessage(&out)
	return b, nil, err
}

// stripMeta removes the mesh's keys from params._meta, re-encoding the top
// level of params (the other fields stay raw bytes).
func stripMeta(params json.RawMessage) (json.RawMessage, bool, error) {
	var top map[string]json.RawMessage
	if _, err := segjson.Parse(params, &top, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, false, err
	}
	raw, ok := top["_meta"]
	if !ok {
		return params, false, nil
	}
	var meta map[string]json.RawMessage
	if _, err := segjson.Parse(raw, &meta, segjson.DontMatchCaseInsensitiveStructFields); err != nil || meta == nil {
		return params, false, err
	}
	changed := false
	for k := range meta {
		if len(k) >= len(MeshPrefix) && k[:len(MeshPrefix)] == MeshPrefix {
			delete(meta, k)
			changed = true
		}
	}
	if !changed {
		return params, false, nil
	}
	if len(meta) == 0 {
		delete(top, "_meta")
	} else {
		b, err := segjson.Marshal(meta)
		if err != nil {
			return nil, false, err
		}
		top["_meta"] = b
	}
	out, err := segjson.Marshal(top)
	return out, true, err
}

// ReadTaskMeta reads the mesh's task context of a tools/call from its
// params, as the next node's SDK reads it (the same parser; the last of
// duplicate keys wins, whatever its type; "_meta": null clears what came
// before), so that a relay judges the very value the next node would see.
// present is false when the call carries none; refusal says why a value
// that is there cannot be used.
func ReadTaskMeta(params json.RawMessage) (task string, present bool, refusal string) {
	var head struct {
		Meta *struct {
			Task json.RawMessage `json:"io.mcpmesh/task"`
		} `json:"_meta"`
	}
	if _, err := segjson.Parse(params, &head, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return "", false, "" // not the relay's to judge: the server answers bad params
	}
	if head.Meta == nil {
		return "", false, ""
	}
	raw := head.Meta.Task
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, ""
	}
	if _, err := segjson.Parse(raw, &task, 0); err != nil {
		return "", false, `_meta "io.mcpmesh/task": want a string`
	}
	return task, true, ""
}

// SetTaskMeta replaces the task context "old" of frame (a tools/call whose
// decoded envelope is req) by next: in place where the key is written once
// and plainly, else by re-encoding the params' top level. old is "" when the
// call carried none: the field is then added.
func SetTaskMeta(frame []byte, req *jsonrpc.Request, old, next string) ([]byte, error) {
	if old != "" {
		if out, ok := spliceMeta(frame, old, next); ok {
			return out, nil
		}
	}
	params, err := replaceMeta(req.Params, next)
	if err != nil {
		return nil, err
	}
	out := *req
	out.Params = params
	return jsonrpc.EncodeMessage(&out)
}

// taskField marks a frame whose task context a relay must extend.
var taskField = []byte(`"` + tasks.MetaKey + `"`)

// HasKeyEscape reports whether b holds a JSON escape (\uXXXX, \/) that could
// spell a key another way than plainly: a rewrite that looks for a key's
// bytes must then decode the frame.
func HasKeyEscape(b []byte) bool {
	return bytes.Contains(b, []byte(`\u`)) || bytes.Contains(b, []byte(`\/`))
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
