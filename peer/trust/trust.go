package trust

import (
	"context"
	"errors"
	"fmt"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/internal/oneline"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

var trustLog = logging.Logger("mcpmesh/trust")

// CodeNotPermitted is the JSON-RPC error code of a request the serving
// node's policy or a delegation refuses.
const CodeNotPermitted int64 = -32030

// CodeLimited is the JSON-RPC error code of a request refused because the
// caller is over its limits (rate, concurrent calls) or banned for a while.
const CodeLimited int64 = -32031

// refusal is a request the trust layer turned away.
type refusal struct {
	reason string // audit and metrics key: "policy", "delegation", "rate", ...
	code   int64
	msg    string
}

func (r *refusal) Error() string { return r.msg }

// Handler handles a served request as the trust layer sees it: besides the
// result, it returns the ID of the task that served the request ("" for
// none), for the audit record.
type Handler func(ctx context.Context, method string, req sdkmcp.Request) (res sdkmcp.Result, task string, err error)

// Serve is the outermost layer of a server the node shares under name, in
// front of next: it verifies a call's delegation, applies the policy
// (refusing what it does not grant, leaving out of lists what it does not
// show), applies the caller's limits, and audits every call. The handler
// of a call it admits finds the verified delegation on its context (for
// DelegationFor and OnBehalfOf); the session's record (WithSession) is
// told what each list showed, for list_changed.
func (g *Guard) Serve(name string, next Handler) sdkmcp.MethodHandler {
	pass := func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
		res, _, err := next(ctx, method, req)
		return res, err
	}
	return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
		caller, _ := identity.Remote(ctx)
		pol := g.policy.Load()
		switch method {
		case "tools/call", "prompts/get", "resources/read", "resources/subscribe", "resources/unsubscribe", "completion/complete":
		case "tools/list", "prompts/list", "resources/list", "resources/templates/list":
			res, err := pass(ctx, method, req)
			if s := sessionServed(ctx); s != nil && err == nil {
				s.remember(method, listCursor(req.GetParams()) == "", res)
			}
			if err == nil && !pol.IsOpen() {
				filterList(pol, policy.Access{Caller: caller, Server: name}, res)
			}
			return res, err
		default:
			return pass(ctx, method, req)
		}
		kind, what, meta := accessOf(method, req)
		start := time.Now()
		rec := audit.Record{Time: start, Caller: g.names.Of(caller), Server: name, Method: method, Name: what}
		a := policy.Access{Caller: caller, Server: name, Kind: kind, Name: what}
		var d *delegated
		// Delegations scope tool calls; other requests are the caller's own.
		if v, ok := meta[delegation.MetaKey]; ok && kind == policy.Tool && caller != g.cfg.Self {
			var err error
			d, err = g.verifyDelegation(v, caller, name, what)
			if err != nil {
				return nil, g.refuse(rec, &refusal{reason: "delegation", code: CodeNotPermitted,
					msg: fmt.Sprintf("not permitted: %s/%s on %s: %v", name, what, identity.Short(g.cfg.Self), err)})
			}
			if d.principal != caller { // else the chain says no more than the connection
				a.For = d.principal
				rec.For, rec.Chain = d.principalText, d.text
			}
			ctx = context.WithValue(ctx, delegationKey{}, d)
		}
		if kind != 0 && !pol.Allows(a) {
			return nil, g.refuse(rec, &refusal{reason: "policy", code: CodeNotPermitted, msg: g.notPermitted(a)})
		}
		release, r := g.admitCall(caller, a.For)
		if r != nil {
			return nil, g.refuse(rec, r)
		}
		defer release()
		if method != "tools/call" {
			return pass(ctx, method, req)
		}
		res, task, err := next(ctx, method, req)
		if ctr, ok := res.(*sdkmcp.CallToolResult); ok && err == nil && ctr.NeedsInput() {
			return res, err // asked its caller something: it is called again with the answer
		}
		rec.Task = task
		rec.Duration = time.Since(start)
		rec.Outcome, rec.Reason = auditOutcome(ctx, res, err)
		g.cfg.Audit.Add(rec)
		if m := g.cfg.Metrics; m != nil {
			m.Call(name, what, rec.Caller, string(rec.Outcome), rec.Duration)
		}
		return res, err
	}
}

// notPermitted says why the policy refuses a.
func (g *Guard) notPermitted(a policy.Access) string {
	who := identity.Short(a.Caller)
	if a.For != "" {
		who += " acting for " + identity.Short(a.For)
	}
	return fmt.Sprintf("not permitted: %s may not use %s/%s on %s", who, a.Server, a.Name, identity.Short(g.cfg.Self))
}

// refuse audits and counts a refusal, and returns it as the JSON-RPC error
// the caller gets.
func (g *Guard) refuse(rec audit.Record, r *refusal) error {
	rec.Outcome, rec.Reason = audit.Refused, r.reason
	g.cfg.Audit.Add(rec)
	if m := g.cfg.Metrics; m != nil {
		m.Refused(r.reason)
	}
	trustLog.Debugw("refused", "caller", rec.Caller, "for", rec.For, "server", rec.Server, "name", rec.Name, "reason", r.reason, "error", r.msg)
	return &jsonrpc.Error{Code: r.code, Message: r.msg}
}

// accessOf tells what a request asks for, and its _meta.
func accessOf(method string, req sdkmcp.Request) (policy.Kind, string, sdkmcp.Meta) {
	switch p := req.GetParams().(type) {
	case *sdkmcp.CallToolParamsRaw:
		return policy.Tool, p.Name, p.Meta
	case *sdkmcp.GetPromptParams:
		return policy.Prompt, p.Name, p.Meta
	case *sdkmcp.ReadResourceParams:
		return policy.Resource, p.URI, p.Meta
	case *sdkmcp.SubscribeParams:
		return policy.Resource, p.URI, p.Meta
	case *sdkmcp.UnsubscribeParams:
		return policy.Resource, p.URI, p.Meta
	case *sdkmcp.CompleteParams:
		if p.Ref == nil {
			return 0, "", p.Meta
		}
		switch p.Ref.Type {
		case "ref/prompt":
			return policy.Prompt, p.Ref.Name, p.Meta
		case "ref/resource":
			return policy.Resource, p.Ref.URI, p.Meta
		}
		return 0, "", p.Meta
	}
	return 0, method, nil
}

// filterList leaves out of a list result what the policy does not let the
// caller use, for itself or for anyone.
func filterList(pol *policy.Policy, a policy.Access, res sdkmcp.Result) {
	allowed := func(k policy.Kind, name string) bool {
		a.Kind, a.Name = k, name
		return pol.Shows(a)
	}
	switch r := res.(type) {
	case *sdkmcp.ListToolsResult:
		r.Tools = keep(r.Tools, func(t *sdkmcp.Tool) bool { return allowed(policy.Tool, t.Name) })
	case *sdkmcp.ListPromptsResult:
		r.Prompts = keep(r.Prompts, func(p *sdkmcp.Prompt) bool { return allowed(policy.Prompt, p.Name) })
	case *sdkmcp.ListResourcesResult:
		r.Resources = keep(r.Resources, func(x *sdkmcp.Resource) bool { return allowed(policy.Resource, x.URI) })
	case *sdkmcp.ListResourceTemplatesResult:
		r.ResourceTemplates = keep(r.ResourceTemplates, func(x *sdkmcp.ResourceTemplate) bool { return allowed(policy.Resource, x.URITemplate) })
	}
}

// keep filters s in place.
func keep[T any](s []T, ok func(T) bool) []T {
	out := s[:0]
	for _, v := range s {
		if ok(v) {
			out = append(out, v)
		}
	}
	clear(s[len(out):])
	return out
}

func auditOutcome(ctx context.Context, res sdkmcp.Result, err error) (audit.Outcome, string) {
	ctr, _ := res.(*sdkmcp.CallToolResult)
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return audit.Cancelled, ""
	case err != nil:
		return audit.Error, firstLine(err.Error())
	case ctr != nil && ctr.IsError:
		if e := ctr.GetError(); e != nil {
			return audit.Error, firstLine(e.Error())
		}
		return audit.Error, "tool error"
	}
	return audit.OK, ""
}

// firstLine is what an audit record keeps of an error.
func firstLine(s string) string { return oneline.Cut(s, 200) }

// Advertised reports whether the policy lets the node's card show a
// capability.
func (g *Guard) Advertised(server string, kind policy.Kind, name string) bool {
	return g.policy.Load().Advertised(server, kind, name)
}
