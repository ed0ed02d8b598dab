package node_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/tasks"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

// hopIn asks the hop tool to call hop on Next[0] with the rest, between
// its own steps.
type hopIn struct {
	Next []string `json:"next,omitempty"`
}

// hopSteps is how many steps each hop reports.
const hopSteps = 3

// addHop gives n the hop tool, named name in its progress messages: it
// reports step 1 of 3, calls the next hop (if any), then reports steps 2
// and 3. Every hop counts 1, 2, 3 on its own: passed up under one token,
// the steps of different depths would interleave.
func addHop(t *testing.T, n *node.Node, name string) {
	node.AddTool(n, &sdkmcp.Tool{Name: "hop", Description: "reports its steps around a call to the next hop"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, in hopIn) (*sdkmcp.CallToolResult, any, error) {
			step := func(i int) {
				if tok := req.Params.GetProgressToken(); tok != nil {
					req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok,
						Progress: float64(i), Total: hopSteps, Message: hopMessage(name, i)})
				}
			}
			step(1)
			if len(in.Next) > 0 {
				res, err := n.CallServerTool(ctx, mustPeer(t, in.Next[0]), transport.DefaultServer, "hop", hopIn{Next: in.Next[1:]})
				if err != nil {
					return nil, nil, err
				}
				if res.IsError {
					return res, nil, nil
				}
			}
			step(2)
			step(3)
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: name + " done"}}}, nil, nil
		})
}

func hopMessage(name string, step int) string {
	return fmt.Sprintf("%s: step %d/%d", name, step, hopSteps)
}

// progressLog collects the progress notifications a root call receives.
type progressLog struct {
	mu  sync.Mutex
	got []sdkmcp.ProgressNotificationParams
}

func (l *progressLog) add(p *sdkmcp.ProgressNotificationParams) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, *p)
}

func (l *progressLog) list() []sdkmcp.ProgressNotificationParams {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sdkmcp.ProgressNotificationParams(nil), l.got...)
}

// A 3-hop call (A → B → C → D) whose every hop reports progress, made
// directly and through a relay (R re-sharing B's server: A → R → B → C →
// D): the root's token carries B's own steps, exactly as B reported them,
// increasing; C's and D's are recorded on their own tasks, where the task
// tree shows them (before, every depth's steps came up under the root's
// token, nudged to keep increasing: A read "B: step 1/3, C: step 1/3, D:
// step 1..3/3, C: step 2/3 …" and its task showed "3/3 B: step 3/3" at
// 3.004 with no total).
func TestProgressOfEachHopStaysOnItsTask(t *testing.T) {
	for _, relayed := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "relayed"}[relayed], func(t *testing.T) {
			a, b, c, d := newNode(t), newNode(t), newNode(t), newNode(t)
			names := map[string]*node.Node{"B": b, "C": c, "D": d}
			for name, n := range names {
				addHop(t, n, name)
			}
			connect(t, b, c)
			connect(t, c, d)
			first, server := b, transport.DefaultServer
			levels := []string{"B", "C", "D"}
			if relayed {
				r := newNode(t)
				connect(t, r, b)
				if err := r.SharePeer("viab", b.ID(), transport.DefaultServer); err != nil {
					t.Fatal(err)
				}
				names["R"] = r
				first, server = r, "viab"
				levels = append([]string{"R"}, levels...)
			}
			connect(t, a, first)

			var log progressLog
			var root string
			ctx := ctxFor(t, 10*time.Second)
			pctx := tasks.OnRootTask(tasks.WithProgress(ctx, log.add), func(id string) { root = id })
			res, err := a.CallServerTool(pctx, first.ID(), server, "hop", hopIn{Next: ids(c, d)})
			if err != nil || res.IsError {
				t.Fatalf("call: %v %v", err, text(res))
			}

			// The root's token: B's own steps, as B sent them, and nothing else.
			got := log.list()
			var seen []string
			for i, p := range got {
				seen = append(seen, fmt.Sprintf("%v/%v %q", p.Progress, p.Total, p.Message))
				if i > 0 && p.Progress <= got[i-1].Progress {
					t.Errorf("the root's progress went from %v to %v", got[i-1].Progress, p.Progress)
				}
			}
			var want []string
			for i := 1; i <= hopSteps; i++ {
				want = append(want, fmt.Sprintf("%v/%v %q", i, hopSteps, hopMessage("B", i)))
			}
			if strings.Join(seen, ", ") != strings.Join(want, ", ") {
				t.Errorf("the root's token carried\n  %s\nwant B's own steps\n  %s", strings.Join(seen, "\n  "), strings.Join(want, "\n  "))
			}

			// Each hop's progress, on its own task in the tree; the relay's
			// task is B's work passed through, the root call's too.
			tree, err := a.TaskTree(ctx, root)
			if err != nil {
				t.Fatal(err)
			}
			last := func(name string) tasks.Progress {
				if name == "R" {
					name = "B"
				}
				return tasks.Progress{Progress: hopSteps, Total: hopSteps, Message: hopMessage(name, hopSteps)}
			}
			check := func(what string, tk *tracker.TaskTree, want tasks.Progress) {
				t.Helper()
				p := tk.Progress
				if p == nil || p.Progress != want.Progress || p.Total != want.Total || p.Message != want.Message {
					t.Errorf("%s (%s/%s on %s): progress %+v, want %v/%v %q", what, tk.Server, tk.Tool, tk.Peer, p, want.Progress, want.Total, want.Message)
				}
			}
			check("the root call", tree, last("B"))
			at := tree
			for _, name := range levels {
				if len(at.Children) != 1 {
					t.Fatalf("the tree below %s has %d children, want 1", at.Peer, len(at.Children))
				}
				at = at.Children[0]
				if at.Peer != names[name].ID().String() {
					t.Fatalf("the task of %s is on %s", name, at.Peer)
				}
				check("the task on "+name, at, last(name))
			}
		})
	}
}

// wrapIn asks the wrap tool to call hop on Next[0] (with the rest of
// Next) Times times, one after another.
type wrapIn struct {
	Next  []string `json:"next"`
	Times int      `json:"times,omitempty"`
}

// addWrapper gives n the wrap tool: a thin wrapper, which reports no
// progress of its own and calls the hop tool on the next node.
func addWrapper(t *testing.T, n *node.Node) {
	node.AddTool(n, &sdkmcp.Tool{Name: "wrap", Description: "calls hop on the next node, reporting nothing of its own"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, in wrapIn) (*sdkmcp.CallToolResult, any, error) {
			for range max(in.Times, 1) {
				res, err := n.CallServerTool(ctx, mustPeer(t, in.Next[0]), transport.DefaultServer, "hop", hopIn{Next: in.Next[1:]})
				if err != nil {
					return nil, nil, err
				}
				if res.IsError {
					return res, nil, nil
				}
			}
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "wrapped"}}}, nil, nil
		})
}

// A thin wrapper (B: its handler reports no progress of its own and calls
// C, which reports steps 1, 2 and 3 of 3) passes the progress of its call
// up on its caller's token: the root reads C's steps, as C reported them,
// increasing, directly and through a relay (R re-sharing B's server); calls
// made one after another add up (the second call's steps count on from the
// first's: 4/6, 5/6, 6/6). B's task records what it passed, C's its own.
// Before, the root read nothing at all while C reported its steps.
func TestProgressOfAThinWrapperReachesItsCaller(t *testing.T) {
	for _, tc := range []struct {
		name    string
		relayed bool
		times   int
	}{{"direct", false, 1}, {"two calls one after another", false, 2}, {"relayed", true, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c := newNode(t), newNode(t), newNode(t)
			addWrapper(t, b)
			addHop(t, c, "C")
			connect(t, b, c)
			first, server := b, transport.DefaultServer
			if tc.relayed {
				r := newNode(t)
				connect(t, r, b)
				if err := r.SharePeer("viab", b.ID(), transport.DefaultServer); err != nil {
					t.Fatal(err)
				}
				first, server = r, "viab"
			}
			connect(t, a, first)

			var log progressLog
			var root string
			ctx := ctxFor(t, 10*time.Second)
			pctx := tasks.OnRootTask(tasks.WithProgress(ctx, log.add), func(id string) { root = id })
			res, err := a.CallServerTool(pctx, first.ID(), server, "wrap", wrapIn{Next: ids(c), Times: tc.times})
			if err != nil || res.IsError {
				t.Fatalf("call: %v %v", err, text(res))
			}

			// The root's token: C's steps, counted on across calls.
			var seen, want []string
			for _, p := range log.list() {
				seen = append(seen, fmt.Sprintf("%v/%v %q", p.Progress, p.Total, p.Message))
			}
			for call := range tc.times {
				for i := 1; i <= hopSteps; i++ {
					want = append(want, fmt.Sprintf("%v/%v %q", call*hopSteps+i, (call+1)*hopSteps, hopMessage("C", i)))
				}
			}
			if strings.Join(seen, ", ") != strings.Join(want, ", ") {
				t.Errorf("the root's token carried\n  %s\nwant C's steps\n  %s", strings.Join(seen, "\n  "), strings.Join(want, "\n  "))
			}

			// The tree: the root call, the relay's task and B's show what B
			// passed up; C's task its own steps.
			tree, err := a.TaskTree(ctx, root)
			if err != nil {
				t.Fatal(err)
			}
			passed := tasks.Progress{Progress: float64(tc.times * hopSteps), Total: float64(tc.times * hopSteps), Message: hopMessage("C", hopSteps)}
			own := tasks.Progress{Progress: hopSteps, Total: hopSteps, Message: hopMessage("C", hopSteps)}
			check := func(what string, tk *tracker.TaskTree, want tasks.Progress) {
				t.Helper()
				p := tk.Progress
				if p == nil || p.Progress != want.Progress || p.Total != want.Total || p.Message != want.Message {
					t.Errorf("%s (%s/%s on %s): progress %+v, want %v/%v %q", what, tk.Server, tk.Tool, tk.Peer, p, want.Progress, want.Total, want.Message)
				}
			}
			check("the root call", tree, passed)
			at := tree
			levels := []string{"B"}
			if tc.relayed {
				levels = []string{"R", "B"}
			}
			for _, name := range levels {
				if len(at.Children) != 1 {
					t.Fatalf("the tree below %s has %d children, want 1", at.Peer, len(at.Children))
				}
				at = at.Children[0]
				check("the task on "+name, at, passed)
			}
			if len(at.Children) != tc.times {
				t.Fatalf("B's task has %d children, want %d", len(at.Children), tc.times)
			}
			for _, ct := range at.Children {
				check("C's task", ct, own)
			}
		})
	}
}
