package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/peer"
)

// A re-shared server is relayed frame by frame, undecoded, so the policy
// applies to it at two points: a peer needs some grant on it to open a
// session (its lists then come unfiltered from the server behind), and each
// tools/call is checked by tool name. A delegation that comes with a call is
// verified here and extended to the peer behind, which sees this node acting
// for the delegation's principal.

var (
	toolsCallField  = []byte(`tools/call`)
	delegationField = []byte(`"` + peer.DelegationMetaKey + `"`)
)

// mayNeedTrust reports whether a frame may be a tools/call or carry a
// delegation, written plainly or behind JSON escapes.
func mayNeedTrust(b []byte) bool {
	return bytes.Contains(b, toolsCallField) || bytes.Contains(b, delegationField) || hasKeyEscape(b)
}

// mayOpenRelay reports whether caller may open a session on the re-shared
// server name, and audits a refusal.
func (n *Node) mayOpenRelay(caller lpeer.ID, name string) bool {
	if n.policy.Load().AllowsServer(caller, peer.Anyone, name) {
		return true
	}
	n.refuse(audit.Record{Time: time.Now(), Caller: caller.String(), Server: name, Method: "session"},
		&refusal{reason: "policy", msg: fmt.Sprintf("not permitted: %s may not use server %s", shortPeer(caller), name)})
	return false
}

// relayTrust is the frame rewrite that applies the policy and delegations
// to the calls relayed from caller to t, before the task layer's rewrite.
func (n *Node) relayTrust(caller lpeer.ID, name string, t *relayTarget, then mcp.FrameRewrite) mcp.FrameRewrite {
	if caller == n.host.ID() {
		return then
	}
	return func(frame []byte) ([]byte, []byte, error) {
		if mayNeedTrust(frame) {
			msg, err := mcp.DecodeFrame(frame)
			if err != nil {
				return nil, nil, err
			}
			if req, ok := msg.(*jsonrpc.Request); ok && req.Method == "tools/call" {
				params, reason := n.relayCallTrust(req.Params, caller, name, t)
				if reason != nil {
					return nil, refusalReply(req, reason), nil
				}
				if params != nil {
					out := *req
					out.Params = params
					if frame, err = jsonrpc.EncodeMessage(&out); err != nil {
						return nil, nil, err
					}
				}
			}
		}
		if then == nil {
			return frame, nil, nil
		}
		return then(frame)
	}
}

// relayCallTrust checks one relayed tools/call: the policy on its tool, and
// its delegation, which it replaces with the delegation extended to the peer
// behind (params nil: unchanged).
func (n *Node) relayCallTrust(params json.RawMessage, caller lpeer.ID, name string, t *relayTarget) (json.RawMessage, *jsonrpc.Error) {
	// Read as the next node's SDK reads it (see extendTask).
	var head struct {
		Name string `json:"name"`
		Meta *struct {
			Delegation json.RawMessage `json:"io.mcpmesh/delegation"`
		} `json:"_meta"`
	}
	if _, err := segjson.Parse(params, &head, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, nil // not the relay's to judge: the server answers bad params
	}
	rec := audit.Record{Time: time.Now(), Caller: caller.String(), Server: name, Method: "tools/call", Name: head.Name}
	a := peer.Access{Caller: caller, Server: name, Kind: peer.Tool, Name: head.Name}
	var next json.RawMessage
	if head.Meta != nil && len(head.Meta.Delegation) > 0 && string(head.Meta.Delegation) != "null" {
		var wire []string
		err := json.Unmarshal(head.Meta.Delegation, &wire)
		var d *delegated
		if err == nil {
			d, err = n.verifyDelegation(wire, caller, name, head.Name)
		}
		if err == nil {
			var enc []string
			enc, err = n.extendDelegation(d, t.peer, t.server, head.Name)
			if err == nil {
				next, err = json.Marshal(enc)
			}
		}
		if err != nil {
			return nil, n.refuseRelayed(rec, "delegation", fmt.Sprintf("not permitted: %s/%s on %s: %v", name, head.Name, shortPeer(n.host.ID()), err))
		}
		if d.principal != caller {
			a.For, rec.For = d.principal, d.principal.String()
		}
	}
	if !n.policy.Load().Allows(a) {
		who := shortPeer(caller)
		if a.For != "" {
			who += " acting for " + shortPeer(a.For)
		}
		return nil, n.refuseRelayed(rec, "policy", fmt.Sprintf("not permitted: %s may not use %s/%s on %s", who, name, head.Name, shortPeer(n.host.ID())))
	}
	if next == nil {
		return nil, nil
	}
	out, err := setMetaField(params, peer.DelegationMetaKey, next)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}
	}
	return out, nil
}

func (n *Node) refuseRelayed(rec audit.Record, reason, msg string) *jsonrpc.Error {
	err := n.refuse(rec, &refusal{reason: reason, code: CodeNotPermitted, msg: msg})
	return err.(*jsonrpc.Error)
}

// refusalReply answers a request the relay will not pass on (nil for a
// notification).
func refusalReply(req *jsonrpc.Request, e *jsonrpc.Error) []byte {
	if !req.ID.IsValid() {
		return nil
	}
	out, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: req.ID, Error: e})
	return out
}

// setMetaField sets params._meta[key] to v, re-encoding the top level of
// params (the other fields stay raw bytes).
func setMetaField(params json.RawMessage, key string, v json.RawMessage) (json.RawMessage, error) {
	var top map[string]json.RawMessage
	if _, err := segjson.Parse(params, &top, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, err
	}
	var meta map[string]json.RawMessage
	if _, err := segjson.Parse(top["_meta"], &meta, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, err
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
