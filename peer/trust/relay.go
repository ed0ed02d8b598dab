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
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// A relayed session (a re-shared server, --share-peer, or a server shared
// from a program or an endpoint, passed through) is relayed frame by frame,
// undecoded where possible, so the policy applies to it at three points: a
// peer needs some grant on the server to open a session; each request that
// names what it uses (tools/call by tool, prompts/get, resources/read and
// subscriptions by URI, completion by its reference) is checked; and the
// answers to its list requests are filtered on their way back, item by item
// with every other byte as the server sent it. A delegation that comes with
// a call is verified here and, for a peer's server, extended to the peer
// behind, which sees this node acting for the delegation's principal.

var (
	toolsCallField  = []byte(`tools/call`)
	listField       = []byte(`/list`)
	promptsGetField = []byte(`prompts/get`)
	resourcesField  = []byte(`resources/`)
	completionField = []byte(`completion/complete`)
	delegationField = []byte(`"` + delegation.MetaKey + `"`)
	resultField     = []byte(`"result"`)
	errorField      = []byte(`"error"`)
	cancelledField  = []byte(`notifications/cancelled`)
)

// mayNeedTrust reports whether a frame may be a request the policy checks
// or a list request, or carry a delegation, written plainly or behind JSON
// escapes.
func mayNeedTrust(f *relay.Frame) bool {
	return f.Contains(toolsCallField) || f.Contains(listField) ||
		f.Contains(promptsGetField) || f.Contains(resourcesField) ||
		f.Contains(completionField) ||
		f.Contains(delegationField) || f.HasKeyEscape()
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

// relayedCall is a relayed request waiting for its answer: how to end it,
// and, for a tools/call, the hop it goes to (named if the target is lost).
type relayedCall struct {
	finish endCall
	hop    tasks.Hop
	call   bool
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
func cancelledRequest(f *relay.Frame) (jsonrpc.ID, bool) {
	msg, err := f.Message()
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

// MayOpenRelay returns nil if caller may open a session on the server the
// node shares as name (re-shared from a peer, or passed through from a
// program or an endpoint), else the refusal, audited, as a JSON-RPC error
// (CodeNotPermitted) that says who may not use what, where: the node answers
// the session's first request with it.
func (g *Guard) MayOpenRelay(caller lpeer.ID, name string) *jsonrpc.Error {
	if g.policy.Load().AllowsServer(caller, policy.Anyone, name) {
		return nil
	}
	msg := fmt.Sprintf("not permitted: %s may not use server %s on %s (no grant names it for this peer)", identity.Short(caller), name, identity.Short(g.cfg.Self))
	g.refuse(audit.Record{Time: time.Now(), Caller: caller.String(), Server: name, Method: "session"},
		&refusal{reason: "policy", msg: msg})
	return &jsonrpc.Error{Code: CodeNotPermitted, Message: msg}
}

// Target is the server a relayed session goes to: server Server on peer
// Peer, or (Peer empty) a server the node shares from a program or an
// endpoint, where calls end and delegations are verified, not passed on.
type Target struct {
	Peer   lpeer.ID
	Server string
}

// RelayRewrites returns the frame rewrites that apply the policy,
// delegations and limits to a session that the server shared as name
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
	pass := func(f *relay.Frame) error {
		if then == nil {
			return nil
		}
		return then(f)
	}
	refuse := func(f *relay.Frame, req *jsonrpc.Request, e *jsonrpc.Error) error {
		f.Answer(refusalReply(req, e)) // a notification is dropped
		return nil
	}
	toServer = func(f *relay.Frame) error {
		if calls.any() && f.Contains(cancelledField) {
			// A cancelled request may get no answer: it ends here.
			if id, ok := cancelledRequest(f); ok {
				if c, ok := calls.take(id); ok {
					c.finish(audit.Cancelled, "")
				}
			}
		}
		if !mayNeedTrust(f) {
			return pass(f)
		}
		msg, err := f.Message()
		if err != nil {
			return err
		}
		req, _ := msg.(*jsonrpc.Request)
		if req == nil { // an answer to the server's own request: nothing to check
			return pass(f)
		}
		if _, list := kindOfList[req.Method]; list && req.ID.IsValid() {
			if _, _, ok := lists.put(req.ID, listAsk{req.Method, firstPage(req.Params)}, maxPendingLists); !ok {
				return refuse(f, req, &jsonrpc.Error{Code: CodeLimited, Message: "too many list requests waiting for their answers"})
			}
		}
		if req.Method != "tools/call" {
			if kind, what, ok := checkedRequest(req); ok {
				release, reason := g.relayRequestTrust(caller, name, req.Method, kind, what)
				if reason != nil {
					return refuse(f, req, reason)
				}
				if !req.ID.IsValid() {
					release(audit.OK, "")
				} else if old, replaced, _ := calls.put(req.ID, relayedCall{finish: release}, 0); replaced {
					old.finish(audit.Error, "request ID reused while in flight")
				}
			}
			return pass(f)
		}
		head, herr := f.Call()
		next, finish, hop, reason := g.relayCallTrust(head, herr, caller, name, t)
		if reason != nil {
			return refuse(f, req, reason)
		}
		if req.ID.IsValid() {
			if old, replaced, _ := calls.put(req.ID, relayedCall{finish: finish, hop: hop, call: true}, 0); replaced {
				old.finish(audit.Error, "request ID reused while in flight")
			}
		} else {
			finish(audit.Error, "sent as a notification: no answer") // nothing to wait for
		}
		if next != nil {
			// Made with the task layer's change, when the frame goes on.
			if err := f.SetMeta(delegation.MetaKey, head.Delegation, next); err != nil {
				return refuse(f, req, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()})
			}
		}
		return pass(f)
	}
	toClient = func(f *relay.Frame) error {
		if !lists.any() && !calls.any() ||
			!f.Contains(resultField) && !f.Contains(errorField) && !f.HasKeyEscape() {
			return nil
		}
		msg, err := f.Message()
		if err != nil {
			return err
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
			return nil
		}
		ask, ok := lists.take(resp.ID)
		if !ok {
			return nil
		}
		list, err := readList(ask.method, resp.Result)
		if err != nil {
			// Not the relay's to judge: the caller reads the server's answer.
			trustLog.Debugw("read a relayed list", "method", ask.method, "server", name, "error", err)
			return nil
		}
		session.rememberNames(ask.method, ask.firstPage, list.names)
		pol := g.policy.Load()
		if pol.IsOpen() {
			return nil
		}
		a := policy.Access{Caller: caller, Server: name, Kind: kindOfList[ask.method]}
		result, changed, err := list.keep(func(n string) bool { a.Name = n; return pol.Shows(a) })
		if err != nil {
			return fmt.Errorf("filter %s answer from %s: %w", ask.method, name, err)
		}
		if !changed {
			return nil
		}
		out := *resp
		out.Result = result
		b, err := jsonrpc.EncodeMessage(&out)
		if err != nil {
			return err
		}
		f.Replace(b)
		return nil
	}
	end = func(lost error) {
		g.Untrack(session)
		why := "session ended before the answer"
		if lost != nil {
			why = "connection to the target lost"
		}
		for id, c := range calls.takeAll() {
			if lost != nil && send != nil {
				answer := g.lostAnswer(id, c.hop, t.Peer, lost)
				if !c.call { // not a tool's: a plain error
					answer = &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: why}}
				}
				if err := send(answer); err != nil {
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
	if target == "" { // a program or an endpoint
		text = fmt.Sprintf("%s/%s on %s: the shared server's session ended before its answer (%v)", hop.Server, hop.Tool, identity.Short(g.cfg.Self), lost)
		hop.Peer = g.names.Of(g.cfg.Self)
	} else if why := g.lostWhy(target); why != "" {
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

// rawList is the answer to a list request, its items raw.
type rawList struct {
	top   map[string]json.RawMessage
	field string
	items []json.RawMessage
	names []string
}

// listItems names, by list method, the field of the items and the field
// that names each.
var listItems = map[string][2]string{
	"tools/list":               {"tools", "name"},
	"prompts/list":             {"prompts", "name"},
	"resources/list":           {"resources", "uri"},
	"resources/templates/list": {"resourceTemplates", "uriTemplate"},
}

// readList reads the answer to a list request: its items, raw, and their
// names.
func readList(method string, result json.RawMessage) (*rawList, error) {
	f := listItems[method]
	l := &rawList{field: f[0]}
	if _, err := segjson.Parse(result, &l.top, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, err
	}
	if _, err := segjson.Parse(l.top[l.field], &l.items, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, err
	}
	l.names = make([]string, len(l.items))
	for i, item := range l.items {
		var named map[string]json.RawMessage
		if _, err := segjson.Parse(item, &named, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
			return nil, err
		}
		segjson.Unmarshal(named[f[1]], &l.names[i])
	}
	return l, nil
}

// keep returns the answer with only the items whose names ok keeps, every
// byte of those as the server sent them; changed is false when all are
// kept.
func (l *rawList) keep(ok func(name string) bool) (json.RawMessage, bool, error) {
	kept := make([]json.RawMessage, 0, len(l.items))
	for i, item := range l.items {
		if ok(l.names[i]) {
			kept = append(kept, item)
		}
	}
	if len(kept) == len(l.items) {
		return nil, false, nil
	}
	var err error
	if l.top[l.field], err = segjson.Marshal(kept); err != nil {
		return nil, false, err
	}
	out, err := segjson.Marshal(l.top)
	return out, true, err
}

// checkedRequest tells what a request the policy checks names, from its
// params, read as accessOf reads the SDK's.
func checkedRequest(req *jsonrpc.Request) (policy.Kind, string, bool) {
	var p struct {
		Name string `json:"name"`
		URI  string `json:"uri"`
		Ref  *struct {
			Type string `json:"type"`
			Name string `json:"name"`
			URI  string `json:"uri"`
		} `json:"ref"`
	}
	switch req.Method {
	case "tools/call", "prompts/get", "resources/read", "resources/subscribe", "resources/unsubscribe", "completion/complete":
	default:
		return 0, "", false
	}
	segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields)
	switch req.Method {
	case "tools/call":
		return policy.Tool, p.Name, true
	case "prompts/get":
		return policy.Prompt, p.Name, true
	case "completion/complete":
		switch {
		case p.Ref == nil:
			return 0, "", true
		case p.Ref.Type == "ref/prompt":
			return policy.Prompt, p.Ref.Name, true
		case p.Ref.Type == "ref/resource":
			return policy.Resource, p.Ref.URI, true
		}
		return 0, "", true
	}
	return policy.Resource, p.URI, true
}

// relayRequestTrust checks one relayed request other than a call: the
// policy on what it names, and the caller's limits. The admission is held
// until release (the answer, a cancellation, the session's end); only
// refusals are audited, as for served requests.
func (g *Guard) relayRequestTrust(caller lpeer.ID, name, method string, kind policy.Kind, what string) (endCall, *jsonrpc.Error) {
	rec := audit.Record{Time: time.Now(), Caller: g.names.Of(caller), Server: name, Method: method, Name: what}
	a := policy.Access{Caller: caller, Server: name, Kind: kind, Name: what}
	if kind != 0 && !g.policy.Load().Allows(a) {
		return nil, g.refuseRelayed(rec, &refusal{reason: "policy", code: CodeNotPermitted, msg: g.notPermitted(a)})
	}
	release, r := g.admitCall(caller, "")
	if r != nil {
		return nil, g.refuseRelayed(rec, r)
	}
	return func(audit.Outcome, string) { release() }, nil
}

// relayCallTrust checks one relayed tools/call, whose params read as head
// (or did not: herr): the policy on its tool, its delegation, which it
// returns extended to the peer behind, next (nil: none came, or the call
// ends here), and the caller's limits. end, called once when the call ends,
// releases its admission and audits it.
func (g *Guard) relayCallTrust(head relay.CallParams, herr error, caller lpeer.ID, name string, t Target) (next json.RawMessage, end endCall, hop tasks.Hop, refused *jsonrpc.Error) {
	if herr != nil {
		return nil, func(audit.Outcome, string) {}, hop, nil // not the relay's to judge: the server answers bad params
	}
	hop = tasks.Hop{Peer: g.names.Of(t.Peer), Server: t.Server, Tool: head.Name}
	hop.Task = taskID(head.Task)
	rec := audit.Record{Time: time.Now(), Caller: g.names.Of(caller), Server: name, Method: "tools/call", Name: head.Name}
	a := policy.Access{Caller: caller, Server: name, Kind: policy.Tool, Name: head.Name}
	if head.Delegation != nil {
		d, err := g.verifyDelegationJSON(head.Delegation, caller, name, head.Name)
		if err == nil && t.Peer != "" { // a program or an endpoint is where the call ends
			next, err = g.extendDelegationJSON(d, t.Peer, t.Server, head.Name)
		}
		if err != nil {
			return nil, nil, hop, g.refuseRelayed(rec, &refusal{reason: "delegation", code: CodeNotPermitted,
				msg: fmt.Sprintf("not permitted: %s/%s on %s: %v", name, head.Name, identity.Short(g.cfg.Self), err)})
		}
		if d.principal != caller {
			a.For, rec.For = d.principal, d.principalText
		}
	}
	if !g.policy.Load().Allows(a) {
		return nil, nil, hop, g.refuseRelayed(rec, &refusal{reason: "policy", code: CodeNotPermitted, msg: g.notPermitted(a)})
	}
	release, r := g.admitCall(caller, a.For)
	if r != nil {
		return nil, nil, hop, g.refuseRelayed(rec, r)
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
	return next, end, hop, nil
}

// taskID returns the ID of the task context raw (a JSON string, which
// starts with it), "" if raw is not a string.
func taskID(raw json.RawMessage) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	if id, _, ok := bytes.Cut(raw[1:], []byte(" ")); ok && bytes.IndexAny(id, `"\`) < 0 {
		return string(id)
	}
	var task string
	if _, err := segjson.Parse(raw, &task, 0); err != nil {
		return ""
	}
	id, _, _ := strings.Cut(task, " ")
	return id
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
