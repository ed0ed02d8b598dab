package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/node"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

var fast = discovery.Config{CardTTL: 10 * time.Second, RepublishEvery: time.Second, Debounce: 10 * time.Millisecond}

func newNode(t *testing.T, opts ...node.Option) *node.Node {
	t.Helper()
	n, err := node.New(append([]node.Option{node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithDiscovery(fast), node.WithOpen()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

type textIn struct {
	Text string `json:"text" jsonschema:"the text"`
}

// meshOf starts A (the gateway's node), B, C in a chain; C offers
// translate, tagged i18n. It returns an SDK client session to A's gateway.
func meshOf(t *testing.T, pins ...gateway.Pin) (*sdkmcp.ClientSession, *node.Node, *node.Node) {
	t.Helper()
	a, b, c := newNode(t), newNode(t), newNode(t, node.WithName("carol"))
	node.AddTool(c, &sdkmcp.Tool{Name: "translate", Description: "Translates English text into French.", Meta: sdkmcp.Meta{discovery.TagsMetaKey: []string{"i18n"}}},
		func(_ context.Context, _ *sdkmcp.CallToolRequest, in textIn) (*sdkmcp.CallToolResult, any, error) {
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "bonjour (" + in.Text + ")"}}}, nil, nil
		})
	ctx := context.Background()
	if _, err := b.Connect(ctx, a.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect(ctx, b.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	gctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	srv := gateway.NewMeshServer(gctx, a, gateway.MeshOptions{Pins: pins})
	st, ct := sdkmcp.NewInMemoryTransports()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "host"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs, a, c
}

func callJSON(t *testing.T, cs *sdkmcp.ClientSession, tool string, args any, out any) *sdkmcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdkmcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError {
		t.Fatalf("%s: %v", tool, res.Content[0].(*sdkmcp.TextContent).Text)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(res.Content[0].(*sdkmcp.TextContent).Text), out); err != nil {
			t.Fatalf("%s answered %v: %v", tool, res.Content, err)
		}
	}
	return res
}

func TestMeshModeSearchDescribeCall(t *testing.T) {
	cs, _, c := meshOf(t)
	ctx := context.Background()

	list, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(list)
	if len(list.Tools) != 3 || len(raw) > 2048 {
		t.Fatalf("mesh mode lists %d tools in %d bytes, want 3 in under 2 KB", len(list.Tools), len(raw))
	}

	var found gateway.SearchOut
	deadline := time.Now().Add(10 * time.Second)
	for {
		callJSON(t, cs, "mesh_search", map[string]any{"query": "french translate"}, &found)
		if len(found.Hits) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(found.Hits) == 0 || !strings.HasPrefix(found.Hits[0].Ref, c.ID().String()+"/node/translate") || found.Hits[0].Peer != "carol" {
		t.Fatalf("search = %+v", found)
	}
	var byTag gateway.SearchOut
	callJSON(t, cs, "mesh_search", map[string]any{"tags": []string{"i18n"}}, &byTag)
	if len(byTag.Hits) != 1 {
		t.Fatalf("tag search = %+v", byTag)
	}

	var desc gateway.DescribeOut
	callJSON(t, cs, "mesh_describe", map[string]any{"ref": found.Hits[0].Ref}, &desc)
	schema, _ := json.Marshal(desc.InputSchema)
	if !strings.Contains(string(schema), `"text"`) {
		t.Fatalf("describe = %+v", desc)
	}

	res := callJSON(t, cs, "mesh_call", map[string]any{"ref": found.Hits[0].Ref, "arguments": map[string]any{"text": "hello"}}, nil)
	if res.Content[0].(*sdkmcp.TextContent).Text != "bonjour (hello)" {
		t.Fatalf("call = %+v", res.Content)
	}
	res = callJSON(t, cs, "mesh_call", map[string]any{"ref": "any/translate", "arguments": map[string]any{"text": "hi"}}, nil)
	if res.Content[0].(*sdkmcp.TextContent).Text != "bonjour (hi)" {
		t.Fatalf("call any = %+v", res.Content)
	}
}

func TestMeshModeRefusesBadRefs(t *testing.T) {
	cs, _, _ := meshOf(t)
	for _, ref := range []string{"", "nopeer", "notapeer/echo", "any/no_such_tool"} {
		res, err := cs.CallTool(context.Background(), &sdkmcp.CallToolParams{Name: "mesh_call", Arguments: map[string]any{"ref": ref}})
		if err == nil && !res.IsError {
			t.Errorf("ref %q accepted", ref)
		}
	}
}

func TestPinnedToolIsFirstClass(t *testing.T) {
	// The pin names C's tool by C's peer ID, which the test knows only after
	// C starts: build the mesh, then a second gateway server with the pin.
	_, a, c := meshOf(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pin, err := gateway.ParsePin(c.ID().String() + "/translate")
	if err != nil {
		t.Fatal(err)
	}
	srv := gateway.NewMeshServer(ctx, a, gateway.MeshOptions{Pins: []gateway.Pin{pin}})
	st, ct := sdkmcp.NewInMemoryTransports()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "host"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Tools) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pin not listed: %d tools", len(list.Tools))
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "carol.translate", Arguments: map[string]any{"text": "pinned"}})
	if err != nil || res.IsError || res.Content[0].(*sdkmcp.TextContent).Text != "bonjour (pinned)" {
		t.Fatalf("pinned call: %+v %v", res, err)
	}
	for _, bad := range []string{"x", "a/b/c/d", "notapeer/tool"} {
		if _, err := gateway.ParsePin(bad); err == nil {
			t.Errorf("pin %q accepted", bad)
		}
	}
}

// mesh_call carries the host's progressToken to the tool it calls, and the
// tool's progress comes back on it, every notification before the result
// (as read off the wire, not as the host's SDK hands them out), on the
// stdio-like in-memory path as on Streamable HTTP, both protocol versions;
// the calling node records it on its task (the PROGRESS of `mcpmesh tasks`).
// The tool calls another, which reports steps of its own: those stay on
// its task, and the host's token carries the tool's own steps alone,
// increasing (before, they came up on it between the tool's, nudged). A
// thin wrapper (a tool that reports nothing of its own and calls the other)
// passes the other's steps up: through mesh_call and as a pinned tool, the
// host reads them (before, nothing).
func TestMeshCallForwardsTheHostsProgress(t *testing.T) {
	const steps = 3
	a, c, d := newNode(t), newNode(t), newNode(t)
	report := func(ctx context.Context, req *sdkmcp.CallToolRequest, i int, msg string) {
		req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Total: steps, Message: msg})
	}
	node.AddTool(d, &sdkmcp.Tool{Name: "deep"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		for i := 1; i <= steps; i++ {
			report(ctx, req, i, fmt.Sprintf("deep %d", i))
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "deep done"}}}, nil, nil
	})
	node.AddTool(c, &sdkmcp.Tool{Name: "steps"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		report(ctx, req, 1, "step 1")
		if res, err := c.CallTool(ctx, d.ID(), "node/deep", nil); err != nil || res.IsError {
			return nil, nil, fmt.Errorf("deep: %v", err)
		}
		for i := 2; i <= steps; i++ {
			report(ctx, req, i, fmt.Sprintf("step %d", i))
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "done"}}}, nil, nil
	})
	node.AddTool(c, &sdkmcp.Tool{Name: "wrap"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		res, err := c.CallTool(ctx, d.ID(), "node/deep", nil)
		return res, nil, err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Connect(ctx, c.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect(ctx, d.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	pin, err := gateway.ParsePin("wrapped=" + c.ID().String() + "/node/wrap")
	if err != nil {
		t.Fatal(err)
	}
	srv := gateway.NewMeshServer(ctx, a, gateway.MeshOptions{Pins: []gateway.Pin{pin}})
	defer srv.Close()
	h := gateway.NewHTTPHandler(a, gateway.HTTPOptions{MeshServer: srv.Server})
	hs := httptest.NewServer(h)
	defer func() { hs.CloseClientConnections(); hs.Close(); h.Close() }()

	transports := map[string]func() sdkmcp.Transport{
		"in-memory": func() sdkmcp.Transport {
			st, ct := sdkmcp.NewInMemoryTransports()
			ss, err := srv.Connect(ctx, st, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ss.Close() })
			return ct
		},
		"http": func() sdkmcp.Transport { return &sdkmcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"} },
	}
	for _, path := range []string{"in-memory", "http"} {
		for _, v := range []string{"2025-11-25", "2026-07-28"} {
			t.Run(path+"/"+v, func(t *testing.T) {
				var mu sync.Mutex
				var wire []string // what the host read, in order: "progress N" and "result"
				tr := sdkcompat.WatchReads(transports[path](), func(m jsonrpc.Message) {
					mu.Lock()
					defer mu.Unlock()
					switch m := m.(type) {
					case *jsonrpc.Request:
						var p sdkmcp.ProgressNotificationParams
						if m.Method == "notifications/progress" && json.Unmarshal(m.Params, &p) == nil && p.ProgressToken == "host-token" {
							wire = append(wire, fmt.Sprintf("progress %v %s", p.Progress, p.Message))
						}
					case *jsonrpc.Response:
						wire = append(wire, "result")
					}
				})
				cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "host"}, nil).Connect(ctx, tr, &sdkmcp.ClientSessionOptions{ProtocolVersion: v})
				if err != nil {
					t.Fatal(err)
				}
				defer cs.Close()
				waitForTool(ctx, t, cs, "wrapped")
				own := "progress 1 step 1,progress 2 step 2,progress 3 step 3,result"
				passed := "progress 1 deep 1,progress 2 deep 2,progress 3 deep 3,result"
				for _, call := range []struct {
					name, want string
					params     *sdkmcp.CallToolParams
				}{
					{"the pinned wrapper", passed, &sdkmcp.CallToolParams{Name: "wrapped"}},
					{"mesh_call of the wrapper", passed, &sdkmcp.CallToolParams{Name: "mesh_call", Arguments: map[string]any{"ref": c.ID().String() + "/node/wrap"}}},
					{"mesh_call of the tool with steps", own, &sdkmcp.CallToolParams{Name: "mesh_call", Arguments: map[string]any{"ref": c.ID().String() + "/node/steps"}}},
				} {
					call.params.Meta = sdkmcp.Meta{"progressToken": "host-token"}
					for i := range 5 { // a late notification is a race: several calls
						mu.Lock()
						wire = nil
						mu.Unlock()
						res, err := cs.CallTool(ctx, call.params)
						if err != nil || res.IsError {
							t.Fatalf("%s: %v %+v", call.name, err, res)
						}
						mu.Lock()
						got := strings.Join(wire, ",")
						mu.Unlock()
						if got != call.want {
							t.Fatalf("%s, call %d: the host read %s, want %s", call.name, i, got, call.want)
						}
					}
				}
			})
		}
	}
	// The calling node's task of the last call holds the progress it relayed;
	// the deep tool's task, its own.
	list := a.Tasks()
	last := list[len(list)-1]
	if last.Progress == nil || last.Progress.Progress != steps || last.Progress.Total != steps || last.Progress.Message != "step 3" {
		t.Errorf("the task of mesh_call on the gateway's node: progress %+v", last.Progress)
	}
	list = d.Tasks()
	last = list[len(list)-1]
	if last.Progress == nil || last.Progress.Progress != steps || last.Progress.Total != steps || last.Progress.Message != fmt.Sprintf("deep %d", steps) {
		t.Errorf("the task of the deep tool: progress %+v", last.Progress)
	}
	// The wrapper's task records what it passed up.
	for _, tk := range c.Tasks() {
		if tk.Tool == "wrap" && (tk.Progress == nil || tk.Progress.Progress != steps || tk.Progress.Message != fmt.Sprintf("deep %d", steps)) {
			t.Errorf("the wrapper's task %s: progress %+v", tk.ID, tk.Progress)
		}
	}
}

// waitForTool waits until the host's session lists the tool name (a pin
// is listed once its peer is found).
func waitForTool(ctx context.Context, t *testing.T, cs *sdkmcp.ClientSession, name string) {
	t.Helper()
	for {
		list, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tool := range list.Tools {
			if tool.Name == name {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s not listed: %v", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
