package tracker

// The calling side: each call a node makes is a child of the task it serves,
// or the root of a new tree.

import (
	"context"
	"errors"
	"fmt"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/tasks"
)

// CallFunc makes one call to tool on server of peer p, with meta as the
// request's _meta (nil for none; the function may add to it).
type CallFunc func(ctx context.Context, p lpeer.ID, server, tool string, args any, meta sdkmcp.Meta) (*sdkmcp.CallToolResult, error)

// Call makes a call through call as a child of the task served under ctx,
// or as the root of a new tree: it passes the task context on, records the
// call among the task's children, asks for progress when the calling task's
// caller reads it (a root call routes it to tasks.WithProgress's function;
// a task's call passes it up while the task reports none of its own, see
// progress.go), and names the hop in failures. The hop budget is
// tasks.WithHopBudget's, if lower.
func (tr *Tracker) Call(ctx context.Context, p lpeer.ID, server, tool string, args any, call CallFunc) (*sdkmcp.CallToolResult, error) {
	if tr.cfg.Off {
		defer tr.hold(p)() // a silent peer fails the call in seconds
		return call(ctx, p, server, tool, args, nil)
	}
	self := tr.reg.Self()
	budget := tasks.HopBudget(ctx)
	var left time.Duration
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d)
		if left <= 0 {
			return nil, fmt.Errorf("call %s/%s on %s: %w", server, tool, p, context.DeadlineExceeded)
		}
	}
	parent := servedFrom(ctx) // the calling task, if any
	target := tr.names.Of(p)
	var root, caller *tasks.Entry
	var m *tasks.Meta
	var wantProgress bool     // the call is given a progress token
	var route *progressRoute  // where its progress goes
	var outer context.Context // a root's context before the cancel its task holds
	if parent != nil {
		caller = parent.entry
		m = parent.meta.Child(self, budget, left)
		if m.Budget < 1 {
			t := parent.entry.Snapshot(false)
			return nil, &tasks.HopError{Hop: tasks.Hop{Task: t.ID, Peer: self, Server: t.Server, Tool: t.Tool},
				Err: fmt.Errorf("%w: path %s has made its %d hops; not calling %s/%s on %s", tasks.ErrBudget, tasks.PathString(m.Path), len(m.Path)-1, server, tool, p)}
		}
		// The task below reports its progress on its own task while
		// someone reads this one's; this one passes it up while it reports
		// none of its own.
		wantProgress = parent.token != nil
		if wantProgress && parent.session != nil {
			route = &progressRoute{up: parent, upCtx: ctx, passing: parent.entry.PassCall()}
		}
	} else {
		id := tasks.NewID()
		outer = ctx
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		b := budget
		if b <= 0 || b > tasks.DefaultBudget {
			b = tasks.DefaultBudget
		}
		var err error
		root, err = tr.reg.Begin(tasks.Task{ID: id, Root: id, Role: tasks.Call, Server: server, Tool: tool, Target: target, Budget: b, Cause: tasks.CauseOf(ctx)}, cancel)
		if err != nil {
			return nil, err
		}
		caller = root
		m = tasks.Root(id, self, budget, left) // the root gives its callee all its time
		if f := tasks.RootTaskFunc(ctx); f != nil {
			f(id)
		}
		if onProg := tasks.ProgressFunc(ctx); onProg != nil {
			route, wantProgress = &progressRoute{call: root, to: onProg}, true
		}
		if u := tasks.UserOf(ctx); u != nil {
			tr.users.Store(id, u)
			defer tr.users.Delete(id)
		}
	}
	hop := tasks.Hop{Task: m.ID, Peer: target, Server: server, Tool: tool}
	caller.AddChild(hop)
	meta := make(sdkmcp.Meta, 4)
	m.Encode(meta)
	if wantProgress {
		tok := progressPrefix + m.ID
		meta["progressToken"] = tok
		if route != nil {
			tr.progress.Put(tok, route)
			defer tr.progress.Release(tok)
		}
	}
	ctx = withCallHop(ctx, caller)
	release := tr.hold(p) // a silent peer fails the call in seconds
	res, err := call(ctx, p, server, tool, args, meta)
	release()
	if route != nil {
		route.drain() // the call's progress goes on before its result
		if route.passing != nil {
			route.passing.End()
		}
	}
	switch {
	case err == nil:
	case root != nil && ctx.Err() != nil && outer.Err() == nil:
		// The root's task was cancelled on this node ('mcpmesh tasks
		// cancel', the console), not by whoever made the call: say so, not
		// "context canceled" failed at the hop below.
		err = &cancelledHere{msg: fmt.Sprintf("call %s/%s on %s: cancelled: its task %s was cancelled on this node ('mcpmesh tasks cancel' or the console)", server, tool, p, root.ID())}
	default:
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

// cancelledHere is the error of a root call whose task was cancelled on
// its own node; it is a context.Canceled.
type cancelledHere struct{ msg string }

func (e *cancelledHere) Error() string { return e.msg }
func (e *cancelledHere) Unwrap() error { return context.Canceled }

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
