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
// any task) report progress notifications from any depth of their tree to
// f.
func WithProgress(ctx context.Context, f func(*sdkmcp.ProgressNotificationParams)) context.Context {
	return context.WithValue(ctx, progressKey{}, f)
}

// ProgressFunc returns what WithProgress put on ctx, or nil.
func ProgressFunc(ctx context.Context) func(*sdkmcp.ProgressNotificationParams) {
	f, _ := ctx.Value(progressKey{}).(func(*sdkmcp.ProgressNotificationParams))
	return f
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
