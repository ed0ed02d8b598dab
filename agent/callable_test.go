package agent_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/agent"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// weatherFrom is a weather tool that says which node answered.
func weatherFrom(name string) sdkmcp.ToolHandlerFor[cityIn, any] {
	return func(_ context.Context, _ *sdkmcp.CallToolRequest, in cityIn) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "sunny in " + in.City + " says " + name}}}, nil, nil
	}
}

// waitHits waits until n's search for query finds every ref of want.
func waitHits(t *testing.T, n *node.Node, query string, want ...string) {
	t.Helper()
	m := gateway.NewMesh(n, gateway.MeshOptions{SearchTimeout: time.Second})
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := m.Search(context.Background(), gateway.SearchIn{Query: query, Limit: 10})
		missing := slices.DeleteFunc(slices.Clone(want), func(ref string) bool {
			return slices.ContainsFunc(out.Hits, func(h gateway.Hit) bool { return h.Ref == ref })
		})
		if err == nil && len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not find %v: %+v %v", n.ID(), missing, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A scripted agent that calls the first hit of its search calls the first
// this node may call: a tool whose node's policy refuses this node, or
// whose node has gone, ranks first and is skipped, the search saying why;
// with none it may call, the agent says so.
func TestScriptedAgentCallsTheFirstHitItMayCall(t *testing.T) {
	// Cards outlive the test: a gone node's is still found.
	disc := fast
	disc.CardTTL = time.Minute
	a := newNode(t, node.WithDiscovery(disc))
	cfg := agent.Config{
		Name:        "forecast-desk",
		Description: "Finds a forecast tool and asks it.",
		Model: agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{
			{Call: "search", Args: map[string]any{"query": "weather"}},
			{Call: "call", Args: map[string]any{"ref": "{{last.hits.0.ref}}", "arguments": map[string]any{"city": "{{task}}"}}},
			{Answer: "{{last}}"},
		}},
		Capabilities: agent.Capabilities{Any: true},
	}
	if err := agent.Add(a, cfg); err != nil {
		t.Fatal(err)
	}
	waitFound(t, a, gateway.SearchIn{Query: "forecast"}, "forecast-desk")
	refusing := newNode(t, node.WithDiscovery(disc))
	gone := newNode(t, node.WithDiscovery(disc))
	good := newNode(t, node.WithDiscovery(disc))
	// "weather" matches the query better than "weather_report": the tools
	// a may not call rank first.
	node.AddTool(refusing, &sdkmcp.Tool{Name: "weather", Description: "Today's weather."}, weatherFrom("refusing"))
	node.AddTool(gone, &sdkmcp.Tool{Name: "weather", Description: "Today's weather."}, weatherFrom("gone"))
	node.AddTool(good, &sdkmcp.Tool{Name: "weather_report", Description: "Today's weather."}, weatherFrom("good"))
	// refusing lists its weather on its card (it grants it to good), not to a.
	p, err := policy.Parse([]byte(`{"grants":[{"peers":["` + good.ID().String() + `"],"server":"node","tools":["weather"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	refusing.SetPolicy(p)
	for _, n := range []*node.Node{refusing, gone, good} {
		connect(t, a, n)
	}
	ref := func(n *node.Node, tool string) string { return n.ID().String() + "/node/" + tool }
	waitHits(t, a, "weather", ref(refusing, "weather"), ref(gone, "weather"), ref(good, "weather_report"))
	gone.Close()
	waitHits(t, a, "weather", ref(gone, "weather")) // its card is still found

	res, err := a.CallTool(context.Background(), a.ID(), "forecast-desk", map[string]any{"task": "Braga"})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || text(res) != "sunny in Braga says good" {
		t.Fatalf("agent answered %q (error %v), want the good node's weather", text(res), res.IsError)
	}

	// With good gone too, no tool found is one a may call: the agent says so.
	good.Close()
	res, err = a.CallTool(context.Background(), a.ID(), "forecast-desk", map[string]any{"task": "Braga"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"the search found no tool this node may call", ref(refusing, "weather") + ": ", "policy does not grant it", ref(gone, "weather") + ": ", ref(good, "weather_report") + ": "}
	for _, w := range want {
		if !res.IsError || !strings.Contains(text(res), w) {
			t.Errorf("agent with no callable hit answered %q (error %v): want an error with %q", text(res), res.IsError, w)
		}
	}
}
