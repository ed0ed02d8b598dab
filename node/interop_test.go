package node_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/upstream"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// everythingServer returns the command of the npm reference server
// @modelcontextprotocol/server-everything, installed by .ci/run. Without it
// the test skips on a developer's machine and fails in CI.
func everythingServer(t *testing.T) string {
	t.Helper()
	bin, _ := filepath.Abs(filepath.Join("..", "interop", "everything", "node_modules", ".bin", "mcp-server-everything"))
	if _, err := os.Stat(bin); err != nil {
		msg := "npm package of interop/everything not installed: run `npm install --no-package-lock --prefix interop/everything`"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := exec.LookPath("node"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node (Node.js) not installed: CI must have it")
		}
		t.Skip("node not installed")
	}
	return bin
}

// The reference "everything" server, a program nobody here wrote, shared by
// one node and used from another: tools (one with progress, one asking for
// sampling, one for elicitation), a resource, a prompt.
func TestEverythingServerSharedThroughTheMesh(t *testing.T) {
	bin := everythingServer(t)
	var mu sync.Mutex
	var asked []string
	a := newNode(t,
		// Opening a session starts b's process for it if its spare is not
		// up yet: Node.js under -race on a loaded machine takes seconds.
		node.WithDialTimeout(30*time.Second),
		node.WithElicitationHandler(func(_ context.Context, req *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
			mu.Lock()
			asked = append(asked, "elicit: "+req.Params.Message)
			mu.Unlock()
			return &sdkmcp.ElicitResult{Action: "decline"}, nil
		}),
		node.WithSamplingHandler(func(_ context.Context, req *sdkmcp.CreateMessageRequest) (*sdkmcp.CreateMessageResult, error) {
			mu.Lock()
			asked = append(asked, "sample")
			mu.Unlock()
			return &sdkmcp.CreateMessageResult{Role: "assistant", Model: "test-model", Content: &sdkmcp.TextContent{Text: "sampled answer"}}, nil
		}))
	b := newNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.ShareCommand(ctx, "everything", upstream.Command{Args: []string{bin, "stdio"}, Stderr: &syncBuffer{}}); err != nil {
		t.Fatal(err)
	}
	connect(t, a, b)

	tools, err := a.ListTools(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools {
		names = append(names, tl.Ref())
	}
	for _, want := range []string{"everything/echo", "everything/get-sum", "everything/trigger-long-running-operation", "everything/trigger-sampling-request", "everything/trigger-elicitation-request"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Fatalf("%s not listed: %v", want, names)
		}
	}
	text := func(res *sdkmcp.CallToolResult, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, c := range res.Content {
			if tc, ok := c.(*sdkmcp.TextContent); ok {
				parts = append(parts, tc.Text)
			}
		}
		if res.IsError {
			t.Fatalf("tool error: %v", parts)
		}
		return strings.Join(parts, " ")
	}
	if got := text(a.CallTool(ctx, b.ID(), "everything/echo", map[string]any{"message": "hi"})); !strings.Contains(got, "hi") {
		t.Errorf("echo = %q", got)
	}
	if got := text(a.CallTool(ctx, b.ID(), "get-sum", map[string]any{"a": 2, "b": 3})); !strings.Contains(got, "5") {
		t.Errorf("get-sum = %q", got)
	}

	var progress []string
	pctx := tasks.WithProgress(ctx, func(p *sdkmcp.ProgressNotificationParams) {
		mu.Lock()
		progress = append(progress, fmt.Sprintf("%v/%v", p.Progress, p.Total))
		mu.Unlock()
	})
	text(a.CallTool(pctx, b.ID(), "trigger-long-running-operation", map[string]any{"duration": 0.4, "steps": 2}))
	eventually(t, 3*time.Second, "progress relayed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(progress) == 2
	})

	if got := text(a.CallTool(ctx, b.ID(), "trigger-sampling-request", map[string]any{"prompt": "say hi", "maxTokens": 10})); !strings.Contains(got, "sampled answer") {
		t.Errorf("sampling result = %q", got)
	}
	text(a.CallTool(ctx, b.ID(), "trigger-elicitation-request", nil))
	mu.Lock()
	if strings.Join(asked, "|") != "sample|elicit: "+strings.TrimPrefix(asked[len(asked)-1], "elicit: ") || len(asked) != 2 {
		t.Errorf("A's user was asked %q", asked)
	}
	mu.Unlock()

	cs, err := a.Session(ctx, b.ID(), "everything")
	if err != nil {
		t.Fatal(err)
	}
	read, err := cs.ReadResource(ctx, &sdkmcp.ReadResourceParams{URI: "demo://resource/static/document/architecture.md"})
	if err != nil || len(read.Contents) == 0 || read.Contents[0].Text == "" {
		t.Fatalf("read resource: %+v, %v", read, err)
	}
	prompt, err := cs.GetPrompt(ctx, &sdkmcp.GetPromptParams{Name: "args-prompt", Arguments: map[string]string{"city": "Lisbon"}})
	if err != nil || len(prompt.Messages) == 0 || !strings.Contains(prompt.Messages[0].Content.(*sdkmcp.TextContent).Text, "Lisbon") {
		t.Fatalf("get prompt: %+v, %v", prompt, err)
	}
}
