package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/time/rate"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/events/feed"
	"github.com/mcpmesh/mcpmesh/internal/owner"
	"github.com/mcpmesh/mcpmesh/internal/template"
	"github.com/mcpmesh/mcpmesh/tasks"
)

var log = logging.Logger("mcpmesh/triggers")

// AuditServer is the server name of the audit records of firings.
const AuditServer = "trigger"

// Node is what triggers need of a node; *node.Node implements it.
type Node interface {
	ID() lpeer.ID
	// Subscribe subscribes to p's events (p may be the node itself).
	Subscribe(p lpeer.ID, opts feed.Options) (*feed.Subscription, error)
	// Find looks up the providers of a query ("event:NAME").
	Find(ctx context.Context, query string, found func(discovery.Found)) error
	// CallServerTool calls a tool; with no task on ctx, the call is the
	// root of a tree (with tasks.WithCause, caused by an event).
	CallServerTool(ctx context.Context, p lpeer.ID, server, tool string, args any) (*sdkmcp.CallToolResult, error)
	Audit() *audit.Log
}

// Options tune an Engine.
type Options struct {
	// StateDir keeps each trigger's cursors and fired events, so that a
	// restarted node resumes where it was and fires nothing twice. ""
	// keeps them in memory: a restart starts from now.
	StateDir string
	// Rediscover is how often a trigger on any provider looks for new ones
	// (default 1m); MaxProviders bounds its subscriptions (default 16).
	Rediscover   time.Duration
	MaxProviders int
	// Subscription tunes the subscriptions (backoffs, liveness); its Name,
	// Where, Cursor, Deliver and OnCursor are the engine's.
	Subscription feed.Options
}

// Engine runs a node's triggers. Its goroutines (subscriptions, firings,
// lookups) are its own: Close stops them and waits.
type Engine struct {
	n    Node
	opts Options

	ctx    context.Context
	cancel context.CancelFunc
	group  owner.Group

	mu       sync.Mutex
	triggers map[string]*trigger
}

// New returns an engine for n, with no triggers yet.
func New(n Node, opts Options) *Engine {
	if opts.Rediscover <= 0 {
		opts.Rediscover = time.Minute
	}
	if opts.MaxProviders <= 0 {
		opts.MaxProviders = 16
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{n: n, opts: opts, ctx: ctx, cancel: cancel, triggers: map[string]*trigger{}}
}

// Close stops every trigger: subscriptions end, firings in flight are
// cancelled, state is written.
func (e *Engine) Close() {
	e.group.Stop()
	e.mu.Lock()
	ts := make([]*trigger, 0, len(e.triggers))
	for _, t := range e.triggers {
		ts = append(ts, t)
	}
	e.triggers = map[string]*trigger{}
	e.mu.Unlock()
	e.cancel()
	for _, t := range ts {
		t.stop()
	}
	e.group.Wait()
}

// Counts are what a trigger did with the events it got.
type Counts struct {
	Received  int `json:"received"`
	Fired     int `json:"fired"`
	Failed    int `json:"failed"`
	Filtered  int `json:"filtered"`
	Duplicate int `json:"duplicate"`
	// Held counts the events that waited for the rate or concurrency
	// limits before firing.
	Held int `json:"held"`
	// Loop counts the events refused for their depth (MaxDepth).
	Loop    int `json:"loop"`
	Running int `json:"running"`
}

// Status describes a trigger.
type Status struct {
	Rule          Rule          `json:"rule"`
	Counts        Counts        `json:"counts"`
	Subscriptions []feed.Status `json:"subscriptions"`
	LastError     string        `json:"lastError,omitempty"`
}

// Add checks r and starts it. A trigger of the same name is an error.
func (e *Engine) Add(r Rule) error {
	c, err := compile(r)
	if err != nil {
		return err
	}
	st, err := loadState(e.opts.StateDir, c.Name, c.Event)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(e.ctx)
	t := &trigger{e: e, c: c, st: st, ctx: ctx, cancel: cancel,
		limiter: rate.NewLimiter(rate.Limit(c.Rate), c.Burst),
		slots:   make(chan struct{}, c.MaxConcurrent),
		subs:    map[lpeer.ID]*feed.Subscription{}}
	e.mu.Lock()
	if e.group.Stopped() {
		e.mu.Unlock()
		cancel()
		return errors.New("triggers closed")
	}
	if _, dup := e.triggers[c.Name]; dup {
		e.mu.Unlock()
		cancel()
		return fmt.Errorf("a trigger named %q is already running (remove it first)", c.Name)
	}
	e.triggers[c.Name] = t
	e.mu.Unlock()
	t.start()
	return nil
}

// Remove stops the trigger called name; its firings in flight finish.
func (e *Engine) Remove(name string) error {
	e.mu.Lock()
	t, ok := e.triggers[name]
	delete(e.triggers, name)
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("no trigger named %q", name)
	}
	t.stop()
	return nil
}

// List reports on every trigger, by name.
func (e *Engine) List() []Status {
	e.mu.Lock()
	ts := make([]*trigger, 0, len(e.triggers))
	for _, t := range e.triggers {
		ts = append(ts, t)
	}
	e.mu.Unlock()
	out := make([]Status, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.status())
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Rule.Name, b.Rule.Name) })
	return out
}

// trigger is one running rule.
type trigger struct {
	e       *Engine
	c       *compiled
	st      *state
	ctx     context.Context // ends when the trigger stops: subscriptions stop waiting on the limits
	cancel  context.CancelFunc
	limiter *rate.Limiter
	slots   chan struct{} // a firing running holds one

	mu      sync.Mutex
	subs    map[lpeer.ID]*feed.Subscription
	counts  Counts
	lastErr string
	stopped bool
}

func (t *trigger) start() {
	self := t.e.n.ID()
	anyProvider := false
	for _, f := range t.c.from {
		switch f {
		case AnyProvider:
			anyProvider = true
		case Self:
			t.subscribe(self)
		default:
			p, _ := lpeer.Decode(f)
			t.subscribe(p)
		}
	}
	if anyProvider {
		t.e.group.Go(t.discover)
	}
}

// stop ends the trigger's subscriptions (a firing in flight finishes) and
// writes its state.
func (t *trigger) stop() {
	t.mu.Lock()
	t.stopped = true
	subs := make([]*feed.Subscription, 0, len(t.subs))
	for _, s := range t.subs {
		subs = append(subs, s)
	}
	t.mu.Unlock()
	t.cancel()
	for _, s := range subs {
		s.Close()
	}
	if err := t.st.flush(t.c.Event); err != nil {
		log.Warnf("trigger %s: %v", t.c.Name, err)
	}
}

func (t *trigger) count(f func(*Counts)) {
	t.mu.Lock()
	f(&t.counts)
	t.mu.Unlock()
}

func (t *trigger) fail(err error) {
	t.mu.Lock()
	t.lastErr = err.Error()
	t.mu.Unlock()
}

func (t *trigger) status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Status{Rule: t.c.Rule, Counts: t.counts, LastError: t.lastErr, Subscriptions: []feed.Status{}}
	for _, sub := range t.subs {
		s.Subscriptions = append(s.Subscriptions, sub.Status())
	}
	slices.SortFunc(s.Subscriptions, func(a, b feed.Status) int { return strings.Compare(a.Peer, b.Peer) })
	return s
}

// subscribe subscribes to p's events of the trigger's type, from where the
// trigger's state says it was.
func (t *trigger) subscribe(p lpeer.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped || t.subs[p] != nil || len(t.subs) >= t.e.opts.MaxProviders {
		return
	}
	opts := t.e.opts.Subscription
	opts.Name, opts.Where, opts.Cursor, opts.MaxAge = t.c.Event, t.c.Where, t.st.cursor(p.String()), t.c.maxAge
	opts.Deliver = t.deliver
	source := p.String()
	opts.OnCursor = func(c string) { t.st.advance(source, c) }
	sub, err := t.e.n.Subscribe(p, opts)
	if err != nil {
		t.lastErr = err.Error()
		return
	}
	t.subs[p] = sub
}

// discover subscribes to each provider of the event type the mesh knows,
// now and every Rediscover.
func (t *trigger) discover() {
	tick := time.NewTicker(t.e.opts.Rediscover)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
		err := t.e.n.Find(ctx, "event:"+t.c.Event, func(f discovery.Found) { t.subscribe(f.Card.Peer) })
		cancel()
		if err != nil && t.ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			t.fail(fmt.Errorf("look up providers of %s: %w", t.c.Event, err))
		}
		select {
		case <-tick.C:
		case <-t.ctx.Done():
			return
		}
	}
}

// deliver is called by a subscription with each event, in order. It
// returns once the event is dropped or its firing has started: waiting on
// the limits here holds the subscription back.
func (t *trigger) deliver(ctx context.Context, e events.Event) {
	t.count(func(c *Counts) { c.Received++ })
	switch {
	case !t.c.filter.Match(e.Data): // the source filters too; it is not trusted to
		t.count(func(c *Counts) { c.Filtered++ })
		return
	case t.st.fired(&e):
		t.count(func(c *Counts) { c.Duplicate++ })
		return
	case e.Depth() >= MaxDepth:
		t.count(func(c *Counts) { c.Loop++ })
		t.audit(&e, "", audit.Refused, fmt.Sprintf("loop: event %s is %d triggers deep (at most %d)", e.ID, e.Depth(), MaxDepth-1), 0)
		return
	}
	held := false
	if r := t.limiter.Reserve(); r.Delay() > 0 {
		held = true
		d := r.Delay()
		if !sleep(t.ctx, ctx, d) {
			r.Cancel()
			return
		}
	}
	select {
	case t.slots <- struct{}{}:
	default:
		held = true
		select {
		case t.slots <- struct{}{}:
		case <-t.ctx.Done():
			return
		case <-ctx.Done():
			return
		}
	}
	if held {
		t.count(func(c *Counts) { c.Held++ })
	}
	first, err := t.st.fire(&e, t.c.Event)
	if err != nil {
		log.Warnf("trigger %s: %v (firing anyway)", t.c.Name, err)
	}
	if !first {
		<-t.slots
		t.count(func(c *Counts) { c.Duplicate++ })
		return
	}
	t.count(func(c *Counts) { c.Running++ })
	if !t.e.group.Go(func() { t.fire(e) }) {
		<-t.slots
		t.count(func(c *Counts) { c.Running-- })
	}
}

// sleep waits d, or until either context ends; it reports whether d passed.
func sleep(a, b context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-a.Done():
	case <-b.Done():
	}
	return false
}

// fire calls the rule's tool for e, as the root of a tree caused by e.
func (t *trigger) fire(e events.Event) {
	start := time.Now()
	defer func() {
		<-t.slots
		t.count(func(c *Counts) { c.Running-- })
	}()
	cause := &tasks.Cause{Event: e.Name, ID: e.ID, Source: e.Source, Trigger: t.c.Name, Depth: e.Depth()}
	var root string // the tree the firing starts, for the audit record
	ctx := tasks.OnRootTask(tasks.WithCause(t.e.ctx, cause), func(id string) { root = id })
	ctx, cancel := context.WithTimeout(ctx, t.c.timeout)
	defer cancel()
	args, err := t.arguments(&e)
	var res *sdkmcp.CallToolResult
	if err == nil {
		res, err = t.call(ctx, args)
	}
	outcome, reason := audit.OK, ""
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		outcome, reason = audit.Cancelled, "cancelled"
	case err != nil:
		outcome, reason = audit.Error, err.Error()
	case res.IsError:
		outcome, reason = audit.Error, "the tool answered with an error"
	}
	if outcome == audit.OK {
		t.count(func(c *Counts) { c.Fired++ })
	} else {
		t.count(func(c *Counts) { c.Failed++ })
		t.fail(fmt.Errorf("event %s from %s: %s", e.ID, e.Source, reason))
	}
	t.audit(&e, root, outcome, reason, time.Since(start))
}

// arguments fills the rule's arguments (and an agent's task) from e.
func (t *trigger) arguments(e *events.Event) (any, error) {
	doc, err := json.Marshal(struct {
		ID     string          `json:"id"`
		Name   string          `json:"name"`
		Source string          `json:"source"`
		Time   time.Time       `json:"time"`
		Data   json.RawMessage `json:"data"`
		Depth  int             `json:"depth,omitempty"`
	}{e.ID, e.Name, e.Source, e.Time, e.Data, e.Depth()})
	if err != nil {
		return nil, err
	}
	vars := template.Vars{"event": {Text: string(doc), Doc: string(doc), What: "the event"}}
	args, err := vars.ExpandValue(t.c.args, true)
	if err != nil {
		return nil, fmt.Errorf("arguments: %w", err)
	}
	if t.c.Agent == "" {
		if args == nil {
			args = map[string]any{}
		}
		return args, nil
	}
	in, _ := args.(map[string]any)
	if in == nil {
		in = map[string]any{}
	}
	task := t.c.Task
	if task == "" {
		task = "Event {{event.name}} from {{event.source}}: {{event.data}}"
	}
	if in["task"], err = vars.Expand(task); err != nil {
		return nil, fmt.Errorf("task: %w", err)
	}
	if _, ok := in["context"]; !ok {
		var ev any
		json.Unmarshal(doc, &ev)
		in["context"] = map[string]any{"event": ev}
	}
	return in, nil
}

// call makes the firing's call.
func (t *trigger) call(ctx context.Context, args any) (*sdkmcp.CallToolResult, error) {
	tg := t.c.target
	var p lpeer.ID
	switch tg.peer {
	case Self:
		p = t.e.n.ID()
	case "any":
		return t.callAny(ctx, args)
	default:
		p, _ = lpeer.Decode(tg.peer)
	}
	return t.e.n.CallServerTool(ctx, p, tg.server, tg.tool, args)
}

// callAny calls the first provider of the tool that answers.
func (t *trigger) callAny(ctx context.Context, args any) (*sdkmcp.CallToolResult, error) {
	var cands []discovery.Match
	var peers []lpeer.ID
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	t.e.n.Find(fctx, t.c.target.tool, func(f discovery.Found) {
		for _, m := range f.Matches {
			if m.Tool != nil {
				cands, peers = append(cands, m), append(peers, f.Card.Peer)
			}
		}
	})
	cancel()
	var errs []error
	for i, m := range cands {
		res, err := t.e.n.CallServerTool(ctx, peers[i], m.Server, m.Tool.Name, args)
		if err == nil {
			return res, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no peer in the mesh offers a tool named %q", t.c.target.tool)
	}
	return nil, errors.Join(errs...)
}

// audit records a firing (or a refusal) in the node's audit log: the
// event's source as the caller, the trigger as the name, the event's ID in
// the reason of a refusal.
func (t *trigger) audit(e *events.Event, task string, outcome audit.Outcome, reason string, d time.Duration) {
	a := t.e.n.Audit()
	if a == nil {
		return
	}
	a.Add(audit.Record{Time: time.Now().Add(-d), Caller: e.Source, Server: AuditServer, Method: e.Name, Name: t.c.Name,
		Task: task, Outcome: outcome, Reason: reason, Duration: d})
}
