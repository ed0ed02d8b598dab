package agent_test

import (
	"context"
	"encoding/json"
	"testing"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/agent"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

// BenchmarkDelegation measures the mesh's own cost per agent step in the
// two-agent delegation (A calls the planner on B, which calls the
// forecaster on C, which calls weather on D). The models are scripted and
// the leaf answers at once, so nearly all the time is the mesh's: the agent
// loop, the task layer, MCP over libp2p, and (with search) discovery.
//
//   - search: each agent searches the mesh, then calls (the forecaster
//     also describes first): 3 + 4 = 7 steps per request.
//   - refs: each agent calls a ref it knows, then answers: 2 + 2 = 4 steps.
//   - no-agents: the same three hops made by plain tools, for comparison.
func BenchmarkDelegation(b *testing.B) {
	b.Run("search", func(b *testing.B) {
		d := newDelegation(b, sunny, unlimited)
		benchRoot(b, d.a, d.b, "planner", 3+4)
	})
	b.Run("refs", func(b *testing.B) {
		d := &delegation{a: newNode(b, unlimited), b: newNode(b, unlimited), c: newNode(b, unlimited), d: newNode(b, unlimited)}
		node.AddTool(d.d, &sdkmcp.Tool{Name: "weather", Description: "Today's weather in a city."}, sunny)
		planner, forecaster := plannerConfig(), forecasterConfig()
		planner.Model.Script = []agent.ScriptStep{
			{Call: "call", Args: map[string]any{"ref": ref(d.c, "forecaster"), "arguments": map[string]any{"task": "{{task}}"}}},
			{Answer: "plan for {{task}}: {{last}}"},
		}
		forecaster.Model.Script = []agent.ScriptStep{
			{Call: "call", Args: map[string]any{"ref": ref(d.d, "weather"), "arguments": map[string]any{"city": "{{task}}"}}},
			{Answer: "forecast: {{last}}"},
		}
		if err := agent.Add(d.b, planner); err != nil {
			b.Fatal(err)
		}
		if err := agent.Add(d.c, forecaster); err != nil {
			b.Fatal(err)
		}
		connect(b, d.b, d.a)
		connect(b, d.c, d.b)
		connect(b, d.d, d.c)
		benchRoot(b, d.a, d.b, "planner", 2+2)
	})
	b.Run("no-agents", func(b *testing.B) {
		a, bn, c, dn := newNode(b, unlimited), newNode(b, unlimited), newNode(b, unlimited), newNode(b, unlimited)
		node.AddTool(dn, &sdkmcp.Tool{Name: "weather", Description: "Today's weather in a city."}, sunny)
		relay := func(self, next *node.Node, tool string) sdkmcp.ToolHandlerFor[cityIn, any] {
			return func(ctx context.Context, _ *sdkmcp.CallToolRequest, in cityIn) (*sdkmcp.CallToolResult, any, error) {
				res, err := self.CallServerTool(ctx, next.ID(), transport.DefaultServer, tool, in)
				return res, nil, err
			}
		}
		node.AddTool(c, &sdkmcp.Tool{Name: "forecaster", Description: "relay"}, relay(c, dn, "weather"))
		node.AddTool(bn, &sdkmcp.Tool{Name: "planner", Description: "relay"}, relay(bn, c, "forecaster"))
		connect(b, bn, a)
		connect(b, c, bn)
		connect(b, dn, c)
		benchRoot(b, a, bn, "planner", 0)
	})
}

// unlimited lifts the call rate limits (per peer and per principal), which a
// benchmark exceeds.
var unlimited = node.WithLimits(limits.Config{Rate: 1e9, Burst: 1 << 30, PrincipalRate: 1e9, PrincipalBurst: 1 << 30})

func ref(n *node.Node, tool string) string {
	return n.ID().String() + "/" + transport.DefaultServer + "/" + tool
}

// benchRoot calls tool on p from a, b.N times, and reports the time per
// agent step (steps per request).
func benchRoot(b *testing.B, a, p *node.Node, tool string, steps int) {
	ctx := context.Background()
	args := map[string]any{"task": "Lisbon"}
	if steps == 0 {
		args = map[string]any{"city": "Lisbon"}
	}
	call := func() {
		res, err := a.CallServerTool(ctx, p.ID(), transport.DefaultServer, tool, args)
		if err != nil || res.IsError {
			b.Fatalf("%s: %v %v", tool, err, res)
		}
	}
	call() // sessions open, tools listed, cards cached
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		call()
	}
	b.StopTimer()
	if steps > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(steps), "ns/step")
	}
}

// BenchmarkContextCost reports what a calling host pays in context: the
// bytes of the planner agent's definition as tools/list gives it, against
// the full definitions of every tool the two agents used (the forecaster
// agent and the weather tool, plus the three mesh tools their models were
// given: search, describe, call).
func BenchmarkContextCost(b *testing.B) {
	d := newDelegation(b, sunny)
	ctx := context.Background()
	def := func(p *node.Node, tool string) int {
		t, err := d.a.ResolveTool(ctx, p.ID(), tool)
		if err != nil {
			b.Fatal(err)
		}
		raw, err := json.Marshal(t.Tool)
		if err != nil {
			b.Fatal(err)
		}
		return len(raw)
	}
	var agentDef, usedDefs int
	for b.Loop() {
		agentDef = def(d.b, "planner")
		usedDefs = def(d.c, "forecaster") + def(d.d, "weather")
	}
	b.ReportMetric(float64(agentDef), "agent-def-bytes")
	b.ReportMetric(float64(usedDefs), "used-tool-defs-bytes")
	b.ReportMetric(float64(usedDefs+meshToolDefs(b, d.a)), "used+mesh-tool-defs-bytes")
}

// meshToolDefs returns the bytes of the gateway's three mesh tools as it
// lists them: the search, describe and call the agents' models are given.
func meshToolDefs(b *testing.B, n *node.Node) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, ct := sdkmcp.NewInMemoryTransports()
	ss, err := gateway.NewMeshServer(ctx, n, gateway.MeshOptions{}).Connect(ctx, st, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ss.Close()
	cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "host"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cs.Close()
	list, err := cs.ListTools(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := json.Marshal(list.Tools)
	if err != nil {
		b.Fatal(err)
	}
	return len(raw)
}
