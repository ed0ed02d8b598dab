package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"
)

// State is where a task is in its life.
type State string

// The states of a task, as MCP Tasks (SEP-2663) names them.
const (
	Working       State = "working"
	InputRequired State = "input_required"
	Completed     State = "completed"
	Failed        State = "failed"
	Cancelled     State = "cancelled"
)

// Terminal reports whether s is a final state.
func (s State) Terminal() bool { return s == Completed || s == Failed || s == Cancelled }

// Role says which side of a call a task stands for.
type Role string

const (
	// Served is a call this node serves.
	Served Role = "served"
	// Call is a call this node made outside any task: the root of its tree,
	// kept on the calling node so that the tree can be seen and cancelled
	// from there.
	Call Role = "call"
	// Relayed is a call this node passed on to another peer's server
	// (--share-peer): a hop of the tree whose one child is the call below.
	Relayed Role = "relay"
)

// Progress is the latest progress notification seen for a task: its own
// work's, as its handler (or, for a call, the tool called) reported it on
// its caller's progress token. The tasks below it report theirs on their
// own tasks, where they run: each node of a tree shows its own.
type Progress struct {
	Progress float64   `json:"progress"`
	Total    float64   `json:"total,omitempty"`
	Message  string    `json:"message,omitempty"`
	At       time.Time `json:"at"`
}

// Hop names one node's part in a tree: the task ID, the peer serving it and
// the tool.
type Hop struct {
	Task   string `json:"task,omitempty"`
	Peer   string `json:"peer"`
	Server string `json:"server,omitempty"`
	Tool   string `json:"tool,omitempty"`
}

// String shows a hop as "SERVER/TOOL on PEER".
func (h Hop) String() string { return h.Server + "/" + h.Tool + " on " + h.Peer }

// Task is a snapshot of one task.
type Task struct {
	ID     string   `json:"id"`
	Root   string   `json:"root"`
	Role   Role     `json:"role"`
	Peer   string   `json:"peer"`             // the node that holds the task
	Caller string   `json:"caller,omitempty"` // the authenticated peer that made the call (served tasks)
	Parent string   `json:"parent,omitempty"` // the caller's task ID
	Path   []string `json:"path,omitempty"`
	Server string   `json:"server"`
	Tool   string   `json:"tool"`
	Target string   `json:"target,omitempty"` // the peer called (root calls)
	Budget int      `json:"budget"`
	// BudgetClaimed is the budget the caller claimed, when it was above
	// what this node allows and Budget is the node's instead (tasks.Check).
	BudgetClaimed int       `json:"budgetClaimed,omitempty"`
	Deadline      time.Time `json:"deadline,omitzero"`
	State         State     `json:"state"`
	Message       string    `json:"message,omitempty"`
	Error         string    `json:"error,omitempty"`
	// FailedAt names the hop where the failure started, if this task failed
	// because a task below it did.
	FailedAt *Hop      `json:"failedAt,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
	Children []Hop     `json:"children,omitempty"`
	// Detached is set for a task the caller polls (MCP Tasks) instead of
	// waiting on its call.
	Detached bool `json:"detached,omitempty"`
	// Cause is the event that started the tree, on the root task of a
	// tree a trigger started.
	Cause   *Cause          `json:"cause,omitempty"`
	Started time.Time       `json:"started"`
	Ended   time.Time       `json:"ended,omitzero"`
	Result  json.RawMessage `json:"result,omitempty"`
}

// Duration is how long the task ran, or has run so far.
func (t *Task) Duration() time.Duration {
	if t.Ended.IsZero() {
		return time.Since(t.Started)
	}
	return t.Ended.Sub(t.Started)
}

// Entry is a live task in a registry. Its methods are safe for concurrent
// use.
type Entry struct {
	reg *Registry

	mu     sync.Mutex
	cancel context.CancelFunc // nil once the task has ended
	done   chan struct{}      // made when first asked for (see Done)
	t      Task
	result any // the final result, encoded when someone asks for it
	parked bool

	// Progress on the caller's token (progress.go).
	tokenMu sync.Mutex // held while a notification's values are decided and it is sent
	own     bool       // the handler reported progress of its own
	calls   callsProgress
}

// Registry holds a node's tasks: the running ones, and the ended ones for a
// while (see Retention).
type Registry struct {
	self      string
	retention Retention
	onEnd     func(Task) // see OnEnd

	mu    sync.Mutex
	live  map[string]*Entry
	ended []*Entry // oldest first, from head on
	head  int
	byID  map[string]*Entry
}

// Retention bounds how long and how many ended tasks a registry keeps.
type Retention struct {
	TTL time.Duration // how long an ended task is kept (default 10 minutes)
	Max int           // how many ended tasks are kept at most (default 1000)
}

// NewRegistry returns an empty registry for the node whose peer ID is self.
func NewRegistry(self string, r Retention) *Registry {
	if r.TTL <= 0 {
		r.TTL = 10 * time.Minute
	}
	if r.Max <= 0 {
		r.Max = 1000
	}
	return &Registry{self: self, retention: r, live: map[string]*Entry{}, byID: map[string]*Entry{}}
}

// OnEnd makes the registry call f with a snapshot (no result) of each
// task that ends and is the root of its tree (it has no parent), once it
// has ended. f must not block. Call it before the registry is used.
func (r *Registry) OnEnd(f func(Task)) { r.onEnd = f }

// Self returns the peer ID of the registry's node.
func (r *Registry) Self() string { return r.self }

// Begin records a new task in state Working. cancel stops its work. It
// fails if a task with t.ID is already known.
func (r *Registry) Begin(t Task, cancel context.CancelFunc) (*Entry, error) {
	now := time.Now()
	t.Peer = r.self
	t.State = Working
	if t.Started.IsZero() {
		t.Started = now
	}
	e := &Entry{reg: r, t: t, cancel: cancel}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(now)
	if _, ok := r.byID[t.ID]; ok {
		return nil, fmt.Errorf("task ID %s is already in use on this node", t.ID)
	}
	r.byID[t.ID] = e
	r.live[t.ID] = e
	return e, nil
}

// pruneLocked drops ended tasks past their TTL or beyond the count.
func (r *Registry) pruneLocked(now time.Time) {
	for r.head < len(r.ended) {
		e := r.ended[r.head]
		if len(r.ended)-r.head <= r.retention.Max && now.Sub(e.endedAt()) < r.retention.TTL {
			break
		}
		delete(r.byID, e.id())
		r.ended[r.head] = nil
		r.head++
	}
	// Compact now and then, not on every drop: a full registry drops one
	// task per task it adds.
	if r.head > 64 && r.head > len(r.ended)/2 {
		r.ended = append(r.ended[:0], r.ended[r.head:]...)
		r.head = 0
	}
}

func (e *Entry) id() string { return e.t.ID } // ID never changes

func (e *Entry) endedAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.t.Ended
}

// Lookup returns the task called id, live or ended.
func (r *Registry) Lookup(id string) (*Entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(time.Now())
	e, ok := r.byID[id]
	return e, ok
}

// Get returns a snapshot of the task called id, without its result.
func (r *Registry) Get(id string) (Task, bool) {
	e, ok := r.Lookup(id)
	if !ok {
		return Task{}, false
	}
	return e.Snapshot(false), true
}

// List returns snapshots of every task the registry holds, without
// results, oldest first.
func (r *Registry) List() []Task {
	r.mu.Lock()
	r.pruneLocked(time.Now())
	entries := make([]*Entry, 0, len(r.byID))
	for _, e := range r.byID {
		entries = append(entries, e)
	}
	r.mu.Unlock()
	out := make([]Task, len(entries))
	for i, e := range entries {
		out[i] = e.Snapshot(false)
	}
	slices.SortFunc(out, func(a, b Task) int { return a.Started.Compare(b.Started) })
	return out
}

// Live returns how many tasks are running.
func (r *Registry) Live() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// Cancel stops the task called id (and so, through its calls, every task
// below it). Cancelling an ended task does nothing.
func (r *Registry) Cancel(id string) error {
	e, ok := r.Lookup(id)
	if !ok {
		return fmt.Errorf("no task %s on this node", id)
	}
	e.Cancel()
	return nil
}

// Cancel stops the task's work; the task ends as cancelled unless it ends
// otherwise first.
func (e *Entry) Cancel() {
	e.mu.Lock()
	cancel := e.cancel
	e.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Done is closed when the task has ended.
func (e *Entry) Done() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done == nil {
		// Made on demand: most tasks are never waited on this way.
		if e.t.State.Terminal() {
			return closedChan
		}
		e.done = make(chan struct{})
	}
	return e.done
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// ID returns the task's ID.
func (e *Entry) ID() string { return e.t.ID }

// Snapshot returns a copy of the task; with result set, the final result
// encoded as JSON, if any.
func (e *Entry) Snapshot(result bool) Task {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.t
	t.Path = slices.Clone(t.Path)
	t.Children = slices.Clone(t.Children)
	if t.Progress != nil {
		p := *t.Progress
		t.Progress = &p
	}
	if t.FailedAt != nil {
		h := *t.FailedAt
		t.FailedAt = &h
	}
	if t.Cause != nil {
		c := *t.Cause
		t.Cause = &c
	}
	if result && e.result != nil {
		if raw, err := json.Marshal(e.result); err == nil {
			t.Result = raw
		}
	}
	return t
}

// Result returns the task's final result as the handler returned it (nil
// while it runs or if it failed).
func (e *Entry) Result() any {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.result
}

// SetState changes the state of a running task (working or
// input_required), with a message.
func (e *Entry) SetState(s State, msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.t.State.Terminal() {
		return
	}
	e.t.State, e.t.Message = s, msg
}

// SetProgress records the latest progress.
func (e *Entry) SetProgress(progress, total float64, msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.t.Progress = &Progress{Progress: progress, Total: total, Message: msg, At: time.Now()}
}

// AddChild records a call the task makes.
func (e *Entry) AddChild(h Hop) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.t.Children = append(e.t.Children, h)
}

// State returns the task's current state.
func (e *Entry) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.t.State
}

// Finish ends the task in state s (which must be terminal) with its result
// or error. failedAt, if not nil, names the hop where a failure started.
// Only the first Finish counts.
func (e *Entry) Finish(s State, result any, err error, failedAt *Hop) {
	e.mu.Lock()
	if e.t.State.Terminal() {
		e.mu.Unlock()
		return
	}
	now := time.Now()
	e.t.State = s
	e.t.Ended = now
	e.result = result
	if err != nil {
		e.t.Error = err.Error()
	}
	e.t.FailedAt = failedAt
	// An ended task does not keep the cancel function (and so the contexts)
	// of its work: the registry holds up to Retention.Max of them, which the
	// GC would scan for nothing.
	e.cancel = nil
	parked := e.parked
	e.parked = false
	if e.done != nil {
		close(e.done)
	}
	e.mu.Unlock()

	r := e.reg
	r.mu.Lock()
	if parked {
		r.unparkLocked(e)
	}
	delete(r.live, e.t.ID)
	r.ended = append(r.ended, e)
	r.pruneLocked(now)
	r.mu.Unlock()
	if r.onEnd != nil && e.t.Parent == "" { // Parent never changes
		r.onEnd(e.Snapshot(false))
	}
}

// Park sets a task aside in state input_required while its handler does not
// run: on protocol 2026-07-28 a handler that asks for input returns, and
// the caller calls again with the answers and the same task ID, which
// Resume picks up. A parked task is dropped like an ended one if it is not
// resumed within the retention.
func (e *Entry) Park() {
	e.mu.Lock()
	if e.t.State.Terminal() || e.parked {
		e.mu.Unlock()
		return
	}
	e.t.State, e.t.Message = InputRequired, "waiting for the caller's answers"
	e.t.Ended = time.Now()
	e.parked = true
	e.mu.Unlock()
	r := e.reg
	r.mu.Lock()
	delete(r.live, e.t.ID)
	r.ended = append(r.ended, e)
	r.mu.Unlock()
}

// Resume takes up the parked task id again for the peer caller (who must be
// the one that started it), with a new cancel function. It reports false if
// there is no such parked task.
func (r *Registry) Resume(id, caller string, cancel context.CancelFunc) (*Entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byID[id]
	if !ok {
		return nil, false
	}
	e.mu.Lock()
	if !e.parked || e.t.Caller != caller {
		e.mu.Unlock()
		return nil, false
	}
	e.parked = false
	e.t.State, e.t.Message, e.t.Ended = Working, "", time.Time{}
	e.cancel = cancel
	e.calls = callsProgress{} // the run again repeats the calls of the first (progress.go)
	e.mu.Unlock()
	r.unparkLocked(e)
	r.live[id] = e
	return e, true
}

func (r *Registry) unparkLocked(e *Entry) {
	if i := slices.Index(r.ended[r.head:], e); i >= 0 {
		r.ended = slices.Delete(r.ended, r.head+i, r.head+i+1)
	}
}

// TTL returns how long ended tasks are kept.
func (r *Registry) TTL() time.Duration { return r.retention.TTL }
