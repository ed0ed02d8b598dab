package passthrough

import (
	"context"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
)

// A client nobody here wrote, with its default options: mark3labs/mcp-go
// v1.x, whose default is 2026-07-28 (it probes server/discover and falls back
// to initialize only for a server that does not speak 2026-07-28), connects
// to the gateway's mesh mode (/mcp) and to one server two hops away
// (/mcp/PEER/SERVER), and uses each.
func TestMCPGoClientDefaultOptions(t *testing.T) {
	everything := everythingProgram(t)
	fixture := fixtureProgram(t)
	m := startMesh(t, share{name: "fixture", command: fixture.command()}, share{name: "everything", command: everything.command()})

	connect := func(t *testing.T, url string) (*mcpclient.Client, *mcpgo.InitializeResult) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := mcpclient.NewStreamableHttpClient(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Start(ctx); err != nil {
			t.Fatalf("start: %v", err)
		}
		init := mcpgo.InitializeRequest{}
		init.Params.ClientInfo = mcpgo.Implementation{Name: "mcp-go-client", Version: "1.0.0"}
		res, err := c.Initialize(ctx, init)
		if err != nil {
			t.Fatalf("initialize %s: %v", url, err)
		}
		return c, res
	}
	callText := func(t *testing.T, c *mcpclient.Client, name string, args map[string]any) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req := mcpgo.CallToolRequest{}
		req.Params.Name = name
		req.Params.Arguments = args
		res, err := c.CallTool(ctx, req)
		if err != nil {
			t.Fatalf("call %s: %v", name, err)
		}
		var parts []string
		for _, content := range res.Content {
			if tc, ok := content.(mcpgo.TextContent); ok {
				parts = append(parts, tc.Text)
			}
		}
		if res.IsError {
			t.Fatalf("call %s: tool error %q", name, parts)
		}
		return strings.Join(parts, "")
	}
	listTools := func(t *testing.T, c *mcpclient.Client) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := c.ListTools(ctx, mcpgo.ListToolsRequest{})
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		var names []string
		for _, tl := range res.Tools {
			names = append(names, tl.Name)
		}
		return names
	}

	// The gateway's own server is the official Go SDK's, which speaks
	// 2026-07-28: the client must settle on it.
	t.Run("mesh-mode", func(t *testing.T) {
		c, _ := connect(t, m.a.http)
		if v := c.ProtocolVersion(); v != v20260728 {
			t.Errorf("/mcp: negotiated %q, want %s (the gateway's SDK speaks it)", v, v20260728)
		}
		if got := strings.Join(listTools(t, c), ","); !strings.Contains(got, "mesh_call") {
			t.Fatalf("/mcp lists %s", got)
		}
		if got := callText(t, c, "mesh_call", map[string]any{"ref": m.b.id + "/node/echo", "arguments": map[string]any{"text": "from mcp-go"}}); got != "from mcp-go" {
			t.Errorf("mesh_call echo = %q", got)
		}
	})
	// The fixture (Go SDK v1.8.0) speaks 2026-07-28: directly, this client
	// would use it; through the mesh it must too.
	t.Run("transparent-2026", func(t *testing.T) {
		c, res := connect(t, m.url("fixture"))
		if v := c.ProtocolVersion(); v != v20260728 {
			t.Errorf("/mcp/PEER/fixture: negotiated %q, want %s (what the program speaks)", v, v20260728)
		}
		if res.ServerInfo.Name != "mcp-conformance-test-server" {
			t.Errorf("/mcp/PEER/fixture: serverInfo.name %q, want the program's %q", res.ServerInfo.Name, "mcp-conformance-test-server")
		}
		if got := callText(t, c, "test_simple_text", map[string]any{}); got != "This is a simple text response for testing." {
			t.Errorf("test_simple_text = %q", got)
		}
	})
	// server-everything (TypeScript SDK) speaks 2025-11-25 at most: the
	// client falls back to initialize, as it would directly.
	t.Run("transparent-2025", func(t *testing.T) {
		c, res := connect(t, m.url("everything"))
		if v := c.ProtocolVersion(); v != v20251125 {
			t.Errorf("/mcp/PEER/everything: negotiated %q, want %s (the newest the program speaks)", v, v20251125)
		}
		if res.ServerInfo.Name != "mcp-servers/everything" {
			t.Errorf("/mcp/PEER/everything: serverInfo.name %q, want the program's %q", res.ServerInfo.Name, "mcp-servers/everything")
		}
		if got := callText(t, c, "echo", map[string]any{"message": "hi"}); !strings.Contains(got, "hi") {
			t.Errorf("echo = %q", got)
		}
	})
}
