package node_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/mcp/upstream"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// stdioServerEnv makes the test binary run as a stdio MCP server program:
// a real separate process that the node starts, talks to and restarts.
const stdioServerEnv = "MCPMESH_TEST_STDIO_SERVER"

type addIn struct {
	A int `json:"a"`
	B int `json:"b"`
}

type slowIn struct {
	Steps int `json:"steps"`
}

type confirmIn struct {
	Question string `json:"question"`
}

func runStdioServer() {
	var s *sdkmcp.Server
	s = sdkmcp.NewServer(&sdkmcp.Implementation{Name: "calc", Version: "1"}, &sdkmcp.ServerOptions{
		CompletionHandler: func(_ context.Context, req *sdkmcp.CompleteRequest) (*sdkmcp.CompleteResult, error) {
			return &sdkmcp.CompleteResult{Completion: sdkmcp.CompletionResultDetails{Values: []string{req.Params.Argument.Value + "00"}}}, nil
		},
		SubscribeHandler:   func(context.Context, *sdkmcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *sdkmcp.UnsubscribeRequest) error { return nil },
	})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "touch", Description: "logs, and updates the readme resource"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, any, error) {
			req.Session.Log(ctx, &sdkmcp.LoggingMessageParams{Level: "info", Logger: "calc", Data: "touched"})
			s.ResourceUpdated(ctx, &sdkmcp.ResourceUpdatedNotificationParams{URI: "calc://readme"})
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "touched"}}}, nil, nil
		})
	// The program uses mcpmesh's helper to ask its caller, so that it works
	// on either protocol version.
	s.AddReceivingMiddleware(ask.NewInputs().Middleware())
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "add", Description: "adds two numbers"},
		func(_ context.Context, _ *sdkmcp.CallToolRequest, in addIn) (*sdkmcp.CallToolResult, map[string]int, error) {
			return nil, map[string]int{"sum": in.A + in.B, "pid": os.Getpid()}, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "meta", Description: "names the _meta keys it was called with"},
		func(_ context.Context, req *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, map[string]any, error) {
			keys := []string{}
			for k := range req.Params.Meta {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			return nil, map[string]any{"keys": keys}, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "crash", Description: "exits the program"},
		func(context.Context, *sdkmcp.CallToolRequest, struct{}) (*sdkmcp.CallToolResult, any, error) {
			fmt.Fprintln(os.Stderr, "crashing on purpose")
			os.Exit(3)
			return nil, nil, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "slow", Description: "reports progress"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, in slowIn) (*sdkmcp.CallToolResult, any, error) {
			for i := 1; i <= in.Steps; i++ {
				if tok := req.Params.GetProgressToken(); tok != nil {
					req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: float64(in.Steps), Message: fmt.Sprintf("step %d", i)})
				}
			}
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "done"}}}, nil, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "confirm", Description: "asks the caller's user"},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in confirmIn) (*sdkmcp.CallToolResult, any, error) {
			res, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{Message: in.Question, RequestedSchema: map[string]any{
				"type": "object", "properties": map[string]any{"ok": map[string]any{"type": "boolean"}},
			}})
			if err != nil {
				return nil, nil, err
			}
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: fmt.Sprintf("%s:%v", res.Action, res.Content["ok"])}}}, nil, nil
		})
	s.AddResource(&sdkmcp.Resource{URI: "calc://readme", Name: "readme", MIMEType: "text/plain"},
		func(context.Context, *sdkmcp.ReadResourceRequest) (*sdkmcp.ReadResourceResult, error) {
			return &sdkmcp.ReadResourceResult{Contents: []*sdkmcp.ResourceContents{{URI: "calc://readme", MIMEType: "text/plain", Text: "calc adds numbers"}}}, nil
		})
	s.AddPrompt(&sdkmcp.Prompt{Name: "sum_prompt", Arguments: []*sdkmcp.PromptArgument{{Name: "n", Required: true}}},
		func(_ context.Context, req *sdkmcp.GetPromptRequest) (*sdkmcp.GetPromptResult, error) {
			return &sdkmcp.GetPromptResult{Messages: []*sdkmcp.PromptMessage{{Role: "user", Content: &sdkmcp.TextContent{Text: "sum up to " + req.Params.Arguments["n"]}}}}, nil
		})
	if err := s.Run(context.Background(), &sdkmcp.StdioTransport{}); err != nil {
		os.Exit(1)
	}
}

// syncBuffer collects a shared program's standard error.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func shareCalc(t *testing.T, n *node.Node, stderr *syncBuffer, opts ...node.ShareOption) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := upstream.Command{
		Args:       []string{exe},
		Env:        append(os.Environ(), stdioServerEnv+"=1"),
		Stderr:     stderr,
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.ShareCommand(ctx, "calc", cmd, opts...); err != nil {
		t.Fatal(err)
	}
}

func TestSharedProgramServesToolsResourcesPrompts(t *testing.T) {
	a, b := newNode(t), newNode(t)
	shareCalc(t, b, &syncBuffer{})
	connect(t, a, b)
	ctx := context.Background()

	servers, err := a.Servers(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(servers, ",") != "calc,node" {
		t.Fatalf("servers = %v, want calc and node", servers)
	}
	res, err := a.CallTool(ctx, b.ID(), "add", map[string]int{"a": 2, "b": 40})
	if err != nil {
		t.Fatal(err)
	}
	if sc, _ := res.StructuredContent.(map[string]any); sc["sum"] != float64(42) {
		t.Fatalf("add = %+v", res.StructuredContent)
	}

	cs, err := a.Session(ctx, b.ID(), "calc")
	if err != nil {
		t.Fatal(err)
	}
	read, err := cs.ReadResource(ctx, &sdkmcp.ReadResourceParams{URI: "calc://readme"})
	if err != nil || len(read.Contents) != 1 || read.Contents[0].Text != "calc adds numbers" {
		t.Fatalf("read resource: %+v, %v", read, err)
	}
	prompt, err := cs.GetPrompt(ctx, &sdkmcp.GetPromptParams{Name: "sum_prompt", Arguments: map[string]string{"n": "7"}})
	if err != nil || len(prompt.Messages) != 1 || prompt.Messages[0].Content.(*sdkmcp.TextContent).Text != "sum up to 7" {
		t.Fatalf("get prompt: %+v, %v", prompt, err)
	}
}

// A program's crash ends the session it served: the caller's next call
// opens a session with a process of its own again; the node's own process
// (its index) is untouched.
func TestIsolatedProgramCrashEndsOnlyItsSession(t *testing.T) {
	a, b := newNode(t), newNode(t)
	stderr := &syncBuffer{}
	shareCalc(t, b, stderr)
	connect(t, a, b)
	ctx := context.Background()

	first, err := calcPID(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	// The call that crashes the program fails; the node stays up.
	if res, err := a.CallTool(ctx, b.ID(), "calc/crash", nil); err == nil && !res.IsError {
		t.Fatal("crash call succeeded")
	}
	var second float64
	eventually(t, 10*time.Second, "a call on a new process", func() bool {
		second, err = calcPID(ctx, a, b)
		return err == nil && second != first
	})
	// Sessions: A's, and the node's own that watches the program's
	// resources for events (an isolated session too).
	st := status(t, b, "calc")
	if st.Mode != "isolated" || st.Restarts != 0 || !st.Running || st.Tools != 6 || st.Sessions != 2 {
		t.Errorf("status after a caller's process crashed = %+v", st)
	}
	if !strings.Contains(stderr.String(), "[calc] crashing on purpose") {
		t.Errorf("program's stderr not relayed with its name: %q", stderr.String())
	}
}

// In shared mode one process serves every caller: it crashing is the
// share's, restarted with backoff, and status says so.
func TestSharedModeProgramRestartsAfterExit(t *testing.T) {
	a, b := newNode(t), newNode(t)
	stderr := &syncBuffer{}
	shareCalc(t, b, stderr, node.ShareMode(relay.Shared))
	connect(t, a, b)
	ctx := context.Background()

	first, err := calcPID(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if st := status(t, b, "calc"); st.PID != int(first) {
		t.Fatalf("in shared mode, the call ran in process %v, the share's is %d", first, st.PID)
	}
	if res, err := a.CallTool(ctx, b.ID(), "calc/crash", nil); err == nil && !res.IsError {
		t.Fatal("crash call succeeded")
	}
	eventually(t, 10*time.Second, "the program restarted", func() bool {
		second, err := calcPID(ctx, a, b)
		return err == nil && second != first
	})
	st := status(t, b, "calc")
	if st.Mode != "shared" || st.Restarts < 1 || !st.Running || st.Tools != 6 {
		t.Errorf("status after restart = %+v", st)
	}
}

func calcPID(ctx context.Context, a, b *node.Node) (float64, error) {
	res, err := a.CallTool(ctx, b.ID(), "calc/add", map[string]int{"a": 1, "b": 1})
	if err != nil {
		return 0, err
	}
	if res.IsError {
		return 0, fmt.Errorf("add failed: %v", res.Content)
	}
	return res.StructuredContent.(map[string]any)["pid"].(float64), nil
}

func status(t *testing.T, n *node.Node, name string) upstream.ShareStatus {
	t.Helper()
	for _, p := range n.Programs() {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no share %s in %+v", name, n.Programs())
	return upstream.ShareStatus{}
}

func TestSharedProgramRelaysProgress(t *testing.T) {
	a, b := newNode(t), newNode(t)
	shareCalc(t, b, &syncBuffer{})
	connect(t, a, b)
	ctx := context.Background()

	var mu sync.Mutex
	var got []string
	// Progress reaches the caller through a client of its own, with its own token.
	client := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "progress-watcher"}, &sdkmcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *sdkmcp.ProgressNotificationClientRequest) {
			mu.Lock()
			got = append(got, fmt.Sprintf("%v:%s", r.Params.ProgressToken, r.Params.Message))
			mu.Unlock()
		},
	})
	s, err := a.Host().NewStream(ctx, b.ID(), transport.ProtocolID("calc"))
	if err != nil {
		t.Fatal(err)
	}
	pcs, err := client.Connect(ctx, &transport.StreamTransport{Stream: s}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pcs.Close()
	params := &sdkmcp.CallToolParams{Name: "slow", Arguments: map[string]int{"steps": 3}}
	params.SetProgressToken("tok-1")
	if _, err := pcs.CallTool(ctx, params); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, ",") != "tok-1:step 1,tok-1:step 2,tok-1:step 3" {
		t.Fatalf("progress = %v", got)
	}
}

func TestSharedProgramAsksTheCallersUser(t *testing.T) {
	for _, version := range []string{"2025-11-25", "2026-07-28"} {
		t.Run(version, func(t *testing.T) {
			var asked []string
			var mu sync.Mutex
			a := newNode(t, node.WithProtocolVersion(version), node.WithElicitationHandler(
				func(_ context.Context, req *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
					mu.Lock()
					asked = append(asked, req.Params.Message)
					mu.Unlock()
					return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"ok": true}}, nil
				}))
			b := newNode(t)
			shareCalc(t, b, &syncBuffer{})
			connect(t, a, b)
			res, err := a.CallTool(context.Background(), b.ID(), "confirm", map[string]string{"question": "proceed?"})
			if err != nil {
				t.Fatal(err)
			}
			if res.IsError || len(res.Content) != 1 || res.Content[0].(*sdkmcp.TextContent).Text != "accept:true" {
				t.Fatalf("confirm = %+v", res.Content)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(asked) == 0 || asked[0] != "proceed?" {
				t.Fatalf("user was asked %v", asked)
			}
		})
	}
}

// A Streamable HTTP server that wants a bearer token, shared with --share-http.
func TestSharedHTTPServerWithBearerToken(t *testing.T) {
	srv := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "remote", Version: "1"}, nil)
	sdkmcp.AddTool(srv, &sdkmcp.Tool{Name: "add"}, func(_ context.Context, _ *sdkmcp.CallToolRequest, in addIn) (*sdkmcp.CallToolResult, map[string]int, error) {
		return nil, map[string]int{"sum": in.A + in.B}, nil
	})
	handler := sdkmcp.NewStreamableHTTPHandler(func(*http.Request) *sdkmcp.Server { return srv }, nil)
	var unauthorized atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			unauthorized.Add(1)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close) // after the nodes (cleanups run last first): b holds a stream open

	a, b := newNode(t), newNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := b.ShareHTTP(ctx, "remote", upstream.Remote{URL: hs.URL, Header: http.Header{"Authorization": {"Bearer s3cret"}}})
	if err != nil {
		t.Fatal(err)
	}
	connect(t, a, b)
	res, err := a.CallTool(ctx, b.ID(), "remote/add", map[string]int{"a": 40, "b": 2})
	if err != nil {
		t.Fatal(err)
	}
	if sc, _ := res.StructuredContent.(map[string]any); sc["sum"] != float64(42) {
		t.Fatalf("remote/add = %+v", res.StructuredContent)
	}
	if unauthorized.Load() != 0 {
		t.Fatalf("%d requests without the token", unauthorized.Load())
	}
	if err := b.ShareHTTP(ctx, "bad", upstream.Remote{URL: "ftp://x"}); err == nil {
		t.Fatal("non-http URL accepted")
	}
}

// Completion, logging and resource subscriptions of a shared program reach
// a caller on another node.
func TestSharedProgramRelaysCompletionLoggingAndUpdates(t *testing.T) {
	a, b := newNode(t), newNode(t)
	shareCalc(t, b, &syncBuffer{})
	connect(t, a, b)
	ctx := context.Background()

	var mu sync.Mutex
	var logs, updates []string
	client := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "watcher"}, &sdkmcp.ClientOptions{
		LoggingMessageHandler: func(_ context.Context, r *sdkmcp.LoggingMessageRequest) {
			mu.Lock()
			logs = append(logs, fmt.Sprint(r.Params.Data))
			mu.Unlock()
		},
		ResourceUpdatedHandler: func(_ context.Context, r *sdkmcp.ResourceUpdatedNotificationRequest) {
			mu.Lock()
			updates = append(updates, r.Params.URI)
			mu.Unlock()
		},
	})
	s, err := a.Host().NewStream(ctx, b.ID(), transport.ProtocolID("calc"))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := client.Connect(ctx, &transport.StreamTransport{Stream: s}, &sdkmcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	comp, err := cs.Complete(ctx, &sdkmcp.CompleteParams{
		Ref:      &sdkmcp.CompleteReference{Type: "ref/prompt", Name: "sum_prompt"},
		Argument: sdkmcp.CompleteParamsArgument{Name: "n", Value: "1"},
	})
	if err != nil || len(comp.Completion.Values) != 1 || comp.Completion.Values[0] != "100" {
		t.Fatalf("complete: %+v, %v", comp, err)
	}
	if err := cs.SetLoggingLevel(ctx, &sdkmcp.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatal(err)
	}
	if err := cs.Subscribe(ctx, &sdkmcp.SubscribeParams{URI: "calc://readme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "touch"}); err != nil {
		t.Fatal(err)
	}
	defer func() { mu.Lock(); t.Logf("logs %v updates %v", logs, updates); mu.Unlock() }()
	eventually(t, 5*time.Second, "log message and resource update relayed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(logs) == 1 && logs[0] == "touched" && len(updates) == 1 && updates[0] == "calc://readme"
	})
}

// A call to a shared program is a task of the sharing node, and the
// program sees none of the mesh's own _meta keys: they stop at the node.
func TestSharedProgramCallIsATaskAndSeesNoMeshMeta(t *testing.T) {
	a, b := newNode(t), newNode(t)
	shareCalc(t, b, &syncBuffer{})
	connect(t, a, b)
	ctx := tasks.WithProgress(ctxFor(t, 20*time.Second), func(*sdkmcp.ProgressNotificationParams) {})
	res, err := a.CallServerTool(ctx, b.ID(), "calc", "meta", nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := res.StructuredContent.(map[string]any)["keys"]
	if fmt.Sprint(keys) != "[progressToken traceparent]" {
		t.Errorf("the program saw _meta keys %v, want only progressToken and traceparent", keys)
	}
	root := rootCall(t, a)
	tree, err := a.TaskTree(ctx, root.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Children) != 1 || tree.Children[0].Unreachable != "" || tree.Children[0].Task.State != tasks.Completed ||
		tree.Children[0].Task.Peer != b.ID().String() || tree.Children[0].Task.Tool != "meta" {
		t.Fatalf("tree below the root: %+v", tree.Children)
	}
	// A tool error names the sharing node as where it failed, in the mesh's
	// own _meta key of the result.
	res, err = a.CallServerTool(ctx, b.ID(), "calc", "add", map[string]any{"a": "one"})
	if err != nil {
		t.Fatal(err)
	}
	rm, ok := tasks.DecodeResult(res.Meta)
	if !res.IsError || !ok || rm.FailedAt == nil || rm.FailedAt.Peer != b.ID().String() || rm.FailedAt.Tool != "add" {
		t.Fatalf("failed call: isError %v, task meta %+v", res.IsError, rm)
	}
}
