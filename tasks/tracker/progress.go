package tracker

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/tasks"
)

// Each task's progress is its own work's. A task whose caller reads
// progress (its request carried a progress token) gives each call it makes
// a token of its own, so that the task below reports its progress too; the
// node serving that task records it there (the tree view shows each task
// with its own). The caller's token carries the calling task's own
// progress: what its handler reports, once it reports any. A handler that
// reports none (a thin wrapper, whose work is the calls it makes) has its
// calls' progress passed up on its caller's token instead, added up, and
// recorded on its task (tasks.CallProgress.PassUp); the first progress of
// its own stops that. Passed up next to the handler's own, the progress of
// every depth would share the root's token, each counting on its own, and
// the root would see "step 3/10" of a tool three hops down before "step
// 2/10" of the tool it called; not passed up at all, a wrapper's caller
// would see nothing while the tool below reports its steps. A call made
// outside any task routes its callee's progress to the function that asked
// for it (tasks.WithProgress): the tool called is the call's own work.
//
// That progress must reach its caller before the call's result: MCP asks that
// progress stop at completion, and a caller shows progress in the order it
// came. The SDK's client hands notifications to handlers on a goroutine of
// their own while it gives a result straight to the waiting call, so a
// progress notification read before the result can be handled after it.
// The tracker therefore counts, per progress token, the notifications read
// off a connection (Observe) and not yet handled (callProgress), and a
// call waits for its token's count to drop to zero before it returns.

// progressRoute is where the progress of one call the node makes goes: a
// root call's to the function that asked for it, a task's call's up to the
// task's caller while the task reports none of its own.
type progressRoute struct {
	// A root call's.
	call *tasks.Entry                             // the root call's task, which records it
	to   func(*sdkmcp.ProgressNotificationParams) // what tasks.WithProgress asked for
	// A task's call's.
	up      *served             // the calling task
	upCtx   context.Context     // its handler's context, which made the call
	passing *tasks.CallProgress // the call, as the task adds up its calls' progress

	mu      sync.Mutex
	pending int           // read off the connection, not yet relayed
	idle    chan struct{} // closed when pending drops to 0, if someone waits
}

func (r *progressRoute) arrived() {
	r.mu.Lock()
	r.pending++
	r.mu.Unlock()
}

func (r *progressRoute) relayed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending > 0 {
		r.pending--
	}
	if r.pending == 0 && r.idle != nil {
		close(r.idle)
		r.idle = nil
	}
}

// maxProgressWait bounds how long a result waits for the progress read
// before it: a relay stuck on a slow caller must not hold the result.
const maxProgressWait = time.Second

// drain waits until the progress read before the call's result is relayed.
func (r *progressRoute) drain() {
	r.mu.Lock()
	if r.pending == 0 {
		r.mu.Unlock()
		return
	}
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	idle := r.idle
	r.mu.Unlock()
	t := time.NewTimer(maxProgressWait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		taskLog.Debugw("result passed on with progress still being relayed", "waited", maxProgressWait)
	}
}

var progressTokenField = []byte(progressPrefix)

// Observe counts, for the client connections the node calls through, the
// progress notifications they read for the tracker's own tokens, before the
// SDK hands them to the progress handler (sdkcompat.WatchReads): a call's
// result then waits until they are relayed.
func (tr *Tracker) Observe(msg jsonrpc.Message) {
	req, ok := msg.(*jsonrpc.Request)
	if !ok || req.Method != "notifications/progress" || !bytes.Contains(req.Params, progressTokenField) {
		return
	}
	var p struct {
		Token any `json:"progressToken"`
	}
	if _, err := segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return
	}
	if tok, ok := p.Token.(string); ok {
		if route, ok := tr.progress.Get(tok); ok {
			route.arrived()
		}
	}
}

// progressRecorder is sending middleware that records the progress a
// handler reports to its caller on the handler's task, keeping it
// increasing on the caller's token (tasks.Entry.Advance). Progress passed
// up from the task's calls comes with its values decided (passUp).
func (tr *Tracker) progressRecorder(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
	return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
		if method == "notifications/progress" && ctx.Value(passedUpKey{}) == nil {
			if p, ok := req.GetParams().(*sdkmcp.ProgressNotificationParams); ok {
				if e := tr.progressTask(ctx, p.ProgressToken); e != nil {
					e.LockToken() // sent in the order decided
					defer e.UnlockToken()
					p.Progress, p.Total = e.Advance(p.Progress, p.Total, p.Message)
				}
			}
		}
		return next(ctx, method, req)
	}
}

// passedUpKey marks the context of a progress notification passed up from
// a task's call, whose values passUp decided.
type passedUpKey struct{}

// progressTask returns the served task whose caller's token tok is: the
// one on ctx (the handler's context), or, for a handler that reports on
// another context, the task a mesh caller's token names.
func (tr *Tracker) progressTask(ctx context.Context, tok any) *tasks.Entry {
	if s := servedFrom(ctx); s != nil && s.token != nil && sameToken(tok, s.token) {
		return s.entry
	}
	if t, ok := tok.(string); ok && strings.HasPrefix(t, progressPrefix) {
		if e, ok := tr.reg.Lookup(strings.TrimPrefix(t, progressPrefix)); ok {
			return e
		}
	}
	return nil
}

// callProgress is the client's progress handler: progress from the tool a
// root call called goes to the function that asked for it
// (tasks.WithProgress), kept increasing, and is recorded on the call's
// task; progress from a call a task made is passed up (passUp).
func (tr *Tracker) callProgress(ctx context.Context, r *sdkmcp.ProgressNotificationClientRequest) {
	tok, _ := r.Params.ProgressToken.(string)
	route, ok := tr.progress.Get(tok)
	if !ok {
		return
	}
	defer route.relayed()
	p := *r.Params
	if route.up != nil {
		tr.passUp(route, &p)
		return
	}
	p.Progress, p.Total = route.call.Advance(p.Progress, p.Total, p.Message)
	route.to(&p)
}

// passUp sends progress from a call a task made on the task's caller's
// token, if the task passes it (tasks.CallProgress.PassUp: its handler
// reported none of its own), with the values the task adds up.
func (tr *Tracker) passUp(route *progressRoute, p *sdkmcp.ProgressNotificationParams) {
	s := route.up
	s.entry.LockToken() // sent in the order decided
	defer s.entry.UnlockToken()
	var ok bool
	if p.Progress, p.Total, ok = route.passing.PassUp(p.Progress, p.Total, p.Message); !ok {
		return
	}
	p.ProgressToken = s.token
	// On the handler's context, as the handler would send its own.
	if err := s.session.NotifyProgress(context.WithValue(route.upCtx, passedUpKey{}, true), p); err != nil {
		taskLog.Debugw("pass progress up", "task", s.entry.ID(), "error", err)
	}
}
