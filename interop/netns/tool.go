package netns

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The environment of a tool program: the program's role, where it writes
// its marks, and the host it runs on.
const (
	envRole  = "MCPMESH_NETNS_ROLE"
	envMarks = "MCPMESH_NETNS_MARKS"
	envHost  = "MCPMESH_NETNS_HOST"
)

// ToolCommand is a --share command that runs program (a binary whose main
// or TestMain calls MaybeRunTool) as the lab's tool server, writing its
// marks to marks (see Marks).
func ToolCommand(program, host, marks string) string {
	return fmt.Sprintf("env %s=tool %s=%s %s=%s %s", envRole, envMarks, marks, envHost, host, program)
}

// MaybeRunTool serves the lab's stdio MCP tool server and exits if this
// process was started by ToolCommand; otherwise it returns at once. Call it
// first in TestMain.
//
// Tools: "slow" {seconds, tag} reports progress every 200 ms until seconds
// have passed or the call is cancelled, and writes "started TAG", then
// "completed TAG" or "cancelled TAG", as lines to the marks file;
// "hello" {} answers "hello from HOST"; "big" {bytes} answers a text of
// that many bytes.
func MaybeRunTool() {
	if os.Getenv(envRole) != "tool" {
		return
	}
	err := runTool(context.Background(), os.Getenv(envMarks), os.Getenv(envHost))
	if err != nil {
		fmt.Fprintln(os.Stderr, "netns tool:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type slowIn struct {
	Seconds float64 `json:"seconds" jsonschema:"how long to run"`
	Tag     string  `json:"tag" jsonschema:"a name for this call in the marks file"`
}

type bigIn struct {
	Bytes int `json:"bytes" jsonschema:"the size of the answer's text"`
}

func runTool(ctx context.Context, marks, host string) error {
	var mu sync.Mutex
	mark := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		f, err := os.OpenFile(marks, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return
		}
		fmt.Fprintf(f, format+"\n", args...)
		f.Close()
	}
	s := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "netns-tool", Version: "1"}, nil)
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "slow", Description: "Runs for a while, reporting progress; says in a file when it starts, ends, or is cancelled."},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, in slowIn) (*sdkmcp.CallToolResult, any, error) {
			mark("started %s", in.Tag)
			end := time.Now().Add(time.Duration(in.Seconds * float64(time.Second)))
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for i := 1; time.Now().Before(end); i++ {
				select {
				case <-ctx.Done():
					mark("cancelled %s", in.Tag)
					return nil, nil, ctx.Err()
				case <-t.C:
					if tok := req.Params.GetProgressToken(); tok != nil {
						req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Message: "working"})
					}
				}
			}
			mark("completed %s", in.Tag)
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "done " + in.Tag}}}, nil, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "hello", Description: "Says which host it runs on."},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, any, error) {
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "hello from " + host}}}, nil, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "big", Description: "Answers a text of the given size."},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, in bigIn) (*sdkmcp.CallToolResult, any, error) {
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: strings.Repeat("x", in.Bytes)}}}, nil, nil
		})
	return s.Run(ctx, &sdkmcp.StdioTransport{})
}

// Marks reads a marks file: one "WHAT TAG" line per event, in order.
func Marks(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
