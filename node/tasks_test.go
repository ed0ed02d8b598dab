package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// chainIn asks the chain tool to call chain on Path[0] with the rest of the
// path, and, at the end of the path, to do Leaf.
type chainIn struct {
	Path []string `json:"path,omitempty"`
	Leaf string   `json:"leaf,omitempty"` // "echo" (default), "sleep", "ask", "progress"
	Fan  []string `json:"fan,omitempty"`  // call chain with no path on each of these, at once
}

type chainOut struct {
	Task   string `json:"task"`
	Answer string `json:"answer,omitempty"`
}

// leafEvents lets a test see what the leaf handlers of a node saw.
type leafEvents struct {
	started chan string // task ID of a leaf that started
	ctxDone chan string // task ID of a leaf whose context ended
}

// addChain gives n the chain tool.
func addChain(t *testing.T, n *node.Node) *leafEvents {
	ev := &leafEvents{started: make(chan string, 2000), ctxDone: make(chan string, 2000)}
	node.AddTool(n, &sdkmcp.Tool{Name: "chain", Description: "calls along a path"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, in chainIn) (*sdkmcp.CallToolResult, any, error) {
			id, _ := node.CurrentTask(ctx)
			if len(in.Fan) > 0 {
				var wg sync.WaitGroup
				errs := make([]error, len(in.Fan))
				for i, p := range in.Fan {
					wg.Go(func() {
						res, err := n.CallServerTool(ctx, mustPeer(t, p), transport.DefaultServer, "chain", chainIn{Leaf: in.Leaf})
						if err == nil && res.IsError {
							err = fmt.Errorf("%s", text(res))
						}
						errs[i] = err
					})
				}
				wg.Wait()
				return nil, chainOut{Task: id}, errors.Join(errs...)
			}
			if len(in.Path) > 0 {
				res, err := n.CallServerTool(ctx, mustPeer(t, in.Path[0]), transport.DefaultServer, "chain", chainIn{Path: in.Path[1:], Leaf: in.Leaf})
				if err != nil {
					return nil, nil, err
				}
				return res, nil, nil // the child's result, as is
			}
			ev.started <- id
			switch in.Leaf {
			case "sleep":
				select {
				case <-ctx.Done():
					ev.ctxDone <- id
					return nil, nil, ctx.Err()
				case <-time.After(20 * time.Second):
				}
			case "progress", "ask":
				if tok := req.Params.GetProgressToken(); tok != nil {
					for i := range 3 {
						req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i + 1), Total: 3, Message: "step"})
					}
				}
				if in.Leaf == "ask" {
					r, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{Mode: "form", Message: "name?", RequestedSchema: nameSchema})
					if err != nil {
						return nil, nil, err
					}
					name, _ := r.Content["name"].(string)
					return nil, chainOut{Task: id, Answer: name}, nil
				}
			}
			return nil, chainOut{Task: id}, nil
		})
	return ev
}

func mustPeer(t *testing.T, s string) lpeer.ID {
	p, err := lpeer.Decode(s)
	if err != nil {
		t.Error(err)
	}
	return p
}

func text(res *sdkmcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*sdkmcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, " ")
}

// mesh starts k connected nodes (each connected to every other), each with
// the chain tool.
func mesh(t *testing.T, k int, opts ...node.Option) ([]*node.Node, []*leafEvents) {
	t.Helper()
	nodes := make([]*node.Node, k)
	events := make([]*leafEvents, k)
	for i := range nodes {
		nodes[i] = newNode(t, opts...)
		events[i] = addChain(t, nodes[i])
	}
	for i := range nodes {
		for j := i + 1; j < k; j++ {
			connect(t, nodes[i], nodes[j])
		}
	}
	return nodes, events
}

func ids(nodes ...*node.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.ID().String()
	}
	return out
}

func rootCall(t *testing.T, n *node.Node) tasks.Task {
	t.Helper()
	for _, tk := range n.Tasks() {
		if tk.Role == tasks.Call {
			return tk
		}
	}
	t.Fatalf("no root call on %s", n.ID())
	return tasks.Task{}
}

func waitUntil(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTaskChainIsOneTree(t *testing.T) {
	ns, _ := mesh(t, 4)
	a, b, c, d := ns[0], ns[1], ns[2], ns[3]
	ctx := ctxFor(t, 10*time.Second)
	res, err := a.CallServerTool(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c, d)})
	if err != nil || res.IsError {
		t.Fatalf("call: %v %v", err, res)
	}
	root := rootCall(t, a)
	if root.State != tasks.Completed || len(root.Children) != 1 {
		t.Fatalf("root call: %+v", root)
	}
	// Each hop's task has the same root, its caller's task as parent, and
	// the path so far.
	parent := root.ID
	for i, n := range []*node.Node{b, c, d} {
		list := n.Tasks()
		if len(list) != 1 {
			t.Fatalf("node %d has %d tasks, want 1", i+1, len(list))
		}
		tk := list[0]
		want := strings.Join(ids(ns[:i+1]...), ",")
		if tk.Root != root.ID || tk.Parent != parent || strings.Join(tk.Path, ",") != want || tk.State != tasks.Completed {
			t.Errorf("hop %d: %+v", i+1, tk)
		}
		if tk.Budget != tasks.DefaultBudget-i {
			t.Errorf("hop %d: budget %d, want %d", i+1, tk.Budget, tasks.DefaultBudget-i)
		}
		parent = tk.ID
	}
	tree, err := a.TaskTree(ctx, root.ID)
	if err != nil {
		t.Fatal(err)
	}
	depth := 0
	for n := tree; n != nil; depth++ {
		if n.Unreachable != "" || n.State != tasks.Completed {
			t.Errorf("tree node %+v", n)
		}
		if len(n.Children) == 0 {
			break
		}
		n = n.Children[0]
	}
	if depth != 3 {
		t.Errorf("tree depth %d, want 3 below the root", depth)
	}
}

func TestTaskFanOut(t *testing.T) {
	ns, _ := mesh(t, 4)
	a := ns[0]
	ctx := ctxFor(t, 10*time.Second)
	// A calls its own fan tool, which calls B, C and D at once.
	res, err := a.CallServerTool(ctx, a.ID(), transport.DefaultServer, "chain", chainIn{Fan: ids(ns[1:]...)})
	if err != nil || res.IsError {
		t.Fatalf("call: %v %v", err, text(res))
	}
	tree, err := a.TaskTree(ctx, rootCall(t, a).ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Children) != 1 || len(tree.Children[0].Children) != 3 {
		t.Fatalf("tree: %+v", tree)
	}
	seen := map[string]bool{}
	for _, c := range tree.Children[0].Children {
		if c.State != tasks.Completed || c.Unreachable != "" {
			t.Errorf("leaf %+v", c)
		}
		seen[c.Peer] = true
	}
	if len(seen) != 3 {
		t.Errorf("leaves on %d peers, want 3", len(seen))
	}
}

func TestTaskCancelAtRootReachesLeaf(t *testing.T) {
	ns, ev := mesh(t, 4)
	a, b, c, d := ns[0], ns[1], ns[2], ns[3]
	ctx := ctxFor(t, 20*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := a.CallServerTool(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c, d), Leaf: "sleep"})
		done <- err
	}()
	leaf := <-ev[3].started
	start := time.Now()
	if err := a.CancelTask(rootCall(t, a).ID); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-ev[3].ctxDone:
		if id != leaf {
			t.Errorf("leaf %s ended, want %s", id, leaf)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the leaf's context did not end after the root was cancelled")
	}
	t.Logf("cancel reached the leaf in %v", time.Since(start))
	if err := <-done; err == nil {
		t.Error("the cancelled call succeeded")
	}
	for i, n := range []*node.Node{a, b, c, d} {
		waitUntil(t, fmt.Sprintf("node %d's task cancelled", i), 5*time.Second, func() bool {
			for _, tk := range n.Tasks() {
				if tk.State != tasks.Cancelled {
					return false
				}
			}
			return true
		})
	}
}

// OnRootTask names the tree a call starts while it runs: the caller can
// cancel it before the call returns, and a call inside a task starts no tree.
func TestOnRootTaskNamesTheTreeWhileItRuns(t *testing.T) {
	ns, ev := mesh(t, 3)
	a, b, c := ns[0], ns[1], ns[2]
	started := make(chan string, 2)
	ctx := tasks.OnRootTask(ctxFor(t, 20*time.Second), func(id string) { started <- id })
	done := make(chan error, 1)
	go func() {
		_, err := a.CallServerTool(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c), Leaf: "sleep"})
		done <- err
	}()
	var root string
	select {
	case root = <-started:
	case err := <-done:
		t.Fatalf("the call ended (%v) and named no tree", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the call named no tree")
	}
	<-ev[2].started
	if tk, ok := a.Task(root); !ok || tk.Role != tasks.Call || tk.State != tasks.Working {
		t.Fatalf("task %s on the caller: %+v, %v; want a working root call", root, tk, ok)
	}
	if err := a.CancelTask(root); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ev[2].ctxDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the leaf's context did not end after the tree was cancelled")
	}
	if err := <-done; err == nil {
		t.Error("the cancelled call succeeded")
	}
	select {
	case id := <-started:
		t.Errorf("a second tree %s was reported (the calls below the root start none)", id)
	default:
	}
}

func TestTaskLeafKilledFailsRootNamingIt(t *testing.T) {
	ns, ev := mesh(t, 4)
	a, b, c, d := ns[0], ns[1], ns[2], ns[3]
	ctx := ctxFor(t, 30*time.Second)
	done := make(chan *sdkmcp.CallToolResult, 1)
	go func() {
		res, err := a.CallServerTool(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c, d), Leaf: "sleep"})
		if err != nil {
			res = &sdkmcp.CallToolResult{IsError: true, Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: err.Error()}}}
		}
		done <- res
	}()
	<-ev[3].started
	start := time.Now()
	d.Close()
	select {
	case res := <-done:
		took := time.Since(start)
		if !res.IsError || !strings.Contains(text(res), d.ID().String()) {
			t.Errorf("got %q, want a failure naming %s", text(res), d.ID())
		}
		rm, ok := tasks.DecodeResult(res.Meta)
		if !ok || rm.FailedAt == nil || rm.FailedAt.Peer != d.ID().String() || rm.FailedAt.Tool != "chain" {
			t.Errorf("result meta %+v, want it to name D's chain as where it failed", rm)
		}
		if took > 5*time.Second {
			t.Errorf("took %v", took)
		}
		t.Logf("A learnt of D's death in %v: %s", took, text(res))
	case <-time.After(10 * time.Second):
		t.Fatal("A's call did not fail after D died")
	}
}

func TestTaskLoopRefused(t *testing.T) {
	ns, _ := mesh(t, 2)
	a, b := ns[0], ns[1]
	ctx := ctxFor(t, 10*time.Second)
	res, err := a.CallServerTool(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(a)})
	if err != nil {
		t.Fatal(err)
	}
	msg := text(res)
	if !res.IsError || !strings.Contains(msg, "call loop") || !strings.Contains(msg, tasks.PathString(ids(a, b, a))) {
		t.Errorf("got %q, want a loop refused naming the path %s", msg, tasks.PathString(ids(a, b, a)))
	}
	for _, tk := range a.Tasks() {
		if tk.Role == tasks.Served {
			t.Errorf("A served the looping call: %+v", tk)
		}
	}
}

func TestTaskHopBudget(t *testing.T) {
	ns, ev := mesh(t, 4)
	a, b, c, d := ns[0], ns[1], ns[2], ns[3]
	ctx := tasks.WithHopBudget(ctxFor(t, 10*time.Second), 2)
	res, err := a.CallServerTool(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c, d)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError || !strings.Contains(text(res), "hop budget exhausted") {
		t.Errorf("got %q, want the budget to stop the third hop", text(res))
	}
	if len(d.Tasks()) != 0 || len(ev[3].started) != 0 {
		t.Error("D was called")
	}
	if len(c.Tasks()) != 1 {
		t.Error("C was not called")
	}
}

func TestTaskDeadlineExpiresAtLeaf(t *testing.T) {
	ns, ev := mesh(t, 4)
	a, b, c, d := ns[0], ns[1], ns[2], ns[3]
	// Each hop gives the next a tenth less time, measured from when the
	// request arrives: D gives up first only if each hop's request crosses
	// in less than that tenth. With 1.5 s the tenths were 150, 135 and
	// 121 ms, and a hop under -race on a loaded 2-core machine took longer
	// (C's deadline passed before D's, 2 in 30 runs); with 5 s they are
	// 500, 450 and 405 ms.
	const deadline = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	res, err := a.CallServerTool(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c, d), Leaf: "sleep"})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("want D's failure as a result, got error %v (after %v)", err, took)
	}
	rm, _ := tasks.DecodeResult(res.Meta)
	if !res.IsError || rm.FailedAt == nil || rm.FailedAt.Peer != d.ID().String() {
		t.Errorf("got %q (meta %+v), want D's deadline named", text(res), rm)
	}
	if took > deadline {
		t.Errorf("took %v, want D to give up before A's deadline", took)
	}
	<-ev[3].ctxDone
	waitUntil(t, "D's task failed", 2*time.Second, func() bool {
		l := d.Tasks()
		return len(l) == 1 && l[0].State == tasks.Failed && strings.Contains(l[0].Error, "deadline")
	})
	if dl := d.Tasks()[0].Deadline; dl.IsZero() || !dl.Before(b.Tasks()[0].Deadline) {
		t.Errorf("D's deadline %v is not before B's %v", dl, b.Tasks()[0].Deadline)
	}
}

// A leaf three hops down reports progress and asks A's user a question:
// the question reaches A; the progress is recorded on the leaf's task,
// increasing on the token its caller gave it even when, on 2026-07-28, the
// leaf runs again once answered and counts from 1 again (a value pushed
// past its total leaves the total unknown), and the hops above, which
// report none of their own, pass it up as it is: A reads the leaf's
// values, increasing, across the runs again of every hop (each adds up its
// calls anew: they repeat its first run's work).
func TestTaskProgressAndQuestionsFromLeaf(t *testing.T) {
	for _, version := range []string{directVersion, modernVersion} {
		t.Run(version, func(t *testing.T) {
			var asked atomic.Int32
			ns, _ := mesh(t, 4, node.WithProtocolVersion(version), node.WithElicitationHandler(
				func(_ context.Context, r *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
					asked.Add(1)
					return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Ada"}}, nil
				}))
			a, b, c, d := ns[0], ns[1], ns[2], ns[3]
			var atA progressLog
			ctx := tasks.WithProgress(ctxFor(t, 10*time.Second), atA.add)
			res, err := a.CallServerTool(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c, d), Leaf: "ask"})
			if err != nil || res.IsError {
				t.Fatalf("call: %v %v", err, text(res))
			}
			var out chainOut
			raw, _ := json.Marshal(res.StructuredContent)
			json.Unmarshal(raw, &out)
			if out.Answer != "Ada" {
				t.Errorf("D got answer %q, want Ada", out.Answer)
			}
			if asked.Load() == 0 {
				t.Error("A's user was never asked")
			}
			var leaf *tasks.Task
			for _, tk := range d.Tasks() {
				if tk.State == tasks.Completed {
					leaf = &tk
				}
			}
			if leaf == nil {
				t.Fatalf("D's tasks %+v, want one completed", d.Tasks())
			}
			p := leaf.Progress
			switch {
			case p == nil:
				t.Errorf("D's task recorded no progress")
			case version == directVersion && (p.Progress != 3 || p.Total != 3 || p.Message != "step"):
				t.Errorf("D's task: progress %+v, want 3/3 step", p)
			case version == modernVersion && (p.Progress <= 3 || p.Total != 0):
				t.Errorf("D's task, run again: progress %+v, want above 3 (kept increasing), total unknown", p)
			}
			got := atA.list()
			var seen []string
			for i, q := range got {
				seen = append(seen, fmt.Sprintf("%v/%v", q.Progress, q.Total))
				if i > 0 && q.Progress <= got[i-1].Progress {
					t.Errorf("A's progress went from %v to %v: %v", got[i-1].Progress, q.Progress, seen)
				}
			}
			if len(got) < 3 || p == nil || got[len(got)-1].Progress != p.Progress || got[len(got)-1].Total != p.Total {
				t.Errorf("A read %v, want the leaf's steps up to its last, %+v", seen, p)
			}
			if version == directVersion && strings.Join(seen, ",") != "1/3,2/3,3/3" {
				t.Errorf("A read %v, want the leaf's 1/3,2/3,3/3", seen)
			}
			if r := rootCall(t, a).Progress; r == nil || p == nil || r.Progress != p.Progress || r.Message != "step" {
				t.Errorf("root call progress %+v, want the leaf's last, %+v", r, p)
			}
		})
	}
}

func TestTaskOutlivesItsCall(t *testing.T) {
	ns, _ := mesh(t, 3)
	a, b, c := ns[0], ns[1], ns[2]
	ctx := ctxFor(t, 10*time.Second)
	callCtx, drop := context.WithCancel(ctx)
	ref, err := a.StartTask(callCtx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c)})
	drop() // the call is gone; the task is not
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.WaitTask(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != tasks.Completed || len(r.Result) == 0 {
		t.Fatalf("task ended %s: %+v", r.Status, r)
	}
	var res sdkmcp.CallToolResult
	if err := json.Unmarshal(r.Result, &res); err != nil || res.IsError {
		t.Fatalf("result %s: %v", r.Result, err)
	}
	if l := c.Tasks(); len(l) != 1 || l[0].Parent != ref.ID {
		t.Errorf("C's tasks %+v, want one child of %s", l, ref.ID)
	}
}

func TestTaskOutlivesItsCallCancelled(t *testing.T) {
	ns, ev := mesh(t, 3)
	a, b, c := ns[0], ns[1], ns[2]
	ctx := ctxFor(t, 10*time.Second)
	ref, err := a.StartTask(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c), Leaf: "sleep"})
	if err != nil {
		t.Fatal(err)
	}
	<-ev[2].started
	if err := a.CancelRemoteTask(ctx, ref); err != nil {
		t.Fatal(err)
	}
	r, err := a.WaitTask(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != tasks.Cancelled {
		t.Errorf("status %s, want cancelled", r.Status)
	}
	select {
	case <-ev[2].ctxDone:
	case <-time.After(5 * time.Second):
		t.Error("C's handler was not cancelled")
	}
}

func TestTaskThousandConcurrentNestedCalls(t *testing.T) {
	// A thousand calls in flight from one peer, for one principal: over the
	// default limits. Under the race detector on a busy 2-core machine a
	// ping can wait longer than the default 3 s behind them, and the
	// liveness check then closes a healthy connection (seen: 42 of 1000
	// calls completed): this test is about the calls, so pings get a minute.
	ns, _ := mesh(t, 3, node.WithLimits(limits.Config{MaxConcurrentPerPeer: -1, Rate: -1, MaxConcurrentPerPrincipal: -1, PrincipalRate: -1}),
		node.WithLivenessTimeout(time.Minute))
	a, b, c := ns[0], ns[1], ns[2]
	ctx := ctxFor(t, 60*time.Second)
	const calls = 1000
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range calls {
		wg.Go(func() {
			res, err := a.CallServerTool(ctx, b.ID(), transport.DefaultServer, "chain", chainIn{Path: ids(c)})
			if err != nil || res.IsError {
				if failed.Add(1) < 5 {
					t.Errorf("call: %v", err)
				}
			}
		})
	}
	wg.Wait()
	for i, n := range ns {
		list := n.Tasks()
		done := 0
		for _, tk := range list {
			if tk.State == tasks.Completed {
				done++
			}
		}
		if done != calls {
			t.Errorf("node %d: %d tasks completed (of %d kept), want %d", i, done, len(list), calls)
		}
	}
}

// TestTaskProgressComesBeforeTheResult: a tool that sends a burst of
// progress just before its result. The calling node passes every
// notification to the function that asked for them before the call
// returns, in order, and none comes after (MCP: progress stops at
// completion).
func TestTaskProgressComesBeforeTheResult(t *testing.T) {
	a, b := newNode(t), newNode(t)
	const burst = 200
	node.AddTool(b, &sdkmcp.Tool{Name: "busy"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, struct{}, error) {
		for i := 1; i <= burst; i++ {
			req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(),
				Progress: float64(i), Total: burst + 1, Message: "busy"})
		}
		err := req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(),
			Progress: burst + 1, Total: burst + 1, Message: "done"})
		return nil, struct{}{}, err
	})
	connect(t, a, b)

	var mu sync.Mutex
	var got []string
	ctx := tasks.WithProgress(ctxFor(t, 10*time.Second), func(p *sdkmcp.ProgressNotificationParams) {
		mu.Lock()
		got = append(got, p.Message)
		mu.Unlock()
	})
	for round := range 3 {
		mu.Lock()
		got = nil
		mu.Unlock()
		if _, err := a.CallTool(ctx, b.ID(), "node/busy", nil); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		atReturn := len(got)
		last := ""
		if atReturn > 0 {
			last = got[atReturn-1]
		}
		mu.Unlock()
		if atReturn != burst+1 || last != "done" {
			t.Fatalf("round %d: when the call returned A had %d notifications, the last %q; want %d, the last \"done\"",
				round, atReturn, last, burst+1)
		}
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		late := len(got) - atReturn
		mu.Unlock()
		if late != 0 {
			t.Fatalf("round %d: %d progress notifications came after the result", round, late)
		}
	}
}

// rawSession opens a session to b's default server from a raw identity,
// does the 2025-11-25 handshake, and returns a function that sends a frame
// and returns the answer to the request with the given id (its line).
func rawSession(t *testing.T, b *node.Node) (h host.Host, call func(id, frame string) string) {
	t.Helper()
	return rawSessionOn(t, b, transport.DefaultServer)
}

// rawSessionOn is rawSession on b's server called server.
func rawSessionOn(t *testing.T, b *node.Node, server string) (h host.Host, call func(id, frame string) string) {
	t.Helper()
	h = newNode(t).Host()
	if err := h.Connect(ctxFor(t, 3*time.Second), lpeer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctxFor(t, 3*time.Second), b.ID(), transport.ProtocolID(server))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	r := bufio.NewReader(s)
	call = func(id, frame string) string {
		t.Helper()
		if _, err := s.Write([]byte(frame + "\n")); err != nil {
			t.Fatal(err)
		}
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				t.Fatalf("no answer to %s: %v", id, err)
			}
			if bytes.HasPrefix(line, []byte(`{"jsonrpc":"2.0","id":`+id+`,`)) {
				return string(line)
			}
		}
	}
	call("0", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`+"\n"+
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return h, call
}

// A caller that writes a hop budget above the node's own default in its
// task context gets the node's (less the hops its path says were made);
// the task records what was claimed.
func TestClaimedHopBudgetIsClamped(t *testing.T) {
	b := newNode(t)
	h, call := rawSession(t, b)
	m := &tasks.Meta{ID: tasks.NewID(), Root: tasks.NewID(), Path: []string{h.ID().String()}, Budget: 1000}
	meta := map[string]any{}
	m.Encode(meta)
	params, _ := json.Marshal(map[string]any{"name": "echo", "arguments": map[string]any{"text": "x"}, "_meta": meta})
	if line := call("1", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":`+string(params)+"}"); !strings.Contains(line, `"result"`) {
		t.Fatalf("the call: %s", line)
	}
	got, ok := b.Task(m.ID)
	if !ok || got.Budget != tasks.DefaultBudget || got.BudgetClaimed != 1000 {
		t.Fatalf("task found %v, budget %d, claimed %d; want budget %d, 1000 claimed", ok, got.Budget, got.BudgetClaimed, tasks.DefaultBudget)
	}
}

// The task methods with no params (or null ones) are answered with an
// error, and the node goes on (FuzzServedSession found that tasks/get
// without params crashed the node).
func TestTaskMethodsWithoutParamsAreRefused(t *testing.T) {
	b := newNode(t)
	_, call := rawSession(t, b)
	for i, method := range []string{"tasks/get", "tasks/update", "tasks/cancel", "mcpmesh/tasks/tree"} {
		for j, params := range []string{``, `,"params":null`} {
			id := fmt.Sprint(10*i + j + 1)
			line := call(id, `{"jsonrpc":"2.0","id":`+id+`,"method":"`+method+`"`+params+`}`)
			if !strings.Contains(line, `"error"`) && !strings.Contains(line, `"resultType":"complete"`) {
				t.Errorf("%s%s: %s", method, params, line)
			}
		}
	}
	mustEcho(t, newConnected(t, b), b, "still serving")
}

func newConnected(t *testing.T, b *node.Node) *node.Node {
	a := newNode(t)
	connect(t, a, b)
	return a
}
