package relay

import (
	"bytes"
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
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
