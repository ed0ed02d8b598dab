package tracker

// The serving side: each tools/call a shared server serves is a task.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// Handler handles a served request as the layers above the task layer see
// it: besides the result, it returns the ID of the task that served the
// request ("" for none), for their records (the audit log).
type Handler func(ctx context.Context, method string, req sdkmcp.Request) (res sdkmcp.Result, task string, err error)

// AddMethods adds the task layer's own methods to a server the node shares:
// MCP Tasks' tasks/get, tasks/update and tasks/cancel, the tree view, and
// the sending middleware that records the progress handlers report.
func (tr *Tracker) AddMethods(server *sdkmcp.Server) {
	if tr.cfg.Off {
		return
	}
	server.AddSendingMiddleware(tr.progressRecorder)
	sdkmcp.AddReceivingCustomMethod(server, methodTasksGet, tr.handleTasksGet)
	sdkmcp.AddReceivingCustomMethod(server, methodTasksUpdate, tr.handleTasksUpdate)
	sdkmcp.AddReceivingCustomMethod(server, methodTasksCancel, tr.handleTasksCancel)
	sdkmcp.AddReceivingCustomMethod(server, methodTasksTree, tr.handleTasksTree)
}

func rpcError(code int64, format string, args ...any) error {
	return &jsonrpc.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Serve makes each tools/call that server name serves through next a task:
// it applies the guards to the call's task context, records the task, runs
// next with the task (and its deadline) on its context, records how it
// ended, and returns the task's ID with the result. Other requests pass.
func (tr *Tracker) Serve(name string, next sdkmcp.MethodHandler) Handler {
	pass := func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, string, error) {
		res, err := next(ctx, method, req)
		return res, "", err
	}
	if tr.cfg.Off {
		return pass
	}
	return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, string, error) {
		p, ok := req.GetParams().(*sdkmcp.CallToolParamsRaw)
		if method != "tools/call" || !ok {
			return pass(ctx, method, req)
		}
		self := tr.reg.Self()
		callerID, _ := identity.Remote(ctx)
		caller := tr.names.Of(callerID)
		m, err := tasks.Decode(p.Meta)
		if err != nil {
			return nil, "", rpcError(jsonrpc.CodeInvalidParams, "%v", err)
		}
		if m == nil {
			// A call from outside the mesh's task layer (a plain MCP
			// client): the root of a new tree.
			id := tasks.NewID()
			m = &tasks.Meta{ID: id, Root: id, Path: []string{caller}, Budget: tasks.DefaultBudget}
		}
		claimed, err := tr.admit(m, caller, p.Name)
		if err != nil {
			return nil, "", rpcError(jsonrpc.CodeInvalidRequest, "%s/%s on %s: %v", name, p.Name, self, err)
		}
		ss, _ := req.GetSession().(*sdkmcp.ServerSession)
		detach := wantsTask(p.Meta) && (m.Detach || tr.cfg.Promote > 0)
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
			Server: name, Tool: p.Name, Budget: m.Budget, BudgetClaimed: claimed, Deadline: deadline, Detached: detach,
		}
		e, resumed := tr.reg.Resume(m.ID, caller, cancel)
		if !resumed {
			e, err = tr.reg.Begin(t, cancel)
			if err != nil {
				cancel()
				return nil, "", rpcError(jsonrpc.CodeInvalidRequest, "%s/%s on %s: %v", name, p.Name, self, err)
			}
		}
		s := &served{entry: e, meta: m, session: ss, token: p.GetProgressToken()}
		work = tasks.WithAsker(work, s) // for servedFrom and tasks.AskMeta alike
		if detach {
			res, err := tr.runDetached(ctx, work, cancel, e, m.Detach, next, method, req)
			return res, e.ID(), err
		}
		release := tr.hold(callerID) // a silent caller cancels the task in seconds
		res, err := next(work, method, req)
		release()
		tr.finishServed(work, e, name, p.Name, res, err)
		cancel()
		return res, e.ID(), err
	}
}

// admit applies the guards (tasks.Check) to the task context m of a call to
// tool by the authenticated peer caller, served or relayed alike. A hop
// budget the caller claimed above what this node allows is lowered to it
// (m.Budget); admit returns the claim, for the task's record, or 0 when
// the claim stood.
func (tr *Tracker) admit(m *tasks.Meta, caller, tool string) (claimed int, err error) {
	claimed = m.Budget
	if err := tasks.Check(m, tr.reg.Self(), caller); err != nil {
		taskLog.Debugw("refused call", "tool", tool, "caller", caller, "error", err)
		return 0, err
	}
	if claimed == m.Budget {
		return 0, nil
	}
	taskLog.Infow("hop budget claimed above what this node allows: clamped", "tool", tool, "caller", caller, "claimed", claimed, "budget", m.Budget)
	return claimed, nil
}

// Asking lets the calls a task's handler makes relay their questions up to
// the task's caller: while the handler runs, its context (the input state
// on it, so the innermost layer before the handler) is the one questions
// from below are asked with, on sessions that send them apart from the call
// (before protocol 2026-07-28). When the handler returns, the task can no
// longer be asked through.
func (tr *Tracker) Asking(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
	if tr.cfg.Off {
		return next
	}
	return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
		s := servedFrom(ctx)
		if s == nil || method != "tools/call" {
			return next(ctx, method, req)
		}
		id := s.entry.ID()
		tr.asking.Store(id, ctx)
		defer tr.asking.CompareAndDelete(id, ctx)
		return next(ctx, method, req)
	}
}

// finishServed records how a served task ended, and marks its result with
// the task (and the hop where a failure started).
func (tr *Tracker) finishServed(ctx context.Context, e *tasks.Entry, server, tool string, res sdkmcp.Result, err error) {
	ctr, _ := res.(*sdkmcp.CallToolResult)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && err == nil && ctr != nil && ctr.IsError {
		err = fmt.Errorf("%s/%s on %s: deadline exceeded: %w", server, tool, tr.reg.Self(), context.DeadlineExceeded)
	}
	state, failedAt := outcome(ctx, ctr, err)
	if state == tasks.InputRequired {
		e.Park() // the caller answers and calls again, with the same task ID
		return
	}
	if state == tasks.Failed && failedAt == nil {
		failedAt = &tasks.Hop{Task: e.ID(), Peer: tr.reg.Self(), Server: server, Tool: tool}
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
