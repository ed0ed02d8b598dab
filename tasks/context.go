package tasks

import (
	"context"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Settings of the calls made with a context. They are context values, not
// node options: each call (or tree of calls) can have its own.

type budgetKey struct{}
type progressKey struct{}

// WithHopBudget returns a context whose calls through a node may make at
// most hops hops in all (this call included). It can only lower the budget
// a task has.
func WithHopBudget(ctx context.Context, hops int) context.Context {
	return context.WithValue(ctx, budgetKey{}, hops)
}

// HopBudget returns what WithHopBudget put on ctx, or 0.
func HopBudget(ctx context.Context) int {
	b, _ := ctx.Value(budgetKey{}).(int)
	return b
}

// WithProgress returns a context whose calls through a node (made outside
// any task) report the progress of the tool each calls to f, kept
// increasing. The tools that tool calls in turn report theirs on their own
// tasks, where the task tree shows them, not to f: f never sees the steps
// of different depths mixed. Asking for progress also makes every task of
// the tree record its own.
func WithProgress(ctx context.Context, f func(*sdkmcp.ProgressNotificationParams)) context.Context {
	return context.WithValue(ctx, progressKey{}, f)
}

// ProgressFunc returns what WithProgress put on ctx, or nil.
func ProgressFunc(ctx context.Context) func(*sdkmcp.ProgressNotificationParams) {
	f, _ := ctx.Value(progressKey{}).(func(*sdkmcp.ProgressNotificationParams))
	return f
}

type causeKey struct{}

// Cause is what started a tree that no one asked for: the event a trigger
// fired on. The root task of the tree records it.
type Cause struct {
	// Event is the event's name, ID its eventId, Source the peer that
	// emitted it.
	Event  string `json:"event"`
	ID     string `json:"eventId"`
	Source string `json:"source"`
	// Trigger is the rule that fired.
	Trigger string `json:"trigger,omitempty"`
	// Depth counts the events before this one in the chain that led here
	// (an event about a task that an event caused is one deeper): triggers
	// stop a loop with it.
	Depth int `json:"depth,omitempty"`
}

// String shows a cause as "event NAME from PEER [ID] (trigger T)".
func (c *Cause) String() string {
	s := "event " + c.Event + " from " + c.Source + " [" + c.ID + "]"
	if c.Trigger != "" {
		s += " (trigger " + c.Trigger + ")"
	}
	return s
}

// WithCause returns a context whose calls through a node (made outside any
// task) start trees caused by c: their root tasks record it.
func WithCause(ctx context.Context, c *Cause) context.Context {
	return context.WithValue(ctx, causeKey{}, c)
}

// CauseOf returns what WithCause put on ctx, or nil.
func CauseOf(ctx context.Context) *Cause {
	c, _ := ctx.Value(causeKey{}).(*Cause)
	return c
}

type rootTaskKey struct{}

// OnRootTask returns a context whose calls through a node (made outside any
// task) report the ID of the tree each starts to f, once its root task is
// registered and before the request leaves: a caller can show or cancel the
// tree while the call runs. f must not block.
func OnRootTask(ctx context.Context, f func(id string)) context.Context {
	return context.WithValue(ctx, rootTaskKey{}, f)
}

// RootTaskFunc returns what OnRootTask put on ctx, or nil.
func RootTaskFunc(ctx context.Context) func(id string) {
	f, _ := ctx.Value(rootTaskKey{}).(func(string))
	return f
}

type userKey struct{}

// User answers the questions that the peers serving a tree's calls ask, from
// any depth of the tree, in place of the node's own handlers: a person at a
// terminal who made the call, say. A nil field leaves that kind of question
// to the node's handler.
type User struct {
	Elicit func(context.Context, *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error)
	// ElicitDone, with Elicit, learns that the interaction of a URL-mode
	// question Elicit was asked has completed, as its server says.
	ElicitDone func(context.Context, *sdkmcp.ElicitationCompleteNotificationRequest)
	Sample     func(context.Context, *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error)
}

// WithUser returns a context whose calls through a node (made outside any
// task) have their questions answered by u, while each runs. With the task
// layer off (node.WithTaskTracking(false)) the node's handlers answer.
func WithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserOf returns what WithUser put on ctx, or nil.
func UserOf(ctx context.Context) *User {
	u, _ := ctx.Value(userKey{}).(*User)
	return u
}
