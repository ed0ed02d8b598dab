package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// relayChain starts A, B and C, A connected only to B, B re-sharing C's
// default server as "far".
func relayChain(t *testing.T, aOpts ...node.Option) (a, b, c *node.Node) {
	t.Helper()
	a, b, c = newNode(t, aOpts...), newNode(t), newNode(t)
	connect(t, b, c)
	connect(t, a, b)
	if err := b.SharePeer("far", c.ID(), transport.DefaultServer); err != nil {
		t.Fatal(err)
	}
	return a, b, c
}

func TestSharePeerRelaysCallsToTheFarNode(t *testing.T) {
	a, b, c := relayChain(t)
	ctx := context.Background()
	res, err := a.CallTool(ctx, b.ID(), "far/echo", map[string]string{"text": "through b"})
	if err != nil {
		t.Fatal(err)
	}
	out := res.StructuredContent.(map[string]any)
	// C sees the authenticated hop that reached it: B.
	if out["text"] != "through b" || out["caller"] != b.ID().String() {
		t.Fatalf("far/echo = %v", out)
	}
	if len(a.Host().Network().ConnsToPeer(c.ID())) != 0 {
		t.Fatal("A connected to C directly")
	}
	// The relayed server is listed, with C's tools under B's name for it.
	tools, err := a.ListTools(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, tl := range tools {
		refs = append(refs, tl.Ref())
	}
	if !strings.Contains(strings.Join(refs, ","), "far/echo") {
		t.Fatalf("tools of B = %v", refs)
	}
}

func TestSharePeerPassesQuestionsAndProgressBack(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	a, b, c := relayChain(t, node.WithElicitationHandler(func(_ context.Context, req *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
		mu.Lock()
		asked = append(asked, req.Params.Message)
		mu.Unlock()
		return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"ok": true}}, nil
	}))
	sdkmcp.AddTool(c.Server(), &sdkmcp.Tool{Name: "ask"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, any, error) {
		if tok := req.Params.GetProgressToken(); tok != nil {
			req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Total: 2, Message: "half"})
		}
		res, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{Message: "go on?", RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"ok": map[string]any{"type": "boolean"}}}})
		if err != nil {
			return nil, nil, err
		}
		caller, _ := identity.Remote(ctx)
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: res.Action + " via " + caller.String()}}}, nil, nil
	})
	var progress []string
	ctx := tasks.WithProgress(context.Background(), func(p *sdkmcp.ProgressNotificationParams) {
		mu.Lock()
		progress = append(progress, p.Message)
		mu.Unlock()
	})
	res, err := a.CallTool(ctx, b.ID(), "far/ask", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || res.Content[0].(*sdkmcp.TextContent).Text != "accept via "+b.ID().String() {
		t.Fatalf("far/ask = %+v", res.Content)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0] != "go on?" {
		t.Fatalf("A's user was asked %v", asked)
	}
	if len(progress) != 1 || progress[0] != "half" {
		t.Fatalf("A got progress %v", progress)
	}
}

func TestSharePeerRefusesALoopThroughTheRelay(t *testing.T) {
	a, b, c := relayChain(t)
	// C's tool calls back through B's relay to C itself: C→B→C.
	node.AddTool(c, &sdkmcp.Tool{Name: "boomerang"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, any, error) {
		res, err := c.CallTool(ctx, b.ID(), "far/echo", map[string]string{"text": "x"})
		if err != nil {
			return nil, nil, err
		}
		if res.IsError {
			return res, nil, nil
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "came back"}}}, nil, nil
	})
	connect(t, a, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := a.CallTool(ctx, c.ID(), "boomerang", nil)
	if err == nil && !res.IsError {
		t.Fatalf("loop C→B→C was not refused: %+v", res.Content)
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	} else {
		msg = res.Content[0].(*sdkmcp.TextContent).Text
	}
	if !strings.Contains(msg, "loop") && !strings.Contains(msg, "come back") {
		t.Fatalf("refusal does not say it is a loop: %s", msg)
	}
}

func TestUnsharePeerEndsRelayedSessions(t *testing.T) {
	a, b, _ := relayChain(t)
	ctx := context.Background()
	if _, err := a.CallTool(ctx, b.ID(), "far/echo", map[string]string{"text": "x"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Unshare("far"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "relayed call refused after unshare", func() bool {
		_, err := a.CallServerTool(ctx, b.ID(), "far", "echo", map[string]string{"text": "x"})
		return err != nil
	})
}

// A call relayed by --share-peer is a task of the relay: the root's tree
// shows the relay hop (not an unreachable one) with the call below it as
// its child, and the relay records the call's progress.
func TestSharePeerCallIsATaskInTheTree(t *testing.T) {
	a, b, c := relayChain(t)
	ev := addChain(t, c)
	ctx := tasks.WithProgress(ctxFor(t, 20*time.Second), func(*sdkmcp.ProgressNotificationParams) {})
	done := make(chan error, 1)
	go func() {
		_, err := a.CallServerTool(ctx, b.ID(), "far", "chain", chainIn{Leaf: "sleep"})
		done <- err
	}()
	leaf := <-ev.started
	root := rootCall(t, a)
	tree, err := a.TaskTree(ctx, root.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Children) != 1 {
		t.Fatalf("root has %d children, want the relay hop", len(tree.Children))
	}
	hop := tree.Children[0]
	if hop.Unreachable != "" || hop.Task.Peer != b.ID().String() || hop.Task.Role != tasks.Relayed || hop.Task.Target != c.ID().String() {
		t.Fatalf("relay hop in the tree: %+v (unreachable %q)", hop.Task, hop.Unreachable)
	}
	if len(hop.Children) != 1 || hop.Children[0].Task.ID != leaf || hop.Children[0].Task.Peer != c.ID().String() {
		t.Fatalf("below the relay hop: %+v, want C's task %s", hop.Children, leaf)
	}
	// Cancelled at the relay: C's handler is cancelled, A's call fails
	// saying where.
	if err := b.CancelTask(hop.Task.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-ev.ctxDone:
		if id != leaf {
			t.Errorf("leaf %s ended, want %s", id, leaf)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling the relay's task did not reach the leaf")
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "cancelled") || !strings.Contains(err.Error(), b.ID().String()) {
		t.Errorf("A's call after the relay's task was cancelled: %v, want a cancellation naming B", err)
	}
	waitUntil(t, "the relay's task cancelled", 5*time.Second, func() bool {
		tk, ok := b.Task(hop.Task.ID)
		return ok && tk.State == tasks.Cancelled
	})
}

// The relay records the progress of the calls it relays, and the call's
// result ends its task.
func TestSharePeerRecordsProgress(t *testing.T) {
	a, b, c := relayChain(t)
	addChain(t, c)
	ctx := tasks.WithProgress(ctxFor(t, 20*time.Second), func(*sdkmcp.ProgressNotificationParams) {})
	if _, err := a.CallServerTool(ctx, b.ID(), "far", "chain", chainIn{Leaf: "progress"}); err != nil {
		t.Fatal(err)
	}
	var relayed tasks.Task
	for _, tk := range b.Tasks() {
		if tk.Role == tasks.Relayed {
			relayed = tk
		}
	}
	if relayed.State != tasks.Completed || relayed.Progress == nil || relayed.Progress.Progress != 3 || relayed.Progress.Total != 3 {
		t.Fatalf("relay's task: %+v, want completed with progress 3/3", relayed)
	}
	if relayed.Caller != a.ID().String() || relayed.Server != "far" || relayed.Tool != "chain" {
		t.Errorf("relay's task: %+v", relayed)
	}
}

// A raw caller that writes a hop budget of 1000 in its task context, on a
// server shared through a relay (B re-sharing C's): the relay holds it to
// its own limit, as a node serving the call would. The relay's task
// records the claim, and the context it passes on to C carries the
// relay's budget less one hop, so C's task has no claim to clamp; with a
// path that says 8 hops were made, the relay refuses the call whatever
// budget it claims.
func TestSharePeerHoldsAClaimedHopBudget(t *testing.T) {
	_, b, c := relayChain(t)
	h, call := rawSessionOn(t, b, "far")
	attacker := h.ID().String()
	send := func(id string, m *tasks.Meta) string {
		t.Helper()
		meta := map[string]any{}
		m.Encode(meta)
		params, _ := json.Marshal(map[string]any{"name": "echo", "arguments": map[string]any{"text": "x"}, "_meta": meta})
		return call(id, `{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":`+string(params)+"}")
	}

	m := &tasks.Meta{ID: tasks.NewID(), Root: tasks.NewID(), Path: []string{attacker}, Budget: 1000}
	if line := send("1", m); !strings.Contains(line, `"result"`) || strings.Contains(line, `"isError":true`) {
		t.Fatalf("the call: %s", line)
	}
	relayed, ok := b.Task(m.ID)
	if !ok || relayed.Role != tasks.Relayed || relayed.Budget != tasks.DefaultBudget || relayed.BudgetClaimed != 1000 {
		t.Fatalf("the relay's task: found %v, role %s, budget %d, claimed %d; want relayed, budget %d, 1000 claimed",
			ok, relayed.Role, relayed.Budget, relayed.BudgetClaimed, tasks.DefaultBudget)
	}
	if len(relayed.Children) != 1 {
		t.Fatalf("the relay's task has children %+v, want the call passed on", relayed.Children)
	}
	below, ok := c.Task(relayed.Children[0].Task)
	if !ok || below.Budget != tasks.DefaultBudget-1 || below.BudgetClaimed != 0 {
		t.Errorf("C's task: found %v, budget %d, claimed %d; want budget %d, nothing more claimed",
			ok, below.Budget, below.BudgetClaimed, tasks.DefaultBudget-1)
	}

	// A path that says the tree has made its hops: refused at the relay.
	path := []string{}
	for i := range tasks.DefaultBudget {
		path = append(path, fmt.Sprintf("earlier-hop-%d", i))
	}
	m = &tasks.Meta{ID: tasks.NewID(), Root: tasks.NewID(), Path: append(path, attacker), Budget: 1000}
	if line := send("2", m); !strings.Contains(line, `"error"`) || !strings.Contains(line, "hop budget exhausted") {
		t.Errorf("a call with its hops made, claiming 1000 more: %s", line)
	}
	if _, ok := c.Task(m.ID); ok {
		t.Error("C holds a task for the refused call")
	}
	for _, tk := range c.Tasks() {
		if tk.Root == m.Root {
			t.Errorf("the refused call reached C: %+v", tk)
		}
	}
}
