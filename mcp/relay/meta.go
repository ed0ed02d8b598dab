package relay

import (
	"bytes"
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"
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
	return func(f *Frame) error {
		for _, rw := range live {
			if err := rw(f); err != nil || f.Dropped() {
				return err
			}
		}
		return nil
	}
}

// StripMeshMeta is the rewrite of what goes to a server outside the mesh (a
// program, an HTTP endpoint): it removes the mesh's own _meta keys from the
// params of every request and notification, which the server must not see
// (the node that serves it has read them), and the _meta object itself when
// nothing else was in it. A frame without the prefix written plainly (or an
// escape that could spell it) passes undecoded.
func StripMeshMeta(f *Frame) error {
	if !f.Contains(meshKey) && !f.HasKeyEscape() {
		return nil
	}
	f.Bytes() // the changes asked for before this, made: Replace would drop them
	msg, err := f.Message()
	if err != nil {
		return err
	}
	req, ok := msg.(*jsonrpc.Request)
	if !ok || len(req.Params) == 0 {
		return nil
	}
	params, changed, err := stripMeta(req.Params)
	if err != nil || !changed {
		return nil // not ours to judge: the server answers bad params
	}
	return f.ReplaceParams(req, params)
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

// HasKeyEscape reports whether b holds a JSON escape (\uXXXX, \/) that could
// spell a key another way than plainly: a rewrite that looks for a key's
// bytes must then decode the frame.
func HasKeyEscape(b []byte) bool {
	return bytes.Contains(b, []byte(`\u`)) || bytes.Contains(b, []byte(`\/`))
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
