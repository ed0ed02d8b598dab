package node

import (
	"context"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/tasks"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

// Wiring of the task layer (tasks/tracker): the tree of calls, MCP Tasks.

// initTasks makes the node's task layer; New calls it before the node's
// client, whose handlers it routes.
func (n *Node) initTasks() {
	c := n.cfg.tasks
	n.tasks = tracker.New(tracker.Config{
		Self: n.host.ID(), Off: c.off, Retention: c.retention, Promote: c.promote,
		Session: n.Session, Hold: n.hold,
		Elicit: n.cfg.elicit, ElicitDone: n.cfg.elicitDone,
		Sample: n.cfg.sample, SampleTools: n.cfg.sampleTools,
		Ended: n.taskEnded, // roots that end are events
	})
	if m := n.cfg.trust.metrics; m != nil {
		m.TaskStates(n.tasks.States)
	}
}

// Tasks returns the tasks this node holds (running, and ended within the
// retention), oldest first, without results.
func (n *Node) Tasks() []tasks.Task { return n.tasks.Tasks() }

// Task returns one task of this node, with its result if it has ended.
func (n *Node) Task(id string) (tasks.Task, bool) { return n.tasks.Task(id) }

// CancelTask cancels a task of this node, and through its calls every task
// below it on other nodes.
func (n *Node) CancelTask(id string) error { return n.tasks.CancelTask(id) }

// TaskTree returns the tree below this node's task id, asking every node
// that holds a part of it; nodes that cannot be reached are marked, with
// their subtrees missing.
func (n *Node) TaskTree(ctx context.Context, id string) (*tracker.TaskTree, error) {
	return n.tasks.TaskTree(ctx, id)
}

// StartTask calls tool on server of peer p as an MCP task (SEP-2663): the
// call returns as soon as the peer has created the task, which runs on
// without the call; poll it with PollTask, cancel it with CancelRemoteTask.
// Called from a task's handler, the new task is a child of it like any
// call.
func (n *Node) StartTask(ctx context.Context, p lpeer.ID, server, tool string, args any) (tracker.TaskRef, error) {
	call, err := n.delegatedCall(ctx, p, server, tool)
	if err != nil {
		return tracker.TaskRef{}, err
	}
	return n.tasks.StartTask(ctx, p, server, tool, args, call)
}

// PollTask asks the peer for the state of a task StartTask started: its
// status and, once it has ended, its result or error.
func (n *Node) PollTask(ctx context.Context, ref tracker.TaskRef) (*tracker.TaskResult, error) {
	return n.tasks.PollTask(ctx, ref)
}

// UpdateTask answers the input requests a polled task is waiting on.
func (n *Node) UpdateTask(ctx context.Context, ref tracker.TaskRef, answers sdkmcp.InputResponseMap) error {
	return n.tasks.UpdateTask(ctx, ref, answers)
}

// CancelRemoteTask asks the peer to cancel a task StartTask started.
func (n *Node) CancelRemoteTask(ctx context.Context, ref tracker.TaskRef) error {
	return n.tasks.CancelRemoteTask(ctx, ref)
}

// WaitTask polls a task until it ends (or ctx does) and returns its final
// state.
func (n *Node) WaitTask(ctx context.Context, ref tracker.TaskRef) (*tracker.TaskResult, error) {
	return n.tasks.WaitTask(ctx, ref)
}

// CurrentTask returns the ID of the task served under ctx, if any.
func CurrentTask(ctx context.Context) (string, bool) { return tracker.CurrentTask(ctx) }
