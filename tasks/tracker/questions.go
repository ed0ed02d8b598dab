package tracker

// Questions from below: the elicitation and sampling requests that peers
// serving a task's calls send go up to the task's own caller; those of calls
// made outside any task go to the node's own user.

import (
	"context"
	"fmt"
	"sync"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// relayElicitationComplete passes the completion of a URL-mode question up
// to whoever the node passed the question on to, or to its own user.
func (tr *Tracker) relayElicitationComplete(ctx context.Context, r *sdkmcp.ElicitationCompleteNotificationRequest) {
	if q, ok := tr.urlAsks.take(r.Params.ElicitationID); ok {
		if q.user != nil {
			q.user(ctx, r)
			return
		}
		if err := q.to.NotifyElicitationComplete(ctx, r.Params); err != nil {
			taskLog.Debugw("relay elicitation complete", "id", r.Params.ElicitationID, "error", err)
		}
		return
	}
	if h := tr.cfg.ElicitDone; h != nil {
		h(ctx, r)
	}
}

// urlQuestions remembers where the node passed each URL-mode question, by
// elicitation ID (up to the caller of a task, or to the user of a call,
// tasks.User), until it completes or an hour has passed. Bounded.
type urlQuestions struct {
	mu sync.Mutex
	m  map[string]urlQuestion
}

type urlQuestion struct {
	to    *sdkmcp.ServerSession
	user  func(context.Context, *sdkmcp.ElicitationCompleteNotificationRequest) // or to a call's user
	until time.Time
}

const maxURLQuestions = 4096

func (q *urlQuestions) remember(id string, to urlQuestion) {
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
	to.until = now.Add(time.Hour)
	q.m[id] = to
}

func (q *urlQuestions) take(id string) (urlQuestion, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	v, ok := q.m[id]
	delete(q.m, id)
	if !ok || time.Now().After(v.until) {
		return urlQuestion{}, false
	}
	return v, true
}

// ClientOptions sets the handlers of the node's client that route the
// questions (elicitation, sampling) that peers serving this node's calls
// send (to the caller of the task that made the call, or to the node's own
// user, Config, for calls made outside any task) and the progress of root
// calls (see callProgress).
func (tr *Tracker) ClientOptions(opts *sdkmcp.ClientOptions) {
	if tr.cfg.Off {
		return
	}
	opts.ProgressNotificationHandler = tr.callProgress
	opts.ElicitationCompleteHandler = tr.relayElicitationComplete
	opts.ElicitationHandler = func(ctx context.Context, r *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
		if tctx, ok := tr.askThrough(ctx, r.Params.Meta); ok {
			if id := r.Params.ElicitationID; r.Params.Mode == "url" && id != "" {
				if s := servedFrom(tctx); s != nil && s.session != nil {
					tr.urlAsks.remember(id, urlQuestion{to: s.session})
				}
			}
			return ask.Elicit(tctx, r.Params)
		}
		if u := tr.userFor(ctx, r.Params.Meta); u != nil && u.Elicit != nil {
			if id := r.Params.ElicitationID; r.Params.Mode == "url" && id != "" && u.ElicitDone != nil {
				tr.urlAsks.remember(id, urlQuestion{user: u.ElicitDone})
			}
			return u.Elicit(ctx, r)
		}
		if h := tr.cfg.Elicit; h != nil {
			return h(ctx, r)
		}
		return nil, fmt.Errorf("node %s cannot answer elicitation requests: it has no user to ask (no elicitation handler)", tr.cfg.Self)
	}
	// The with-tools form carries every sampling request, tools and
	// multi-block content included, so that nothing is lost on the way up.
	opts.CreateMessageHandler = nil
	opts.CreateMessageWithToolsHandler = func(ctx context.Context, r *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error) {
		if tctx, ok := tr.askThrough(ctx, r.Params.Meta); ok {
			return ask.SampleWithTools(tctx, r.Params)
		}
		if u := tr.userFor(ctx, r.Params.Meta); u != nil && u.Sample != nil {
			return u.Sample(ctx, r)
		}
		if h := tr.cfg.SampleTools; h != nil {
			return h(ctx, r)
		}
		if h := tr.cfg.Sample; h != nil {
			return sampleWithout(ctx, h, r)
		}
		return nil, fmt.Errorf("node %s cannot answer sampling requests: it has no model to ask (no sampling handler)", tr.cfg.Self)
	}
}

// sampleWithout answers a sampling request with a handler that knows no
// tools: the request goes without them, each message with its one content
// block.
func sampleWithout(ctx context.Context, h func(context.Context, *sdkmcp.CreateMessageRequest) (*sdkmcp.CreateMessageResult, error), r *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error) {
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
func (tr *Tracker) askThrough(ctx context.Context, meta sdkmcp.Meta) (context.Context, bool) {
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
	e, ok := tr.reg.Lookup(id)
	if !ok || !madeCallTo(e, ctx) {
		return nil, false
	}
	v, ok := tr.asking.Load(id) // the task's handler is running
	if !ok {
		return nil, false
	}
	tctx := v.(context.Context)
	if s := servedFrom(tctx); s == nil || s.session == nil {
		return nil, false
	}
	return tctx, true
}

// userFor returns the user (tasks.WithUser) of the call made outside any
// task that a question belongs to, if it has one: the call whose context the
// question came on (2026-07-28), or the root task its _meta names, asked
// over a session to a peer that call went to (2025-11-25).
func (tr *Tracker) userFor(ctx context.Context, meta sdkmcp.Meta) *tasks.User {
	id := ""
	if e, ok := ctx.Value(callHopKey{}).(*tasks.Entry); ok {
		id = e.ID()
	} else if id = tasks.AskedBy(meta); id != "" {
		e, ok := tr.reg.Lookup(id)
		if !ok || !madeCallTo(e, ctx) {
			return nil
		}
	}
	if id == "" {
		return nil
	}
	v, ok := tr.users.Load(id)
	if !ok {
		return nil
	}
	return v.(*tasks.User)
}

// madeCallTo reports whether task e made a call to the peer whose session
// the client handler's ctx belongs to (the dial put the peer on it): only a
// peer serving one of a task's calls may ask through that task.
func madeCallTo(e *tasks.Entry, ctx context.Context) bool {
	p, ok := identity.Remote(ctx)
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
