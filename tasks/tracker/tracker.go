// Package tracker is a node's task layer on its MCP sessions: it makes each
// tools/call the node serves a task of the mesh-wide tree (guards, registry,
// deadline), passes the task context on with the calls a task makes, keeps
// each task's progress its own (recorded on the task, increasing on its
// caller's token; a root call's reaches the function that asked for it),
// routes questions (elicitation, sampling, URL completions) from the calls
// a task makes up to the task's own caller, and serves and uses MCP
// Tasks (SEP-2663: calls that outlive their request, tasks/get, update,
// cancel) and the tree view (mcpmesh/tasks/tree). Package tasks holds the
// pieces with no session in them.
//
// The node composes it: [Tracker.Serve] and [Tracker.Asking] go into every
// shared server's middleware, [Tracker.Call] wraps every call the node
// makes, [Tracker.ClientOptions] and [Tracker.Observe] go on the node's
// client.
package tracker

import (
	"context"
	"errors"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/linger"
	"github.com/mcpmesh/mcpmesh/internal/owner"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/tasks"
)

var taskLog = logging.Logger("mcpmesh/tasks")

// Config is what a Tracker needs of the node it works for.
type Config struct {
	// Self is the node's peer ID.
	Self lpeer.ID
	// Off turns the task layer off: no task is recorded, no task context
	// passed on; Serve, Asking and Call only pass calls through.
	Off bool
	// Retention bounds the ended tasks kept.
	Retention tasks.Retention
	// Promote, if positive, makes a call from a client that declares MCP
	// Tasks and that has not finished within Promote a task the client
	// polls.
	Promote time.Duration
	// Session returns the open client session to server on peer p: for
	// tree queries and MCP Tasks polls.
	Session func(ctx context.Context, p lpeer.ID, server string) (*sdkmcp.ClientSession, error)
	// Hold, if set, watches peer p while a call to it is in flight or a
	// task is served for it, until release is called: a silent peer then
	// fails the call, or cancels the task, within seconds (the node's
	// liveness checker, reach.Liveness).
	Hold func(p lpeer.ID) (release func())

	// Ended, if not nil, is told of each task that ends as the root of its
	// tree (a call made outside any task, a call served for a plain MCP
	// client), with a snapshot of it. It must not block.
	Ended func(tasks.Task)

	// The node's own user, who answers the questions of calls made outside
	// any task; nil: such questions are refused.
	Elicit      func(context.Context, *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error)
	ElicitDone  func(context.Context, *sdkmcp.ElicitationCompleteNotificationRequest)
	Sample      func(context.Context, *sdkmcp.CreateMessageRequest) (*sdkmcp.CreateMessageResult, error)
	SampleTools func(context.Context, *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error)
}

// Tracker is a node's task layer. Its methods are safe for concurrent use.
type Tracker struct {
	cfg   Config
	reg   *tasks.Registry
	names identity.Texts

	progress *linger.Map[string, *progressRoute] // progress token → route, for root calls
	asking   sync.Map                            // task ID → the context its running handler asks its caller with
	users    sync.Map                            // root task ID → the *tasks.User of a call made outside any task, while it runs
	urlAsks  urlQuestions                        // URL-mode questions passed up, for their completion
	detached *linger.Map[string, *detached]      // task ID → conversation with its MCP Tasks client

	ctx    context.Context // ends with Close: detached tasks end
	cancel context.CancelFunc
	group  owner.Group // detached tasks running
}

// hold watches p while the node has work with it (see Config.Hold).
func (tr *Tracker) hold(p lpeer.ID) (release func()) {
	if tr.cfg.Hold == nil {
		return func() {}
	}
	return tr.cfg.Hold(p)
}

// ErrClosed is returned for work that would outlive a closed Tracker.
var ErrClosed = errors.New("node closed")

// New returns the task layer of the node cfg describes.
func New(cfg Config) *Tracker {
	reg := tasks.NewRegistry(cfg.Self.String(), cfg.Retention)
	if cfg.Ended != nil {
		reg.OnEnd(cfg.Ended)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Tracker{
		cfg:      cfg,
		reg:      reg,
		progress: linger.New[string, *progressRoute](progressGrace),
		detached: linger.New[string, *detached](reg.TTL()),
		ctx:      ctx,
		cancel:   cancel,
	}
}

// Close cancels the tasks that outlive their request (MCP Tasks) and waits
// for their handlers to return.
func (tr *Tracker) Close() {
	tr.group.Stop()
	tr.cancel()
	tr.group.Wait()
}

// RegisterClient teaches the node's client the task methods it sends.
func (tr *Tracker) RegisterClient(c *sdkmcp.Client) {
	sdkmcp.AddSendingCustomMethod[*TaskParams, *TaskResult](c, methodTasksGet)
	sdkmcp.AddSendingCustomMethod[*TaskParams, *EmptyResult](c, methodTasksUpdate)
	sdkmcp.AddSendingCustomMethod[*TaskParams, *EmptyResult](c, methodTasksCancel)
	sdkmcp.AddSendingCustomMethod[*TaskParams, *TreeResult](c, methodTasksTree)
}

const (
	methodTasksGet    = "tasks/get"
	methodTasksUpdate = "tasks/update"
	methodTasksCancel = "tasks/cancel"
	methodTasksTree   = "mcpmesh/tasks/tree"
)

// progressPrefix starts the progress tokens a node gives the calls it
// makes; the rest is the called task's ID.
const progressPrefix = "mcpmesh-task-"

// pollInterval is what the node suggests to clients polling its tasks.
const pollInterval = 250 * time.Millisecond

// Tasks returns the tasks this node holds (running, and ended within the
// retention), oldest first, without results.
func (tr *Tracker) Tasks() []tasks.Task { return tr.reg.List() }

// Task returns one task of this node, with its result if it has ended.
func (tr *Tracker) Task(id string) (tasks.Task, bool) {
	e, ok := tr.reg.Lookup(id)
	if !ok {
		return tasks.Task{}, false
	}
	return e.Snapshot(true), true
}

// CancelTask cancels a task of this node, and through its calls every task
// below it on other nodes.
func (tr *Tracker) CancelTask(id string) error { return tr.reg.Cancel(id) }

// States counts the tasks held by state, for metrics.
func (tr *Tracker) States() map[string]int {
	m := map[string]int{}
	for _, t := range tr.reg.List() {
		m[string(t.State)]++
	}
	return m
}

// served is a task the node serves, as the context of its handler carries
// it (under the tasks package's key: see tasks.WithAsker).
type served struct {
	entry *tasks.Entry
	meta  *tasks.Meta // the task's own context (its ID is entry's)
	// The caller's session, where questions from below go, and the
	// progress token it gave (nil: it reads no progress).
	session *sdkmcp.ServerSession
	token   any
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
func (s *served) AskParent() string { return s.meta.Parent }

// CurrentTask returns the ID of the task served under ctx, if any.
func CurrentTask(ctx context.Context) (string, bool) {
	if s := servedFrom(ctx); s != nil {
		return s.entry.ID(), true
	}
	return "", false
}
