package trust

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// A re-shared server is relayed frame by frame, undecoded where possible, so
// the policy applies to it at three points: a peer needs some grant on it to
// open a session; each tools/call is checked by tool name; and the answers
// to its list requests are filtered on their way back. A delegation that
// comes with a call is verified here and extended to the peer behind, which
// sees this node acting for the delegation's principal.

var (
	toolsCallField  = []byte(`tools/call`)
	listField       = []byte(`/list`)
	delegationField = []byte(`"` + delegation.MetaKey + `"`)
	resultField     = []byte(`"result"`)
	errorField      = []byte(`"error"`)
	cancelledField  = []byte(`notifications/cancelled`)
)

// mayNeedTrust reports whether a frame may be a tools/call or a list
// request, or carry a delegation, written plainly or behind JSON escapes.
func mayNeedTrust(b []byte) bool {
	return bytes.Contains(b, toolsCallField) || bytes.Contains(b, listField) ||
		bytes.Contains(b, delegationField) || relay.HasKeyEscape(b)
}

// pending holds a value per request of one relayed session, by JSON-RPC
// request ID, until the request's answer passes: the method of a list
// request (its answer is filtered), the end of a tools/call (it holds the
// caller's admission, and is audited when it ends).
type pending[V any] struct {
	mu sync.Mutex
	m  map[jsonrpc.ID]V
}

// put holds v under id, unless max (if > 0) values are held already. It
// returns the value id held before, if any.
func (p *pending[V]) put(id jsonrpc.ID, v V, max int) (old V, replaced, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[jsonrpc.ID]V{}
	}
	if max > 0 && len(p.m) >= max {
		return old, false, false
	}
	old, replaced = p.m[id]
	p.m[id] = v
	return old, replaced, true
}

// take removes and returns the value held under id.
func (p *pending[V]) take(id jsonrpc.ID) (V, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[id]
	delete(p.m, id)
	return v, ok
}

func (p *pending[V]) any() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m) > 0
}

// takeAll removes and returns every value held.
func (p *pending[V]) takeAll() map[jsonrpc.ID]V {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.m
	p.m = nil
	return m
}

// maxPendingLists bounds what a client that never reads its answers can
// make the relay hold; past it, list requests are refused. (Calls are
// bounded by the caller's limits.)
const maxPendingLists = 256

// endCall ends a relayed call: it releases its admission and audits it.
type endCall func(audit.Outcome, string)

// relayedCall is a relayed tools/call waiting for its answer: how to end it,
// and the hop it goes to (named if the target is lost).
type relayedCall struct {
	finish endCall
	hop    tasks.Hop
}

// relayedOutcome is how a relayed call's answer is audited.
func relayedOutcome(resp *jsonrpc.Response) (audit.Outcome, string) {
	if resp.Error != nil {
		return audit.Error, firstLine(resp.Error.Error())
	}
	var r struct {
		IsError bool `json:"isError"`
	}
	if _, err := segjson.Parse(resp.Result, &r, segjson.DontMatchCaseInsensitiveStructFields); err == nil && r.IsError {
		return audit.Error, "tool error"
	}
	return audit.OK, ""
}

// cancelledRequest returns the ID of the request a notifications/cancelled
// frame cancels.
func cancelledRequest(frame []byte) (jsonrpc.ID, bool) {
	msg, err := sdkcompat.DecodeMessage(frame)
	if err != nil {
		return jsonrpc.ID{}, false
	}
	req, ok := msg.(*jsonrpc.Request)
	if !ok || req.Method != "notifications/cancelled" {
		return jsonrpc.ID{}, false
	}
	var p struct {
		RequestID any `json:"requestId"`
	}
	if json.Unmarshal(req.Params, &p) != nil {
		return jsonrpc.ID{}, false
	}
	id, err := jsonrpc.MakeID(p.RequestID)
	return id, err == nil && id.IsValid()
}

// MayOpenRelay reports whether caller may open a session on the re-shared
// server name, and audits a refusal.
func (g *Guard) MayOpenRelay(caller lpeer.ID, name string) bool {
	if g.policy.Load().AllowsServer(caller, policy.Anyone, name) {
		return true
	}
	g.refuse(audit.Record{Time: time.Now(), Caller: caller.String(), Server: name, Method: "session"},
		&refusal{reason: "policy", msg: fmt.Sprintf("not permitted: %s may not use server %s", identity.Short(caller), name)})
	return false
}

// Target is the server a re-shared server relays to: server on peer Peer.
type Target struct {
	Peer   lpeer.ID
	Server string
}

// RelayRewrites returns the frame rewrites that apply the policy,
// delegations and limits to a session that the re-shared server name
// relays from caller to t: toServer (then runs after it: the task layer's
// rewrite) and toClient. send writes a message of the guard's own to the
// client (a list_changed, an answer). end must be called when the session
// ends, with the error that ended the target's side if it was lost (the
// calls waiting on it are then answered with a failure naming it, sent with
// send, rather than left to the session's end).
func (g *Guard) RelayRewrites(caller lpeer.ID, name string, t Target, then relay.FrameRewrite, send func(jsonrpc.Message) error) (toServer, toClient relay.FrameRewrite, end func(lost error)) {
	if caller == g.cfg.Self {
		return then, nil, func(error) {}
	}
	lists, calls := &pending[listAsk]{}, &pending[relayedCall]{}
	session := NewSession(name, caller)
	session.Notify = func(method string) error { return send(&jsonrpc.Request{Method: method}) }
	g.Track(session)
	pass := func(frame []byte) ([]byte, []byte, error) {
		if then == nil {
			return frame, nil, nil
		}
		return then(frame)
	}
	toServer = func(frame []byte) ([]byte, []byte, error) {
		if calls.any() && bytes.Contains(frame, cancelledField) {
			// A cancelled request may get no answer: it ends here.
			if id, ok := cancelledRequest(frame); ok {
				if c, ok := calls.take(id); ok {
					c.finish(audit.Cancelled, "")
				}
			}
		}
		if mayNeedTrust(frame) {
			msg, err := sdkcompat.DecodeMessage(frame)
			if err != nil {
				return nil, nil, err
			}
			req, _ := msg.(*jsonrpc.Request)
			if req == nil { // an answer to the server's own request: nothing to check
				return pass(frame)
			}
			if _, list := kindOfList[req.Method]; list && req.ID.IsValid() {
				if _, _, ok := lists.put(req.ID, listAsk{req.Method, firstPage(req.Params)}, maxPendingLists); !ok {
					return nil, refusalReply(req, &jsonrpc.Error{Code: CodeLimited, Message: "too many list requests waiting for their answers"}), nil
				}
			}
			if req.Method == "tools/call" {
				old, next, finish, hop, reason := g.relayCallTrust(req.Params, caller, name, t)
				if reason != nil {
					return nil, refusalReply(req, reason), nil
				}
				if req.ID.IsValid() {
					if old, replaced, _ := calls.put(req.ID, relayedCall{finish, hop}, 0); replaced {
						old.finish(audit.Error, "request ID reused while in flight")
					}
				} else {
					finish(audit.Error, "sent as a notification: no answer") // nothing to wait for
				}
				if next != nil {
					// In place when the field is written once, plainly;
					// else through a re-encoding of the params.
					if out, ok := relay.SpliceField(frame, delegationField, old, next); ok {
						frame = out
					} else {
						params, err := relay.SetMetaField(req.Params, delegation.MetaKey, next)
						if err != nil {
							return nil, refusalReply(req, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}), nil
						}
						out := *req
						out.Params = params
						if frame, err = jsonrpc.EncodeMessage(&out); err != nil {
							return nil, nil, err
						}
					}
				}
			}
		}
		return pass(frame)
	}
	toClient = func(frame []byte) ([]byte, []byte, error) {
		if !lists.any() && !calls.any() ||
			!bytes.Contains(frame, resultField) && !bytes.Contains(frame, errorField) && !relay.HasKeyEscape(frame) {
			return frame, nil, nil
		}
		msg, err := sdkcompat.DecodeMessage(frame)
		if err != nil {
			return nil, nil, err
		}
		resp, ok := msg.(*jsonrpc.Response)
		if ok {
			if c, found := calls.take(resp.ID); found {
				c.finish(relayedOutcome(resp))
			}
		}
		if !ok || resp.Error != nil {
			if ok {
				lists.take(resp.ID)
			}
			return frame, nil, nil
		}
		ask, ok := lists.take(resp.ID)
		if !ok {
			return frame, nil, nil
		}
		res, err := decodeList(ask.method, resp)
		if err != nil {
			return nil, nil, fmt.Errorf("read %s answer from %s/%s: %w", ask.method, t.Peer, t.Server, err)
		}
		session.remember(ask.method, ask.firstPage, res)
		pol := g.policy.Load()
		if pol.IsOpen() {
			return frame, nil, nil
		}
		filterList(pol, policy.Access{Caller: caller, Server: name}, res)
		out, err := encodeList(resp, res)
		if err != nil {
			return nil, nil, fmt.Errorf("filter %s answer from %s/%s: %w", ask.method, t.Peer, t.Server, err)
		}
		return out, nil, nil
	}
	end = func(lost error) {
		g.Untrack(session)
		why := "session ended before the answer"
		if lost != nil {
			why = "connection to the target lost"
		}
		for id, c := range calls.takeAll() {
			if lost != nil && send != nil {
				if err := send(g.lostAnswer(id, c.hop, t.Peer, lost)); err != nil {
					trustLog.Debugw("answer a relayed call whose target was lost", "to", caller, "error", err)
				}
			}
			c.finish(audit.Error, why)
		}
	}
	return toServer, toClient, end
}

// lostAnswer answers a relayed tools/call whose target was lost: a failed
// result naming the hop (as a served task's failure does), so that the root
// of the call sees which node was lost, not this relay.
func (g *Guard) lostAnswer(id jsonrpc.ID, hop tasks.Hop, target lpeer.ID, lost error) *jsonrpc.Response {
	text := fmt.Sprintf("connection lost to %s: %v", target, lost)
	if why := g.lostWhy(target); why != "" {
		text = fmt.Sprintf("connection lost to %s%s", target, why)
	}
	res := &sdkmcp.CallToolResult{
		IsError: true,
		Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: text}},
		Meta:    sdkmcp.Meta{tasks.MetaKey: &tasks.ResultMeta{Task: hop.Task, State: tasks.Failed, FailedAt: &hop}},
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: text}}
	}
	return &jsonrpc.Response{ID: id, Result: raw}
}

// listAsk is a list request waiting for its answer.
type listAsk struct {
	method    string
	firstPage bool // asked with no cursor
}

// firstPage reports whether list params ask for the first page.
func firstPage(params json.RawMessage) bool {
	var p struct {
		Cursor string `json:"cursor"`
	}
	segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields)
	return p.Cursor == ""
}

// decodeList decodes the answer to a list request.
func decodeList(method string, resp *jsonrpc.Response) (sdkmcp.Result, error) {
	var res sdkmcp.Result
	switch method {
	case "tools/list":
		res = &sdkmcp.ListToolsResult{}
	case "prompts/list":
		res = &sdkmcp.ListPromptsResult{}
	case "resources/list":
		res = &sdkmcp.ListResourcesResult{}
	default:
		res = &sdkmcp.ListResourceTemplatesResult{}
	}
	if err := json.Unmarshal(resp.Result, res); err != nil {
		return nil, err
	}
	return res, nil
}

// encodeList re-encodes the answer resp to a list request with the result
// res.
func encodeList(resp *jsonrpc.Response, res sdkmcp.Result) ([]byte, error) {
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	out := *resp
	out.Result = raw
	return jsonrpc.EncodeMessage(&out)
}

// relayCallTrust checks one relayed tools/call: the policy on its tool, its
// delegation, old, for which it returns the delegation extended to the peer
// behind, next (nil: none came), and the caller's limits. end, called once
// when the call ends, releases its admission and audits it.
func (g *Guard) relayCallTrust(params json.RawMessage, caller lpeer.ID, name string, t Target) (old, next json.RawMessage, end endCall, hop tasks.Hop, refused *jsonrpc.Error) {
	// Read as the next node's SDK reads it (see extendTask).
	var head struct {
		Name string `json:"name"`
		Meta *struct {
			Delegation json.RawMessage `json:"io.mcpmesh/delegation"`
			Task       string          `json:"io.mcpmesh/task"`
		} `json:"_meta"`
	}
	if _, err := segjson.Parse(params, &head, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, nil, func(audit.Outcome, string) {}, hop, nil // not the relay's to judge: the server answers bad params
	}
	hop = tasks.Hop{Peer: g.names.Of(t.Peer), Server: t.Server, Tool: head.Name}
	if head.Meta != nil {
		hop.Task, _, _ = strings.Cut(head.Meta.Task, " ") // the task's ID comes first
	}
	rec := audit.Record{Time: time.Now(), Caller: g.names.Of(caller), Server: name, Method: "tools/call", Name: head.Name}
	a := policy.Access{Caller: caller, Server: name, Kind: policy.Tool, Name: head.Name}
	if head.Meta != nil && len(head.Meta.Delegation) > 0 && string(head.Meta.Delegation) != "null" {
		var wire []string
		err := json.Unmarshal(head.Meta.Delegation, &wire)
		var d *delegated
		if err == nil {
			d, err = g.verifyDelegation(wire, caller, name, head.Name)
		}
		if err == nil {
			var enc []string
			enc, err = g.extendDelegation(d, t.Peer, t.Server, head.Name)
			if err == nil {
				next, err = json.Marshal(enc)
			}
		}
		if err != nil {
			return nil, nil, nil, hop, g.refuseRelayed(rec, &refusal{reason: "delegation", code: CodeNotPermitted,
				msg: fmt.Sprintf("not permitted: %s/%s on %s: %v", name, head.Name, identity.Short(g.cfg.Self), err)})
		}
		old = head.Meta.Delegation
		if d.principal != caller {
			a.For, rec.For = d.principal, d.principalText
		}
	}
	if !g.policy.Load().Allows(a) {
		return nil, nil, nil, hop, g.refuseRelayed(rec, &refusal{reason: "policy", code: CodeNotPermitted, msg: g.notPermitted(a)})
	}
	release, r := g.admitCall(caller, a.For)
	if r != nil {
		return nil, nil, nil, hop, g.refuseRelayed(rec, r)
	}
	// While the call is in flight, a silent target fails it and a silent
	// caller ends it, within seconds (see Config.Hold).
	unholdTarget, unholdCaller := g.hold(t.Peer), g.hold(caller)
	end = func(o audit.Outcome, reason string) {
		release()
		unholdTarget()
		unholdCaller()
		rec.Outcome, rec.Reason, rec.Duration = o, reason, time.Since(rec.Time)
		g.cfg.Audit.Add(rec)
		if m := g.cfg.Metrics; m != nil {
			m.Call(name, head.Name, rec.Caller, string(o), rec.Duration)
		}
	}
	return old, next, end, hop, nil
}

func (g *Guard) refuseRelayed(rec audit.Record, r *refusal) *jsonrpc.Error {
	return g.refuse(rec, r).(*jsonrpc.Error)
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
