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

// A call's progress must reach its caller before its result: MCP asks that
// progress stop at completion, and a caller shows progress in the order it
// came. The SDK's client hands notifications to handlers on a goroutine of
// their own while it gives a result straight to the waiting call, so a
// progress notification read before the result can be handled after it.
// The tracker therefore counts, per progress token, the notifications read
// off a connection (Observe) and not yet relayed (relayProgress), and a call
// waits for its token's count to drop to zero before it returns.

// progressRoute is where the progress of one call the node made goes.
type progressRoute struct {
	to *served // the task whose caller gets it

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
// handler reports to its mesh caller on the handler's task.
func (tr *Tracker) progressRecorder(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
	return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
		if method == "notifications/progress" {
			if p, ok := req.GetParams().(*sdkmcp.ProgressNotificationParams); ok {
				if s := servedFrom(ctx); s != nil && s.session != nil && sameToken(p.ProgressToken, s.token) {
					s.increasing(p)
				}
				if tok, ok := p.ProgressToken.(string); ok && strings.HasPrefix(tok, progressPrefix) {
					if e, ok := tr.reg.Lookup(strings.TrimPrefix(tok, progressPrefix)); ok {
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
func (tr *Tracker) relayProgress(ctx context.Context, r *sdkmcp.ProgressNotificationClientRequest) {
	tok, _ := r.Params.ProgressToken.(string)
	route, ok := tr.progress.Get(tok)
	if !ok {
		return
	}
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
