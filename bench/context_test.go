package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/node"
)

// Context cost: what an MCP host pays, in bytes of its context, to use a
// mesh whose nodes share 200 tools: mesh mode's fixed tool list, and one
// search plus one describe, against listing all 200 tools (transparent
// aggregation).

const (
	contextNodes        = 4
	contextToolsPerNode = 50
)

type contextCost struct {
	meshList, fullList, search, describe int
}

// toolArgs is a typical tool input: three documented fields.
type toolArgs struct {
	Repository string `json:"repository" jsonschema:"the repository, as owner/name"`
	Query      string `json:"query" jsonschema:"words to look for"`
	Limit      int    `json:"limit,omitempty" jsonschema:"most results to return"`
}

func measureContextCost(tb testing.TB) contextCost {
	tb.Helper()
	ctx := context.Background()
	cfg := discovery.Config{CardTTL: time.Minute, Debounce: 10 * time.Millisecond}
	gw := newNode(tb, node.WithDiscovery(cfg))
	var last *node.Node
	for i := range contextNodes {
		n := newNode(tb, node.WithDiscovery(cfg), node.WithName(fmt.Sprintf("team%d", i)))
		for j := range contextToolsPerNode {
			node.AddTool(n, &sdkmcp.Tool{
				Name: fmt.Sprintf("service%d_operation%d", i, j),
				Description: fmt.Sprintf("Runs operation %d of service %d against a repository: looks up the items that match the query "+
					"and returns them with their identifiers, titles, states and links. Use it when the user asks about service %d.", j, i, i),
			}, func(context.Context, *sdkmcp.CallToolRequest, toolArgs) (*sdkmcp.CallToolResult, any, error) {
				return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "ok"}}}, nil, nil
			})
		}
		if _, err := n.Connect(ctx, gw.Addrs()[0].String()); err != nil {
			tb.Fatal(err)
		}
		last = n
	}

	// Transparent aggregation: every tool of every node, as one list.
	var all []*sdkmcp.Tool
	for _, p := range gw.Host().Network().Peers() {
		tools, err := gw.ListTools(ctx, p)
		if err != nil {
			tb.Fatal(err)
		}
		for _, t := range tools {
			if t.Server == "node" && t.Name != "echo" {
				all = append(all, t.Tool)
			}
		}
	}
	if len(all) != contextNodes*contextToolsPerNode {
		tb.Fatalf("aggregated %d tools, want %d", len(all), contextNodes*contextToolsPerNode)
	}
	full, _ := json.Marshal(&sdkmcp.ListToolsResult{Tools: all})

	srv := gateway.NewMeshServer(ctx, gw, gateway.MeshOptions{})
	st, ct := sdkmcp.NewInMemoryTransports()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ss.Close() })
	cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "host"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cs.Close() })
	list, err := cs.ListTools(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	meshList, _ := json.Marshal(list)

	// One task: find the tool for "service 3, operation 17", read its schema.
	want := fmt.Sprintf("service%d_operation17", contextNodes-1)
	var search []byte
	var hits gateway.SearchOut
	for deadline := time.Now().Add(10 * time.Second); ; {
		res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "mesh_search", Arguments: map[string]any{"query": want}})
		if err != nil || res.IsError {
			tb.Fatalf("search: %v %v", err, res)
		}
		search, _ = json.Marshal(res)
		json.Unmarshal([]byte(res.Content[0].(*sdkmcp.TextContent).Text), &hits)
		if len(hits.Hits) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(hits.Hits) == 0 || hits.Hits[0].Ref != last.ID().String()+"/node/"+want {
		tb.Fatalf("search for %s: %+v", want, hits)
	}
	res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "mesh_describe", Arguments: map[string]any{"ref": hits.Hits[0].Ref}})
	if err != nil || res.IsError {
		tb.Fatalf("describe: %v %v", err, res)
	}
	describe, _ := json.Marshal(res)
	return contextCost{meshList: len(meshList), fullList: len(full), search: len(search), describe: len(describe)}
}

// BenchmarkContextCost reports the bytes (and tokens, bytes/4) a host
// receives: mesh mode's tools/list, the aggregated tools/list of all 200
// tools, and one search plus one describe.
func BenchmarkContextCost(b *testing.B) {
	c := measureContextCost(b)
	for b.Loop() {
	}
	b.ReportMetric(float64(c.meshList), "mesh-list-bytes")
	b.ReportMetric(float64(c.fullList), "all-200-list-bytes")
	b.ReportMetric(float64(c.search+c.describe), "search+describe-bytes")
	b.ReportMetric(float64(c.meshList)/4, "mesh-list-tokens")
	b.ReportMetric(float64(c.fullList)/4, "all-200-list-tokens")
}

// The targets are sizes, not times: checked by a plain test.
func TestContextCost(t *testing.T) {
	c := measureContextCost(t)
	t.Logf("tools/list: mesh mode %d bytes (~%d tokens), all %d tools %d bytes (~%d tokens); search %d + describe %d = %d bytes",
		c.meshList, c.meshList/4, contextNodes*contextToolsPerNode, c.fullList, c.fullList/4, c.search, c.describe, c.search+c.describe)
	if c.meshList >= 2048 {
		t.Errorf("mesh mode tools/list is %d bytes, want under 2 KB", c.meshList)
	}
	if c.search+c.describe >= 3072 {
		t.Errorf("search plus describe is %d bytes, want under 3 KB", c.search+c.describe)
	}
}
