package trust

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	logging "github.com/ipfs/go-log/v2"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/metrics"
	"github.com/mcpmesh/mcpmesh/peer"
)

var trustLog = logging.Logger("mcpmesh/trust")

// CodeNotPermitted is the JSON-RPC error code of a request the serving
// node's policy or a delegation refuses.
const CodeNotPermitted int64 = -32030

// CodeLimited is the JSON-RPC error code of a request refused because the
// caller is over its limits (rate, concurrent calls) or banned for a while.
const CodeLimited int64 = -32031

// DefaultDelegationTTL is how long the delegation a node gives with a call it
// starts stays valid, unless WithDelegation says otherwise.
const DefaultDelegationTTL = time.Hour

// AuditFile is the name of the audit log in a node's home.
const AuditFile = "audit.log"

// trustConfig is who may see and call what the node shares, and what the
// node delegates with the calls it makes.
type trustConfig struct {
	open       bool
	policy     *peer.Policy
	scope      peer.Scope // delegated with the calls the node starts
	ttl        time.Duration
	noDelegate bool
	auditPath  string // "" with no home: in memory only
	auditSet   bool
	metrics    *metrics.Metrics
}

// WithOpen lets every peer that can connect see and call everything the node
// shares, as if its policy granted everything to everyone. For demos and
// labs; a node started this way says so in its log.
func WithOpen() Option {
	return func(c *config) error {
		c.trust.open, c.trust.policy = true, nil
		return nil
	}
}

// WithPolicy sets who may see and call what the node shares. Without it
// (and without WithOpen) a node is closed: peers see and may call nothing.
// SetPolicy replaces it while the node runs.
func WithPolicy(p *peer.Policy) Option {
	return func(c *config) error {
		c.trust.policy, c.trust.open = p, false
		return nil
	}
}

// WithDelegation sets what the node delegates to the peer it calls with each
// call it starts (not one it makes while serving a call: that one passes on,
// narrowed, the delegation it was given): the tools the peer may use on the
// node's behalf, on which peers, for how long. The default is everything,
// everywhere, for DefaultDelegationTTL: the serving peers' policies decide.
// A zero ttl keeps the default; WithoutDelegation sends none.
func WithDelegation(scope peer.Scope, ttl time.Duration) Option {
	return func(c *config) error {
		if len(scope.Tools) == 0 || len(scope.Peers) == 0 {
			return errors.New("delegation scope: name at least one tool pattern and one peer (or \"*\")")
		}
		c.trust.scope = scope
		if ttl > 0 {
			c.trust.ttl = ttl
		}
		return nil
	}
}

// WithoutDelegation makes the node call as itself only: peers it calls see
// no delegation, and cannot act for it further down.
func WithoutDelegation() Option {
	return func(c *config) error {
		c.trust.noDelegate = true
		return nil
	}
}

// WithAuditFile sets where the node writes its audit log (one JSON record
// per served call). The default is AuditFile in the node's home, or memory
// only without a home; "" keeps it in memory only.
func WithAuditFile(path string) Option {
	return func(c *config) error {
		c.trust.auditPath, c.trust.auditSet = path, true
		return nil
	}
}

// WithMetrics makes the node count its calls, refusals, tasks and lookups in
// m, and libp2p its own. Serve m.Handler() where Prometheus can scrape it.
func WithMetrics(m *metrics.Metrics) Option {
	return func(c *config) error {
		c.trust.metrics = m
		return nil
	}
}

// initTrust sets the policy and opens the audit log; called by New once the
// host exists.
func (n *Node) initTrust() error {
	c := &n.cfg.trust
	p := c.policy
	if c.open {
		p = peer.OpenPolicy()
	}
	if p == nil {
		p = peer.ClosedPolicy()
	}
	n.policy.Store(p.WithSelf(n.host.ID()))
	if c.open {
		trustLog.Warnf("OPEN node %s: every peer that connects may see and call everything it shares (--open); give it a policy for anything but a lab", n.host.ID())
	}
	if c.ttl <= 0 {
		c.ttl = DefaultDelegationTTL
	}
	if len(c.scope.Tools) == 0 {
		c.scope = peer.FullScope()
	}
	path := c.auditPath
	if !c.auditSet && n.cfg.home != "" {
		path = filepath.Join(n.cfg.home, AuditFile)
	}
	a, err := audit.Open(path, audit.Options{})
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	n.audit = a
	if m := c.metrics; m != nil {
		m.TaskStates(n.taskStates)
	}
	return nil
}

// SetPolicy replaces the node's policy at once: calls are checked against it
// from now on, and lists made from now on show what it grants. Connected
// peers whose lists it changes are sent the MCP list_changed notification
// of each kind that changed for them. A nil policy closes the node. The
// node's card is republished.
func (n *Node) SetPolicy(p *peer.Policy) {
	if p == nil {
		p = peer.ClosedPolicy()
	}
	old := n.policy.Swap(p.WithSelf(n.host.ID()))
	n.notifyListChanges(old, n.policy.Load())
	n.changed()
}

// Policy returns the policy the node applies.
func (n *Node) Policy() *peer.Policy { return n.policy.Load() }

// Audit returns the node's audit log of served calls.
func (n *Node) Audit() *audit.Log { return n.audit }

// Metrics returns what WithMetrics gave, or nil.
func (n *Node) Metrics() *metrics.Metrics { return n.cfg.trust.metrics }

func (n *Node) taskStates() map[string]int {
	m := map[string]int{}
	for _, t := range n.taskReg.List() {
		m[string(t.State)]++
	}
	return m
}

// --- the serving side ---

// auditNote is filled by the inner layers of a served call for its audit
// record.
type auditNote struct{ task string }

type auditNoteKey struct{}

func noteTask(ctx context.Context, id string) {
	if a, ok := ctx.Value(auditNoteKey{}).(*auditNote); ok {
		a.task = id
	}
}

// refusal is a request the trust layer turned away.
type refusal struct {
	reason string // audit and metrics key: "policy", "delegation", "rate", ...
	code   int64
	msg    string
}

func (r *refusal) Error() string { return r.msg }

// trustMiddleware is the outermost layer of every server the node shares: it
// verifies a call's delegation, applies the policy (refusing what it does
// not grant, leaving out of lists what it does not show), applies the
// caller's limits, and audits every call.
func (n *Node) trustMiddleware(name string) sdkmcp.Middleware {
	return func(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
		return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
			caller, _ := peer.Remote(ctx)
			pol := n.policy.Load()
			switch method {
			case "tools/call", "prompts/get", "resources/read", "resources/subscribe", "resources/unsubscribe", "completion/complete":
			case "tools/list", "prompts/list", "resources/list", "resources/templates/list":
				res, err := next(ctx, method, req)
				if s := sessionServed(ctx); s != nil && err == nil {
					s.remember(method, listCursor(req.GetParams()) == "", res)
				}
				if err == nil && !pol.IsOpen() {
					filterList(pol, peer.Access{Caller: caller, Server: name}, res)
				}
				return res, err
			default:
				return next(ctx, method, req)
			}
			kind, what, meta := accessOf(method, req)
			start := time.Now()
			rec := audit.Record{Time: start, Caller: peerString(caller), Server: name, Method: method, Name: what}
			a := peer.Access{Caller: caller, Server: name, Kind: kind, Name: what}
			var d *delegated
			// Delegations scope tool calls; other requests are the caller's own.
			if v, ok := meta[peer.DelegationMetaKey]; ok && kind == peer.Tool && caller != n.host.ID() {
				var err error
				d, err = n.verifyDelegation(v, caller, name, what)
				if err != nil {
					return nil, n.refuse(rec, &refusal{reason: "delegation", code: CodeNotPermitted,
						msg: fmt.Sprintf("not permitted: %s/%s on %s: %v", name, what, shortPeer(n.host.ID()), err)})
				}
				if d.principal != caller { // else the chain says no more than the connection
					a.For = d.principal
					rec.For, rec.Chain = d.principalText, d.text
				}
				ctx = context.WithValue(ctx, delegationKey{}, d)
			}
			if kind != 0 && !pol.Allows(a) {
				return nil, n.refuse(rec, &refusal{reason: "policy", code: CodeNotPermitted, msg: n.notPermitted(a)})
			}
			release, r := n.admitCall(caller, a.For)
			if r != nil {
				return nil, n.refuse(rec, r)
			}
			defer release()
			if method != "tools/call" {
				return next(ctx, method, req)
			}
			note := &auditNote{}
			ctx = context.WithValue(ctx, auditNoteKey{}, note)
			res, err := next(ctx, method, req)
			if ctr, ok := res.(*sdkmcp.CallToolResult); ok && err == nil && ctr.NeedsInput() {
				return res, err // asked its caller something: it is called again with the answer
			}
			rec.Task = note.task
			rec.Duration = time.Since(start)
			rec.Outcome, rec.Reason = auditOutcome(ctx, res, err)
			n.audit.Add(rec)
			if m := n.cfg.trust.metrics; m != nil {
				m.Call(name, what, rec.Caller, string(rec.Outcome), rec.Duration)
			}
			return res, err
		}
	}
}

// notPermitted says why the policy refuses a.
func (n *Node) notPermitted(a peer.Access) string {
	who := shortPeer(a.Caller)
	if a.For != "" {
		who += " acting for " + shortPeer(a.For)
	}
	return fmt.Sprintf("not permitted: %s may not use %s/%s on %s", who, a.Server, a.Name, shortPeer(n.host.ID()))
}

// refuse audits and counts a refusal, and returns it as the JSON-RPC error
// the caller gets.
func (n *Node) refuse(rec audit.Record, r *refusal) error {
	rec.Outcome, rec.Reason = audit.Refused, r.reason
	n.audit.Add(rec)
	if m := n.cfg.trust.metrics; m != nil {
		m.Refused(r.reason)
	}
	trustLog.Debugw("refused", "caller", rec.Caller, "for", rec.For, "server", rec.Server, "name", rec.Name, "reason", r.reason, "error", r.msg)
	return &jsonrpc.Error{Code: r.code, Message: r.msg}
}

// accessOf tells what a request asks for, and its _meta.
func accessOf(method string, req sdkmcp.Request) (peer.Kind, string, sdkmcp.Meta) {
	switch p := req.GetParams().(type) {
	case *sdkmcp.CallToolParamsRaw:
		return peer.Tool, p.Name, p.Meta
	case *sdkmcp.GetPromptParams:
		return peer.Prompt, p.Name, p.Meta
	case *sdkmcp.ReadResourceParams:
		return peer.Resource, p.URI, p.Meta
	case *sdkmcp.SubscribeParams:
		return peer.Resource, p.URI, p.Meta
	case *sdkmcp.UnsubscribeParams:
		return peer.Resource, p.URI, p.Meta
	case *sdkmcp.CompleteParams:
		if p.Ref == nil {
			return 0, "", p.Meta
		}
		switch p.Ref.Type {
		case "ref/prompt":
			return peer.Prompt, p.Ref.Name, p.Meta
		case "ref/resource":
			return peer.Resource, p.Ref.URI, p.Meta
		}
		return 0, "", p.Meta
	}
	return 0, method, nil
}

// filterList leaves out of a list result what the policy does not let the
// caller use, for itself or for anyone.
func filterList(pol *peer.Policy, a peer.Access, res sdkmcp.Result) {
	allowed := func(k peer.Kind, name string) bool {
		a.Kind, a.Name = k, name
		return pol.Shows(a)
	}
	switch r := res.(type) {
	case *sdkmcp.ListToolsResult:
		r.Tools = keep(r.Tools, func(t *sdkmcp.Tool) bool { return allowed(peer.Tool, t.Name) })
	case *sdkmcp.ListPromptsResult:
		r.Prompts = keep(r.Prompts, func(p *sdkmcp.Prompt) bool { return allowed(peer.Prompt, p.Name) })
	case *sdkmcp.ListResourcesResult:
		r.Resources = keep(r.Resources, func(x *sdkmcp.Resource) bool { return allowed(peer.Resource, x.URI) })
	case *sdkmcp.ListResourceTemplatesResult:
		r.ResourceTemplates = keep(r.ResourceTemplates, func(x *sdkmcp.ResourceTemplate) bool { return allowed(peer.Resource, x.URITemplate) })
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

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func shortPeer(p lpeer.ID) string {
	s := peerString(p)
	if len(s) > 12 {
		return "12D3…" + s[len(s)-6:]
	}
	return s
}

// --- cards ---

// advertised reports whether the policy lets the card show a capability.
func (n *Node) advertised(server string, kind peer.Kind, name string) bool {
	return n.policy.Load().Advertised(server, kind, name)
}
