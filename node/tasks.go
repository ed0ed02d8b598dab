package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/peer"
	"github.com/mcpmesh/mcpmesh/tasks"
)

var taskLog = logging.Logger("mcpmesh/tasks")

// taskConfig is the task layer's part of the node's configuration.
type taskConfig struct {
	off       bool
	retention tasks.Retention
	promote   time.Duration
}

// WithTaskTracking turns the task layer on (the default) or off. Off, the
// node neither records the calls it serves and makes nor passes a task
// context on: no tree, no loop, budget or deadline guards. For comparison
// and for nodes that must not keep any record of calls.
func WithTaskTracking(on bool) Option {
	return func(c *config) error {
		c.tasks.off = !on
		return nil
	}
}

// WithTaskRetention sets how long (default 10 minutes) and how many (default
// 1000) ended tasks the node keeps, with their results, for listing and
// polling.
func WithTaskRetention(ttl time.Duration, max int) Option {
	return func(c *config) error {
		if ttl < 0 || max < 0 {
			return fmt.Errorf("WithTaskRetention(%v, %d): want positive values", ttl, max)
		}
		c.tasks.retention = tasks.Retention{TTL: ttl, Max: max}
		return nil
	}
}

// WithTaskPromotion makes a tools/call from a client that declares the MCP
// Tasks extension (io.modelcontextprotocol/tasks) and that has not finished
// within d become a task: the call is answered with a task handle
// (resultType "task") and the client polls tasks/get. 0 (the default) means
// only calls that ask for it (StartTask) become tasks.
func WithTaskPromotion(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("WithTaskPromotion(%v): want a positive duration", d)
		}
		c.tasks.promote = d
		return nil
	}
}

// The custom methods of the task layer, served by every shared server.
const (
	methodTasksGet    = "tasks/get"
	methodTasksUpdate = "tasks/update"
	methodTasksCancel = "tasks/cancel"
	methodTasksTree   = "mcpmesh/tasks/tree"
)

// progressPrefix starts the progress tokens a node gives the calls its
// tasks make; the rest is the called task's ID.
const progressPrefix = "mcpmesh-task-"

// pollInterval is what the node suggests to clients polling its tasks.
const pollInterval = 250 * time.Millisecond

// initTasks creates the node's task registry and teaches its client the
// task methods. It runs in New, after the client is made.
func (n *Node) initTasks() {
	n.taskReg = tasks.NewRegistry(n.host.ID().String(), n.cfg.tasks.retention)
	sdkmcp.AddSendingCustomMethod[*TaskParams, *TaskResult](n.client, methodTasksGet)
	sdkmcp.AddSendingCustomMethod[*TaskParams, *EmptyResult](n.client, methodTasksUpdate)
	sdkmcp.AddSendingCustomMethod[*TaskParams, *EmptyResult](n.client, methodTasksCancel)
	sdkmcp.AddSendingCustomMethod[*TaskParams, *TreeResult](n.client, methodTasksTree)
}

// Tasks returns the tasks this node holds (running, and ended within the
// retention), oldest first, without results.
func (n *Node) Tasks() []tasks.Task { return n.taskReg.List() }

// Task returns one task of this node, with its result if it has ended.
func (n *Node) Task(id string) (tasks.Task, bool) {
	e, ok := n.taskReg.Lookup(id)
	if !ok {
		return tasks.Task{}, false
	}
	return e.Snapshot(true), true
}

// CancelTask cancels a task of this node, and through its calls every task
// below it on other nodes.
func (n *Node) CancelTask(id string) error { return n.taskReg.Cancel(id) }

// --- context helpers ---

type budgetKey struct{}
type progressKey struct{}

// served is a task the node serves, as the context of its handler carries
// it (under the tasks package's key: see tasks.WithAsker), or a call it
// makes outside any task whose progress is routed.
type served struct {
	entry *tasks.Entry
	meta  *tasks.Meta // the task's own context (its ID is entry's); nil for a call outside any task
	// where progress from below goes: the caller's session and token, or a
	// function (a root call's caller).
	session *sdkmcp.ServerSession
	token   any
	onProg  func(*sdkmcp.ProgressNotificationParams)

	progMu   sync.Mutex
	lastProg float64 // the last progress sent with token
	sentProg bool
}

// increasing makes p's progress greater than the last one sent with the
// task's token, as MCP asks: the handler's own progress and the progress
// its calls relay share the token, each counting on its own (and a handler
// run again on protocol 2026-07-28 counts from the start again). A value
// pushed past its total leaves the total unknown.
func (s *served) increasing(p *sdkmcp.ProgressNotificationParams) {
	s.progMu.Lock()
	defer s.progMu.Unlock()
	if s.sentProg && p.Progress <= s.lastProg {
		p.Progress = s.lastProg + 1e-3
		if p.Total != 0 && p.Total < p.Progress {
			p.Total = 0
		}
	}
	s.lastProg, s.sentProg = p.Progress, true
}

// sameToken compares progress tokens, which JSON makes strings or numbers
// (anything else never matches, rather than panicking on ==).
func sameToken(a, b any) bool {
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case int64:
		y, ok := b.(int64)
		return ok && x == y
	case int:
		y, ok := b.(int)
		return ok && x == y
	}
	return false
}

func servedFrom(ctx context.Context) *served {
	s, _ := tasks.AskerFrom(ctx).(*served)
	return s
}

// AskParent names the calling node's task, for tasks.AskMeta.
func (s *served) AskParent() string {
	if s.meta == nil {
		return ""
	}
	return s.meta.Parent
}

// peerStrings caches the text form of peer IDs, which the task layer needs
// on every call and which costs microseconds to make (base58).
var peerStrings struct {
	mu sync.RWMutex
	m  map[lpeer.ID]string
}

func peerString(p lpeer.ID) string {
	peerStrings.mu.RLock()
	s, ok := peerStrings.m[p]
	peerStrings.mu.RUnlock()
	if ok {
		return s
	}
	s = p.String()
	peerStrings.mu.Lock()
	if peerStrings.m == nil || len(peerStrings.m) >= 4096 {
		peerStrings.m = make(map[lpeer.ID]string) // bounded: start over
	}
	peerStrings.m[p] = s
	peerStrings.mu.Unlock()
	return s
}

// WithHopBudget returns a context whose calls through the node may make at
// most hops hops in all (this call included). It can only lower the budget
// a task has.
func WithHopBudget(ctx context.Context, hops int) context.Context {
	return context.WithValue(ctx, budgetKey{}, hops)
}

// WithProgress returns a context whose calls through the node (made
// outside any task) report progress notifications from any depth of their
// tree to f.
func WithProgress(ctx context.Context, f func(*sdkmcp.ProgressNotificationParams)) context.Context {
	return context.WithValue(ctx, progressKey{}, f)
}

// CurrentTask returns the ID of the task served under ctx, if any.
func CurrentTask(ctx context.Context) (string, bool) {
	if s := servedFrom(ctx); s != nil {
		return s.entry.ID(), true
	}
	return "", false
}

// --- the calling side ---

type callFunc func(ctx context.Context, p lpeer.ID, server, tool string, args any, meta sdkmcp.Meta) (*sdkmcp.CallToolResult, error)

// callTracked makes a call through call as a child of the task served under
// ctx, or as the root of a new tree: it passes the task context on, records
// the call among the task's children, routes progress, and names the hop in
// failures.
func (n *Node) callTracked(ctx context.Context, p lpeer.ID, server, tool string, args any, call callFunc) (*sdkmcp.CallToolResult, error) {
	deleg, err := n.delegationFor(ctx, p, server, tool)
	if err != nil {
		return nil, err
	}
	if n.cfg.tasks.off {
		var meta sdkmcp.Meta
		if deleg != nil {
			meta = sdkmcp.Meta{peer.DelegationMetaKey: deleg}
		}
		defer n.hold(p)() // see reach.go: a silent peer fails the call in seconds
		return call(ctx, p, server, tool, args, meta)
	}
	self := n.taskReg.Self()
	budget, _ := ctx.Value(budgetKey{}).(int)
	var left time.Duration
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d)
		if left <= 0 {
			return nil, fmt.Errorf("call %s/%s on %s: %w", server, tool, p, context.DeadlineExceeded)
		}
	}
	parent := servedFrom(ctx) // the calling task, if any
	target := peerString(p)
	var root, caller *tasks.Entry
	var m *tasks.Meta
	var route *served // where progress from below goes, if anywhere
	if parent != nil {
		caller = parent.entry
		m = parent.meta.Child(self, budget, left)
		if m.Budget < 1 {
			t := parent.entry.Snapshot(false)
			return nil, &tasks.HopError{Hop: tasks.Hop{Task: t.ID, Peer: self, Server: t.Server, Tool: t.Tool},
				Err: fmt.Errorf("%w: path %s has made its %d hops; not calling %s/%s on %s", tasks.ErrBudget, tasks.PathString(m.Path), len(m.Path)-1, server, tool, p)}
		}
		if parent.session != nil && parent.token != nil {
			route = parent
		}
	} else {
		id := tasks.NewID()
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		b := budget
		if b <= 0 || b > tasks.DefaultBudget {
			b = tasks.DefaultBudget
		}
		root, err = n.taskReg.Begin(tasks.Task{ID: id, Root: id, Role: tasks.Call, Server: server, Tool: tool, Target: target, Budget: b}, cancel)
		if err != nil {
			return nil, err
		}
		caller = root
		m = tasks.Root(id, self, budget, left) // the root gives its callee all its time
		if onProg, _ := ctx.Value(progressKey{}).(func(*sdkmcp.ProgressNotificationParams)); onProg != nil {
			route = &served{entry: root, onProg: onProg}
		}
	}
	hop := tasks.Hop{Task: m.ID, Peer: target, Server: server, Tool: tool}
	caller.AddChild(hop)
	meta := make(sdkmcp.Meta, 4)
	m.Encode(meta)
	if deleg != nil {
		meta[peer.DelegationMetaKey] = deleg
	}
	var progress *progressRoute
	if route != nil {
		tok := progressPrefix + m.ID
		meta["progressToken"] = tok
		progress = &progressRoute{to: route}
		n.progress.Store(tok, progress)
		defer time.AfterFunc(progressGrace, func() { n.progress.Delete(tok) })
	}
	ctx = withCallHop(ctx, caller)
	release := n.hold(p) // see reach.go: a silent peer fails the call in seconds
	res, err := call(ctx, p, server, tool, args, meta)
	release()
	if progress != nil {
		progress.drain() // the call's progress goes up before its result
	}
	if err != nil {
		if _, ok := tasks.FailedAt(err); !ok {
			err = &tasks.HopError{Hop: hop, Err: err}
		}
	}
	if root != nil {
		state, failedAt := outcome(ctx, res, err)
		if failedAt == nil && state == tasks.Failed {
			h := hop // a copy, so that hop stays off the heap when all goes well
			failedAt = &h
		}
		var result any
		if res != nil {
			result = res
		}
		root.Finish(state, result, err, failedAt)
	}
	return res, err
}

// progressGrace is how long a progress route outlives its call: a peer may
// send progress after its result (it should not), and the route must still
// be found by then to be dropped quietly.
const progressGrace = 2 * time.Second

type callHopKey struct{}

// withCallHop marks ctx as that of a call made by the task entry, so that
// the client's input handlers (which get the call's context on protocol
// 2026-07-28) know whose caller to ask.
func withCallHop(ctx context.Context, e *tasks.Entry) context.Context {
	return context.WithValue(ctx, callHopKey{}, e)
}

// outcome tells how a call or a handler ended.
func outcome(ctx context.Context, res *sdkmcp.CallToolResult, err error) (tasks.State, *tasks.Hop) {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return tasks.Cancelled, nil
	case err != nil:
		h, _ := tasks.FailedAt(err)
		return tasks.Failed, h
	case res == nil:
		return tasks.Completed, nil
	case res.NeedsInput():
		return tasks.InputRequired, nil
	case res.IsError:
		if rm, ok := tasks.DecodeResult(res.Meta); ok && rm.FailedAt != nil {
			return tasks.Failed, rm.FailedAt
		}
		if h, ok := tasks.FailedAt(res.GetError()); ok {
			return tasks.Failed, h
		}
		return tasks.Failed, nil
	default:
		return tasks.Completed, nil
	}
}

// --- the serving side ---

// trackTasks adds the task layer to a server the node shares, around its
// input middleware: the middleware that makes each tools/call a task, and
// the task methods.
func (n *Node) trackTasks(name string, server *sdkmcp.Server, inputs sdkmcp.Middleware) {
	if n.cfg.tasks.off {
		server.AddReceivingMiddleware(inputs)
		return
	}
	// Outermost first. The handler's own context (with the input state on
	// it) is what a question from below is asked with.
	server.AddReceivingMiddleware(n.taskMiddleware(name), inputs, keepHandlerContext)
	server.AddSendingMiddleware(n.progressRecorder)
	sdkmcp.AddReceivingCustomMethod(server, methodTasksGet, n.handleTasksGet)
	sdkmcp.AddReceivingCustomMethod(server, methodTasksUpdate, n.handleTasksUpdate)
	sdkmcp.AddReceivingCustomMethod(server, methodTasksCancel, n.handleTasksCancel)
	sdkmcp.AddReceivingCustomMethod(server, methodTasksTree, n.handleTasksTree)
}

func rpcError(code int64, format string, args ...any) error {
	return &jsonrpc.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// taskMiddleware makes each tools/call served by server name a task: it
// applies the guards to the call's task context, records the task, runs the
// handler with the task (and its deadline) on its context, and records how
// it ended.
func (n *Node) taskMiddleware(name string) sdkmcp.Middleware {
	return func(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
		return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
			p, ok := req.GetParams().(*sdkmcp.CallToolParamsRaw)
			if method != "tools/call" || !ok {
				return next(ctx, method, req)
			}
			self := n.taskReg.Self()
			callerID, _ := peer.Remote(ctx)
			caller := peerString(callerID)
			m, err := tasks.Decode(p.Meta)
			if err != nil {
				return nil, rpcError(jsonrpc.CodeInvalidParams, "%v", err)
			}
			if m == nil {
				// A call from outside the mesh's task layer (a plain MCP
				// client): the root of a new tree.
				id := tasks.NewID()
				m = &tasks.Meta{ID: id, Root: id, Path: []string{caller}, Budget: tasks.DefaultBudget}
			}
			if err := tasks.Check(m, self, caller); err != nil {
				taskLog.Debugw("refused call", "tool", p.Name, "caller", caller, "error", err)
				return nil, rpcError(jsonrpc.CodeInvalidRequest, "%s/%s on %s: %v", name, p.Name, self, err)
			}
			ss, _ := req.GetSession().(*sdkmcp.ServerSession)
			detach := wantsTask(p.Meta) && (m.Detach || n.cfg.tasks.promote > 0)
			parentCtx := ctx
			if detach {
				// The work outlives the request: it keeps the request's
				// values but not its cancellation, and ends with the node.
				parentCtx = context.WithoutCancel(ctx)
			}
			var work context.Context
			var cancel context.CancelFunc
			var deadline time.Time
			if t := m.Timeout(); t > 0 {
				deadline = time.Now().Add(t)
				work, cancel = context.WithDeadline(parentCtx, deadline)
			} else {
				work, cancel = context.WithCancel(parentCtx)
			}
			t := tasks.Task{
				ID: m.ID, Root: m.Root, Role: tasks.Served, Caller: caller, Parent: m.Parent, Path: m.Path,
				Server: name, Tool: p.Name, Budget: m.Budget, Deadline: deadline, Detached: detach,
			}
			e, resumed := n.taskReg.Resume(m.ID, caller, cancel)
			if !resumed {
				e, err = n.taskReg.Begin(t, cancel)
				if err != nil {
					cancel()
					return nil, rpcError(jsonrpc.CodeInvalidRequest, "%s/%s on %s: %v", name, p.Name, self, err)
				}
			}
			noteTask(ctx, e.ID())
			s := &served{entry: e, meta: m, session: ss, token: p.GetProgressToken()}
			work = tasks.WithAsker(work, s) // for servedFrom and tasks.AskMeta alike
			e.SetContext(work)
			if detach {
				return n.runDetached(ctx, work, cancel, e, m.Detach, next, method, req)
			}
			release := n.hold(callerID) // see reach.go: a silent caller cancels the task in seconds
			res, err := next(work, method, req)
			release()
			n.finishServed(work, e, name, p.Name, res, err)
			cancel()
			return res, err
		}
	}
}

// keepHandlerContext records on a served task the context its handler runs
// with, input state included, for questions its calls relay up.
func keepHandlerContext(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
	return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
		if s := servedFrom(ctx); s != nil && method == "tools/call" {
			s.entry.SetContext(ctx)
		}
		return next(ctx, method, req)
	}
}

// finishServed records how a served task ended, and marks its result with
// the task (and the hop where a failure started).
func (n *Node) finishServed(ctx context.Context, e *tasks.Entry, server, tool string, res sdkmcp.Result, err error) {
	ctr, _ := res.(*sdkmcp.CallToolResult)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && err == nil && ctr != nil && ctr.IsError {
		err = fmt.Errorf("%s/%s on %s: deadline exceeded: %w", server, tool, n.taskReg.Self(), context.DeadlineExceeded)
	}
	state, failedAt := outcome(ctx, ctr, err)
	if state == tasks.InputRequired {
		e.Park() // the caller answers and calls again, with the same task ID
		return
	}
	if state == tasks.Failed && failedAt == nil {
		failedAt = &tasks.Hop{Task: e.ID(), Peer: n.taskReg.Self(), Server: server, Tool: tool}
	}
	var result any
	if ctr != nil {
		result = ctr
		if state != tasks.Completed {
			// Only a failure needs telling where it started: a result that
			// went well stays as small as without tasks.
			meta := ctr.Meta
			if meta == nil {
				meta = sdkmcp.Meta{}
			}
			meta[tasks.MetaKey] = &tasks.ResultMeta{Task: e.ID(), State: state, FailedAt: failedAt}
			ctr.Meta = meta
		}
	}
	e.Finish(state, result, err, failedAt)
}

// wantsTask reports whether a request's client declares the MCP Tasks
// extension in its per-request capabilities.
func wantsTask(meta sdkmcp.Meta) bool {
	caps, _ := meta[sdkmcp.MetaKeyClientCapabilities].(map[string]any)
	ext, _ := caps["extensions"].(map[string]any)
	_, ok := ext[tasks.ExtensionID]
	return ok
}

// progressRecorder is sending middleware that records the progress a
// handler reports to its mesh caller on the handler's task.
func (n *Node) progressRecorder(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
	return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
		if method == "notifications/progress" {
			if p, ok := req.GetParams().(*sdkmcp.ProgressNotificationParams); ok {
				if s := servedFrom(ctx); s != nil && s.session != nil && sameToken(p.ProgressToken, s.token) {
					s.increasing(p)
				}
				if tok, ok := p.ProgressToken.(string); ok && strings.HasPrefix(tok, progressPrefix) {
					if e, ok := n.taskReg.Lookup(strings.TrimPrefix(tok, progressPrefix)); ok {
						e.SetProgress(p.Progress, p.Total, p.Message)
					}
				}
			}
		}
		return next(ctx, method, req)
	}
}

// relayProgress is the client's progress handler: progress from a call one
// of this node's tasks made goes to that task's own caller, with the
// caller's token, and is recorded on the task.
func (n *Node) relayProgress(ctx context.Context, r *sdkmcp.ProgressNotificationClientRequest) {
	tok, _ := r.Params.ProgressToken.(string)
	v, ok := n.progress.Load(tok)
	if !ok {
		return
	}
	route := v.(*progressRoute)
	defer route.relayed()
	s := route.to
	s.entry.SetProgress(r.Params.Progress, r.Params.Total, r.Params.Message)
	p := *r.Params
	switch {
	case s.onProg != nil:
		s.increasing(&p)
		s.onProg(&p)
	case s.session != nil && s.token != nil:
		p.ProgressToken = s.token
		// With the task on ctx, so that the sending side keeps the token's
		// progress increasing.
		if err := s.session.NotifyProgress(tasks.WithAsker(ctx, s), &p); err != nil {
			taskLog.Debugw("relay progress", "task", s.entry.ID(), "error", err)
		}
	}
}

// relayElicitationComplete passes the completion of a URL-mode question up
// to whoever the node passed the question on to, or to its own user.
func (n *Node) relayElicitationComplete(ctx context.Context, r *sdkmcp.ElicitationCompleteNotificationRequest) {
	if ss, ok := n.urlAsks.take(r.Params.ElicitationID); ok {
		if err := ss.NotifyElicitationComplete(ctx, r.Params); err != nil {
			taskLog.Debugw("relay elicitation complete", "id", r.Params.ElicitationID, "error", err)
		}
		return
	}
	if h := n.cfg.elicitDone; h != nil {
		h(ctx, r)
	}
}

// urlQuestions remembers where the node passed each URL-mode question, by
// elicitation ID, until it completes or an hour has passed. Bounded.
type urlQuestions struct {
	mu sync.Mutex
	m  map[string]urlQuestion
}

type urlQuestion struct {
	to    *sdkmcp.ServerSession
	until time.Time
}

const maxURLQuestions = 4096

func (q *urlQuestions) remember(id string, ss *sdkmcp.ServerSession) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	if q.m == nil {
		q.m = map[string]urlQuestion{}
	}
	if len(q.m) >= maxURLQuestions {
		for k, v := range q.m {
			if now.After(v.until) {
				delete(q.m, k)
			}
		}
		if len(q.m) >= maxURLQuestions {
			return // too many open questions: their completions go unrelayed
		}
	}
	q.m[id] = urlQuestion{to: ss, until: now.Add(time.Hour)}
}

func (q *urlQuestions) take(id string) (*sdkmcp.ServerSession, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	v, ok := q.m[id]
	delete(q.m, id)
	if !ok || time.Now().After(v.until) {
		return nil, false
	}
	return v.to, true
}

// --- questions from below ---

// taskClientOptions routes the questions (elicitation, sampling) and
// progress that peers serving this node's calls send: to the caller of the
// task that made the call, or to the node's own handlers for calls made
// outside any task.
func (n *Node) taskClientOptions(opts *sdkmcp.ClientOptions) {
	if n.cfg.tasks.off {
		return
	}
	opts.ProgressNotificationHandler = n.relayProgress
	opts.ElicitationCompleteHandler = n.relayElicitationComplete
	opts.ElicitationHandler = func(ctx context.Context, r *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
		if tctx, ok := n.askThrough(ctx, r.Params.Meta); ok {
			if id := r.Params.ElicitationID; r.Params.Mode == "url" && id != "" {
				if s := servedFrom(tctx); s != nil && s.session != nil {
					n.urlAsks.remember(id, s.session)
				}
			}
			return mcp.Elicit(tctx, r.Params)
		}
		if h := n.cfg.elicit; h != nil {
			return h(ctx, r)
		}
		return nil, fmt.Errorf("node %s cannot answer elicitation requests: it has no user to ask (no elicitation handler)", n.host.ID())
	}
	// The with-tools form carries every sampling request, tools and
	// multi-block content included, so that nothing is lost on the way up.
	opts.CreateMessageHandler = nil
	opts.CreateMessageWithToolsHandler = func(ctx context.Context, r *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error) {
		if tctx, ok := n.askThrough(ctx, r.Params.Meta); ok {
			return mcp.SampleWithTools(tctx, r.Params)
		}
		if h := n.cfg.sampleTools; h != nil {
			return h(ctx, r)
		}
		if h := n.cfg.sample; h != nil {
			return sampleWithout(ctx, h, r)
		}
		return nil, fmt.Errorf("node %s cannot answer sampling requests: it has no model to ask (no sampling handler)", n.host.ID())
	}
}

// sampleWithout answers a sampling request with a handler that knows no
// tools: the request goes without them, each message with its one content
// block.
func sampleWithout(ctx context.Context, h SamplingHandler, r *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error) {
	p := r.Params
	base := &sdkmcp.CreateMessageParams{
		Meta: p.Meta, IncludeContext: p.IncludeContext, MaxTokens: p.MaxTokens, Metadata: p.Metadata,
		ModelPreferences: p.ModelPreferences, StopSequences: p.StopSequences, SystemPrompt: p.SystemPrompt, Temperature: p.Temperature,
	}
	for _, m := range p.Messages {
		if len(m.Content) != 1 {
			return nil, fmt.Errorf("sampling: a message has %d content blocks; this node's sampling handler takes one (use WithSamplingWithToolsHandler)", len(m.Content))
		}
		base.Messages = append(base.Messages, &sdkmcp.SamplingMessage{Role: m.Role, Content: m.Content[0]})
	}
	res, err := h(ctx, &sdkmcp.CreateMessageRequest{Session: r.Session, Params: base})
	if err != nil {
		return nil, err
	}
	out := &sdkmcp.CreateMessageWithToolsResult{Meta: res.Meta, Model: res.Model, Role: res.Role, StopReason: res.StopReason}
	if res.Content != nil {
		out.Content = []sdkmcp.Content{res.Content}
	}
	return out, nil
}

// askThrough finds the served task whose caller should answer a question
// that a peer serving one of its calls asked, and returns the context to
// ask it with. On protocol 2026-07-28 the question comes on the call's own
// context; before, it comes on the session's, naming the task in its _meta
// (tasks.AskKey), and is accepted only over a session one of that task's
// calls used.
func (n *Node) askThrough(ctx context.Context, meta sdkmcp.Meta) (context.Context, bool) {
	if e, ok := ctx.Value(callHopKey{}).(*tasks.Entry); ok {
		if s := servedFrom(ctx); s != nil && s.entry == e && s.session != nil {
			return ctx, true
		}
		return nil, false // a call made outside any task: the node's own user answers
	}
	id := tasks.AskedBy(meta)
	if id == "" {
		return nil, false
	}
	e, ok := n.taskReg.Lookup(id)
	if !ok || !madeCallTo(e, ctx) {
		return nil, false
	}
	tctx := e.Context()
	if tctx == nil {
		return nil, false
	}
	if s := servedFrom(tctx); s == nil || s.session == nil {
		return nil, false
	}
	return tctx, true
}

// madeCallTo reports whether task e made a call to the peer whose session
// the client handler's ctx belongs to (the dial put the peer on it): only a
// peer serving one of a task's calls may ask through that task.
func madeCallTo(e *tasks.Entry, ctx context.Context) bool {
	p, ok := peer.Remote(ctx)
	if !ok {
		return false
	}
	for _, h := range e.Snapshot(false).Children {
		if h.Peer == p.String() {
			return true
		}
	}
	return false
}

// --- MCP Tasks: calls that outlive their request ---

// runDetached runs a task's handler on its own, answers the request with
// the task's handle (resultType "task"), and keeps the outcome for
// tasks/get. With promotion, it first waits a while for the handler, and
// answers with its result if it ends in time.
func (n *Node) runDetached(reqCtx, work context.Context, cancel context.CancelFunc, e *tasks.Entry, now bool, next sdkmcp.MethodHandler, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		cancel()
		e.Finish(tasks.Cancelled, nil, ErrClosed, nil)
		return nil, ErrClosed
	}
	n.wg.Add(1)
	n.mu.Unlock()
	stop := context.AfterFunc(n.ctx, cancel) // the node's end ends the task
	d := &detached{updates: make(chan *sdkmcp.CallToolParamsRaw, 1)}
	n.detached.Store(e.ID(), d)
	type outcome struct {
		res sdkmcp.Result
		err error
	}
	first := make(chan outcome, 1)
	snap := e.Snapshot(false)
	go func() {
		defer n.wg.Done()
		defer stop()
		defer cancel()
		defer time.AfterFunc(n.taskReg.TTL(), func() { n.detached.Delete(e.ID()) })
		r := req
		for {
			res, err := next(work, method, r)
			ctr, _ := res.(*sdkmcp.CallToolResult)
			if err == nil && ctr != nil && ctr.NeedsInput() && work.Err() == nil {
				// The handler asked for input (protocol 2026-07-28): the
				// questions wait in the task until tasks/update answers.
				d.setPending(ctr.InputRequests, ctr.RequestState)
				e.SetState(tasks.InputRequired, "waiting for input")
				select {
				case upd := <-d.updates:
					params := *r.GetParams().(*sdkmcp.CallToolParamsRaw)
					params.InputResponses, params.RequestState = upd.InputResponses, d.state()
					d.setPending(nil, "")
					e.SetState(tasks.Working, "")
					r = &sdkmcp.CallToolRequest{Session: req.GetSession().(*sdkmcp.ServerSession), Params: &params, Extra: req.GetExtra()}
					continue
				case <-work.Done():
					res, err = nil, work.Err()
				}
			}
			n.finishServed(work, e, snap.Server, snap.Tool, res, err)
			select {
			case first <- outcome{res, err}:
			default:
			}
			return
		}
	}()
	if wait := n.cfg.tasks.promote; wait > 0 && !now {
		select {
		case o := <-first:
			return o.res, o.err
		case <-time.After(wait):
		case <-reqCtx.Done():
			cancel()
			o := <-first
			return o.res, o.err
		}
	}
	return n.taskHandle(e), nil
}

// detached is the state of a detached task's conversation with its client.
type detached struct {
	updates chan *sdkmcp.CallToolParamsRaw
	mu      sync.Mutex
	pending sdkmcp.InputRequestMap
	rstate  string
}

func (d *detached) setPending(p sdkmcp.InputRequestMap, state string) {
	d.mu.Lock()
	d.pending, d.rstate = p, state
	d.mu.Unlock()
}

func (d *detached) state() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rstate
}

func (d *detached) inputRequests() sdkmcp.InputRequestMap {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending
}

// TaskParams are the params of tasks/get, tasks/update, tasks/cancel and
// mcpmesh/tasks/tree.
type TaskParams struct {
	sdkmcp.ParamsBase
	TaskID         string                  `json:"taskId"`
	InputResponses sdkmcp.InputResponseMap `json:"inputResponses,omitempty"`
	RequestState   string                  `json:"requestState,omitempty"`
}

// TaskResult is an MCP task as SEP-2663 puts it on the wire: the answer to
// tasks/get (resultType "complete") and, without result, error and input
// requests, the handle a tools/call returns instead of its result
// (resultType "task").
type TaskResult struct {
	sdkmcp.ResultBase
	ResultType     string                 `json:"resultType"`
	TaskID         string                 `json:"taskId"`
	Status         tasks.State            `json:"status"`
	StatusMessage  string                 `json:"statusMessage,omitempty"`
	CreatedAt      string                 `json:"createdAt"`
	LastUpdatedAt  string                 `json:"lastUpdatedAt"`
	TTLMs          *int64                 `json:"ttlMs"`
	PollIntervalMs int64                  `json:"pollIntervalMs,omitempty"`
	InputRequests  sdkmcp.InputRequestMap `json:"inputRequests,omitempty"`
	Result         json.RawMessage        `json:"result,omitempty"`
	Error          *jsonrpc.Error         `json:"error,omitempty"`
}

// EmptyResult answers tasks/update and tasks/cancel.
type EmptyResult struct {
	sdkmcp.ResultBase
	ResultType string `json:"resultType"`
}

// TreeResult answers mcpmesh/tasks/tree.
type TreeResult struct {
	sdkmcp.ResultBase
	Tree *TaskTree `json:"tree"`
}

// TaskTree is one task and, as far as they could be reached, the tasks its
// calls started on other nodes.
type TaskTree struct {
	tasks.Task
	// Unreachable says why the node holding this task could not be asked;
	// then only ID, Peer, Server and Tool are known.
	Unreachable string      `json:"unreachable,omitempty"`
	Children    []*TaskTree `json:"childTasks,omitempty"`
}

func (n *Node) taskHandle(e *tasks.Entry) *TaskResult {
	r := n.wireTask(e, false)
	r.ResultType = "task"
	// For mesh callers, whose SDK reads the answer as a CallToolResult.
	r.Meta = sdkmcp.Meta{tasks.MetaKey: &tasks.ResultMeta{Task: r.TaskID, State: r.Status}}
	return r
}

// wireTask describes a task as SEP-2663 does; with detail, its result,
// error or pending input requests too.
func (n *Node) wireTask(e *tasks.Entry, detail bool) *TaskResult {
	t := e.Snapshot(detail)
	ttl := n.taskReg.TTL().Milliseconds() + int64(time.Since(t.Started)/time.Millisecond)
	updated := t.Started
	if t.Progress != nil && t.Progress.At.After(updated) {
		updated = t.Progress.At
	}
	if !t.Ended.IsZero() {
		updated = t.Ended
	}
	r := &TaskResult{
		ResultType:     "complete",
		TaskID:         t.ID,
		Status:         t.State,
		StatusMessage:  t.Message,
		CreatedAt:      t.Started.UTC().Format(time.RFC3339Nano),
		LastUpdatedAt:  updated.UTC().Format(time.RFC3339Nano),
		TTLMs:          &ttl,
		PollIntervalMs: pollInterval.Milliseconds(),
	}
	if !detail {
		return r
	}
	switch {
	case t.State == tasks.Failed && t.Result != nil:
		// A tool that ran and reported a problem completed, as far as MCP
		// Tasks is concerned: its result says isError.
		r.Status, r.Result = tasks.Completed, t.Result
	case t.State == tasks.Completed:
		r.Result = t.Result
	case t.State == tasks.Failed:
		r.Error = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: t.Error}
		r.StatusMessage = t.Error
	case t.State == tasks.InputRequired:
		if v, ok := n.detached.Load(t.ID); ok {
			r.InputRequests = v.(*detached).inputRequests()
		}
	}
	return r
}

// mayView reports whether the peer who asks may see or steer task t: its
// caller, any node on its path, or the node itself.
func (n *Node) mayView(ctx context.Context, t *tasks.Task) bool {
	who, ok := peer.Remote(ctx)
	if !ok {
		return false
	}
	w := who.String()
	if w == n.taskReg.Self() || w == t.Caller {
		return true
	}
	for _, p := range t.Path {
		if p == w {
			return true
		}
	}
	return false
}

// lookupFor finds a task for a peer allowed to see it; other peers learn
// nothing, not even whether it exists.
func (n *Node) lookupFor(ctx context.Context, id string) (*tasks.Entry, error) {
	e, ok := n.taskReg.Lookup(id)
	if ok {
		t := e.Snapshot(false)
		if n.mayView(ctx, &t) {
			return e, nil
		}
	}
	return nil, rpcError(jsonrpc.CodeInvalidParams, "no task %s on %s for this caller", id, n.taskReg.Self())
}

func (n *Node) handleTasksGet(ctx context.Context, _ *sdkmcp.ServerSession, p *TaskParams) (*TaskResult, error) {
	e, err := n.lookupFor(ctx, p.TaskID)
	if err != nil {
		return nil, err
	}
	r := n.wireTask(e, true)
	t := e.Snapshot(false)
	r.Meta = sdkmcp.Meta{tasks.MetaKey: &t}
	return r, nil
}

func (n *Node) handleTasksUpdate(ctx context.Context, _ *sdkmcp.ServerSession, p *TaskParams) (*EmptyResult, error) {
	// SEP-2663: acknowledge even what cannot be applied.
	if e, err := n.lookupFor(ctx, p.TaskID); err == nil && len(p.InputResponses) > 0 {
		if v, ok := n.detached.Load(e.ID()); ok {
			select {
			case v.(*detached).updates <- &sdkmcp.CallToolParamsRaw{InputResponses: p.InputResponses}:
			default: // an update is already waiting to be applied
			}
		}
	}
	return &EmptyResult{ResultType: "complete"}, nil
}

func (n *Node) handleTasksCancel(ctx context.Context, _ *sdkmcp.ServerSession, p *TaskParams) (*EmptyResult, error) {
	if e, err := n.lookupFor(ctx, p.TaskID); err == nil {
		e.Cancel()
	}
	return &EmptyResult{ResultType: "complete"}, nil
}

func (n *Node) handleTasksTree(ctx context.Context, _ *sdkmcp.ServerSession, p *TaskParams) (*TreeResult, error) {
	e, err := n.lookupFor(ctx, p.TaskID)
	if err != nil {
		return nil, err
	}
	return &TreeResult{Tree: n.tree(ctx, e)}, nil
}

// treeTimeout bounds how long a node waits for one hop of a tree.
const treeTimeout = 3 * time.Second

// TaskTree returns the tree below this node's task id, asking every node
// that holds a part of it (each asks the nodes below it in turn); nodes that
// cannot be reached are marked, with their subtrees missing.
func (n *Node) TaskTree(ctx context.Context, id string) (*TaskTree, error) {
	e, ok := n.taskReg.Lookup(id)
	if !ok {
		return nil, fmt.Errorf("no task %s on this node", id)
	}
	return n.tree(ctx, e), nil
}

func (n *Node) tree(ctx context.Context, e *tasks.Entry) *TaskTree {
	t := &TaskTree{Task: e.Snapshot(false)}
	t.Children = make([]*TaskTree, len(t.Task.Children))
	var wg sync.WaitGroup
	for i, h := range t.Task.Children {
		wg.Go(func() { t.Children[i] = n.subtree(ctx, h) })
	}
	wg.Wait()
	return t
}

func (n *Node) subtree(ctx context.Context, h tasks.Hop) *TaskTree {
	missing := func(err error) *TaskTree {
		return &TaskTree{Task: tasks.Task{ID: h.Task, Peer: h.Peer, Server: h.Server, Tool: h.Tool}, Unreachable: oneLine{err}.Error()}
	}
	if h.Peer == n.taskReg.Self() {
		if e, ok := n.taskReg.Lookup(h.Task); ok {
			return n.tree(ctx, e)
		}
		return missing(fmt.Errorf("task no longer kept"))
	}
	p, err := lpeer.Decode(h.Peer)
	if err != nil {
		return missing(err)
	}
	ctx, cancel := context.WithTimeout(ctx, treeTimeout)
	defer cancel()
	cs, err := n.Session(ctx, p, mcp.DefaultServer)
	if err != nil {
		return missing(err)
	}
	res, err := sdkmcp.CallCustomMethod[*TaskParams, *TreeResult](ctx, cs, methodTasksTree, &TaskParams{TaskID: h.Task})
	if err != nil {
		return missing(err)
	}
	if res.Tree == nil {
		return missing(fmt.Errorf("empty answer"))
	}
	return res.Tree
}

// --- MCP Tasks, the calling side ---

// TaskRef names a task running on a peer.
type TaskRef struct {
	Peer   lpeer.ID `json:"peer"`
	Server string   `json:"server"`
	ID     string   `json:"id"`
}

// StartTask calls tool on server of peer p as an MCP task (SEP-2663): the
// call returns as soon as the peer has created the task, which runs on
// without the call; poll it with PollTask, cancel it with CancelRemoteTask.
// Called from a task's handler, the new task is a child of it like any
// call.
func (n *Node) StartTask(ctx context.Context, p lpeer.ID, server, tool string, args any) (TaskRef, error) {
	if n.cfg.tasks.off {
		return TaskRef{}, errors.New("start task: task tracking is off on this node")
	}
	var ref TaskRef
	res, err := n.callTracked(ctx, p, server, tool, args,
		func(ctx context.Context, p lpeer.ID, server, tool string, args any, meta sdkmcp.Meta) (*sdkmcp.CallToolResult, error) {
			m, _ := tasks.Decode(meta)
			m.Detach = true
			m.Encode(meta)
			ref = TaskRef{Peer: p, Server: server, ID: m.ID}
			meta[sdkmcp.MetaKeyClientCapabilities] = map[string]any{
				"elicitation": map[string]any{},
				"sampling":    map[string]any{},
				"extensions":  map[string]any{tasks.ExtensionID: map[string]any{}},
			}
			return n.callServerTool(ctx, p, server, tool, args, meta)
		})
	if err != nil {
		return TaskRef{}, err
	}
	if rm, ok := tasks.DecodeResult(res.Meta); !ok || rm.Task != ref.ID || rm.State.Terminal() || len(res.Content) > 0 {
		return TaskRef{}, fmt.Errorf("start task %s/%s on %s: the peer answered with a result, not a task", server, tool, p)
	}
	return ref, nil
}

// PollTask asks the peer for the state of a task StartTask started: its
// status and, once it has ended, its result or error.
func (n *Node) PollTask(ctx context.Context, ref TaskRef) (*TaskResult, error) {
	cs, err := n.Session(ctx, ref.Peer, ref.Server)
	if err != nil {
		return nil, err
	}
	res, err := sdkmcp.CallCustomMethod[*TaskParams, *TaskResult](ctx, cs, methodTasksGet, &TaskParams{TaskID: ref.ID})
	if err != nil {
		return nil, fmt.Errorf("tasks/get %s on %s: %w", ref.ID, ref.Peer, err)
	}
	return res, nil
}

// UpdateTask answers the input requests a polled task is waiting on.
func (n *Node) UpdateTask(ctx context.Context, ref TaskRef, answers sdkmcp.InputResponseMap) error {
	cs, err := n.Session(ctx, ref.Peer, ref.Server)
	if err != nil {
		return err
	}
	if _, err := sdkmcp.CallCustomMethod[*TaskParams, *EmptyResult](ctx, cs, methodTasksUpdate, &TaskParams{TaskID: ref.ID, InputResponses: answers}); err != nil {
		return fmt.Errorf("tasks/update %s on %s: %w", ref.ID, ref.Peer, err)
	}
	return nil
}

// CancelRemoteTask asks the peer to cancel a task StartTask started.
func (n *Node) CancelRemoteTask(ctx context.Context, ref TaskRef) error {
	cs, err := n.Session(ctx, ref.Peer, ref.Server)
	if err != nil {
		return err
	}
	if _, err := sdkmcp.CallCustomMethod[*TaskParams, *EmptyResult](ctx, cs, methodTasksCancel, &TaskParams{TaskID: ref.ID}); err != nil {
		return fmt.Errorf("tasks/cancel %s on %s: %w", ref.ID, ref.Peer, err)
	}
	return nil
}

// WaitTask polls a task until it ends (or ctx does) and returns its final
// state.
func (n *Node) WaitTask(ctx context.Context, ref TaskRef) (*TaskResult, error) {
	for {
		r, err := n.PollTask(ctx, ref)
		if err != nil {
			return nil, err
		}
		if r.Status.Terminal() {
			return r, nil
		}
		wait := time.Duration(r.PollIntervalMs) * time.Millisecond
		if wait <= 0 || wait > 5*time.Second {
			wait = pollInterval
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
