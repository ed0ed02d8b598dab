package tracker

// MCP Tasks (SEP-2663): calls that outlive their request, the methods to
// poll, answer and cancel them (served and sent), and the tree view.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// runDetached runs a task's handler on its own, answers the request with
// the task's handle (resultType "task"), and keeps the outcome for
// tasks/get. With promotion, it first waits a while for the handler, and
// answers with its result if it ends in time.
func (tr *Tracker) runDetached(reqCtx, work context.Context, cancel context.CancelFunc, e *tasks.Entry, now bool, next sdkmcp.MethodHandler, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
	if !tr.group.Enter() {
		cancel()
		e.Finish(tasks.Cancelled, nil, ErrClosed, nil)
		return nil, ErrClosed
	}
	stop := context.AfterFunc(tr.ctx, cancel) // the node's end ends the task
	d := &detached{updates: make(chan *sdkmcp.CallToolParamsRaw, 1)}
	tr.detached.Put(e.ID(), d)
	type outcome struct {
		res sdkmcp.Result
		err error
	}
	first := make(chan outcome, 1)
	snap := e.Snapshot(false)
	go func() {
		defer tr.group.Leave()
		defer stop()
		defer cancel()
		defer tr.detached.Release(e.ID()) // kept for tasks/get as long as the task
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
			tr.finishServed(work, e, snap.Server, snap.Tool, res, err)
			select {
			case first <- outcome{res, err}:
			default:
			}
			return
		}
	}()
	if wait := tr.cfg.Promote; wait > 0 && !now {
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
	return tr.taskHandle(e), nil
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

func (tr *Tracker) taskHandle(e *tasks.Entry) *TaskResult {
	r := tr.wireTask(e, false)
	r.ResultType = "task"
	// For mesh callers, whose SDK reads the answer as a CallToolResult.
	r.Meta = sdkmcp.Meta{tasks.MetaKey: &tasks.ResultMeta{Task: r.TaskID, State: r.Status}}
	return r
}

// wireTask describes a task as SEP-2663 does; with detail, its result,
// error or pending input requests too.
func (tr *Tracker) wireTask(e *tasks.Entry, detail bool) *TaskResult {
	t := e.Snapshot(detail)
	ttl := tr.reg.TTL().Milliseconds() + int64(time.Since(t.Started)/time.Millisecond)
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
		if d, ok := tr.detached.Get(t.ID); ok {
			r.InputRequests = d.inputRequests()
		}
	}
	return r
}

// mayView reports whether the peer who asks may see or steer task t: its
// caller, any node on its path, or the node itself.
func (tr *Tracker) mayView(ctx context.Context, t *tasks.Task) bool {
	who, ok := identity.Remote(ctx)
	if !ok {
		return false
	}
	w := who.String()
	if w == tr.reg.Self() || w == t.Caller {
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
func (tr *Tracker) lookupFor(ctx context.Context, id string) (*tasks.Entry, error) {
	e, ok := tr.reg.Lookup(id)
	if ok {
		t := e.Snapshot(false)
		if tr.mayView(ctx, &t) {
			return e, nil
		}
	}
	return nil, rpcError(jsonrpc.CodeInvalidParams, "no task %s on %s for this caller", id, tr.reg.Self())
}

// noParams is the error of a task method that came without params: the SDK
// hands the method nil then.
func noParams(method string) error {
	return rpcError(jsonrpc.CodeInvalidParams, "%s: missing params: want {\"taskId\": ID}", method)
}

func (tr *Tracker) handleTasksGet(ctx context.Context, _ *sdkmcp.ServerSession, p *TaskParams) (*TaskResult, error) {
	if p == nil {
		return nil, noParams(methodTasksGet)
	}
	e, err := tr.lookupFor(ctx, p.TaskID)
	if err != nil {
		return nil, err
	}
	r := tr.wireTask(e, true)
	t := e.Snapshot(false)
	r.Meta = sdkmcp.Meta{tasks.MetaKey: &t}
	return r, nil
}

func (tr *Tracker) handleTasksUpdate(ctx context.Context, _ *sdkmcp.ServerSession, p *TaskParams) (*EmptyResult, error) {
	// SEP-2663: acknowledge even what cannot be applied.
	if p == nil {
		return &EmptyResult{ResultType: "complete"}, nil
	}
	if e, err := tr.lookupFor(ctx, p.TaskID); err == nil && len(p.InputResponses) > 0 {
		if d, ok := tr.detached.Get(e.ID()); ok {
			select {
			case d.updates <- &sdkmcp.CallToolParamsRaw{InputResponses: p.InputResponses}:
			default: // an update is already waiting to be applied
			}
		}
	}
	return &EmptyResult{ResultType: "complete"}, nil
}

func (tr *Tracker) handleTasksCancel(ctx context.Context, _ *sdkmcp.ServerSession, p *TaskParams) (*EmptyResult, error) {
	if p == nil {
		return &EmptyResult{ResultType: "complete"}, nil // acknowledged, as any ID is
	}
	if e, err := tr.lookupFor(ctx, p.TaskID); err == nil {
		e.Cancel()
	}
	return &EmptyResult{ResultType: "complete"}, nil
}

func (tr *Tracker) handleTasksTree(ctx context.Context, _ *sdkmcp.ServerSession, p *TaskParams) (*TreeResult, error) {
	if p == nil {
		return nil, noParams(methodTasksTree)
	}
	e, err := tr.lookupFor(ctx, p.TaskID)
	if err != nil {
		return nil, err
	}
	return &TreeResult{Tree: tr.tree(ctx, e)}, nil
}

// treeTimeout bounds how long a node waits for one hop of a tree.
const treeTimeout = 3 * time.Second

// TaskTree returns the tree below this node's task id, asking every node
// that holds a part of it (each asks the nodes below it in turn); nodes that
// cannot be reached are marked, with their subtrees missing.
func (tr *Tracker) TaskTree(ctx context.Context, id string) (*TaskTree, error) {
	e, ok := tr.reg.Lookup(id)
	if !ok {
		return nil, fmt.Errorf("no task %s on this node", id)
	}
	return tr.tree(ctx, e), nil
}

func (tr *Tracker) tree(ctx context.Context, e *tasks.Entry) *TaskTree {
	t := &TaskTree{Task: e.Snapshot(false)}
	t.Children = make([]*TaskTree, len(t.Task.Children))
	var wg sync.WaitGroup
	for i, h := range t.Task.Children {
		wg.Go(func() { t.Children[i] = tr.subtree(ctx, h) })
	}
	wg.Wait()
	return t
}

func (tr *Tracker) subtree(ctx context.Context, h tasks.Hop) *TaskTree {
	missing := func(err error) *TaskTree {
		return &TaskTree{Task: tasks.Task{ID: h.Task, Peer: h.Peer, Server: h.Server, Tool: h.Tool}, Unreachable: oneLine(err)}
	}
	if h.Peer == tr.reg.Self() {
		if e, ok := tr.reg.Lookup(h.Task); ok {
			return tr.tree(ctx, e)
		}
		return missing(fmt.Errorf("task no longer kept"))
	}
	p, err := lpeer.Decode(h.Peer)
	if err != nil {
		return missing(err)
	}
	ctx, cancel := context.WithTimeout(ctx, treeTimeout)
	defer cancel()
	cs, err := tr.cfg.Session(ctx, p, transport.DefaultServer)
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

// oneLine shows a multi-line error (libp2p lists every failed dial on a line
// of its own) on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n  * ", "; ")), " ")
}

// --- the calling side ---

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
// call. call makes the call (as Call's does).
func (tr *Tracker) StartTask(ctx context.Context, p lpeer.ID, server, tool string, args any, call CallFunc) (TaskRef, error) {
	if tr.cfg.Off {
		return TaskRef{}, errors.New("start task: task tracking is off on this node")
	}
	var ref TaskRef
	res, err := tr.Call(ctx, p, server, tool, args,
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
			return call(ctx, p, server, tool, args, meta)
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
func (tr *Tracker) PollTask(ctx context.Context, ref TaskRef) (*TaskResult, error) {
	cs, err := tr.cfg.Session(ctx, ref.Peer, ref.Server)
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
func (tr *Tracker) UpdateTask(ctx context.Context, ref TaskRef, answers sdkmcp.InputResponseMap) error {
	cs, err := tr.cfg.Session(ctx, ref.Peer, ref.Server)
	if err != nil {
		return err
	}
	if _, err := sdkmcp.CallCustomMethod[*TaskParams, *EmptyResult](ctx, cs, methodTasksUpdate, &TaskParams{TaskID: ref.ID, InputResponses: answers}); err != nil {
		return fmt.Errorf("tasks/update %s on %s: %w", ref.ID, ref.Peer, err)
	}
	return nil
}

// CancelRemoteTask asks the peer to cancel a task StartTask started.
func (tr *Tracker) CancelRemoteTask(ctx context.Context, ref TaskRef) error {
	cs, err := tr.cfg.Session(ctx, ref.Peer, ref.Server)
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
func (tr *Tracker) WaitTask(ctx context.Context, ref TaskRef) (*TaskResult, error) {
	for {
		r, err := tr.PollTask(ctx, ref)
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
