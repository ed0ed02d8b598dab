package main

import (
	"context"
	"os"
	"sync"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// demoProgramEnv makes this binary run as the demo's stdio MCP program (a
// notes server): the demo shares a real program, started as a process of
// its own, without anything to install.
const demoProgramEnv = "MCPMESH_DEMO_PROGRAM"

type noteIn struct {
	Text string `json:"text" jsonschema:"the note"`
}

type readIn struct {
	URI string `json:"uri" jsonschema:"the note's URI"`
}

// runDemoProgram serves a notes server on stdin/stdout: a resource
// notes://today that write_note changes (and says so to its subscribers),
// and read_note to read it.
func runDemoProgram() {
	var mu sync.Mutex
	note := "(empty)"
	s := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "notes", Version: "1"}, &sdkmcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *sdkmcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *sdkmcp.UnsubscribeRequest) error { return nil },
	})
	s.AddResource(&sdkmcp.Resource{URI: "notes://today", Name: "today", MIMEType: "text/plain"},
		func(context.Context, *sdkmcp.ReadResourceRequest) (*sdkmcp.ReadResourceResult, error) {
			mu.Lock()
			defer mu.Unlock()
			return &sdkmcp.ReadResourceResult{Contents: []*sdkmcp.ResourceContents{{URI: "notes://today", MIMEType: "text/plain", Text: note}}}, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "write_note", Description: "Replaces today's note."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in noteIn) (*sdkmcp.CallToolResult, any, error) {
			mu.Lock()
			note = in.Text
			mu.Unlock()
			s.ResourceUpdated(ctx, &sdkmcp.ResourceUpdatedNotificationParams{URI: "notes://today"})
			return text("saved"), nil, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "read_note", Description: "Reads a note."},
		func(_ context.Context, _ *sdkmcp.CallToolRequest, in readIn) (*sdkmcp.CallToolResult, any, error) {
			mu.Lock()
			defer mu.Unlock()
			if in.URI != "notes://today" {
				return &sdkmcp.CallToolResult{IsError: true, Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "no note " + in.URI}}}, nil, nil
			}
			return text("%s", note), nil, nil
		})
	if err := s.Run(context.Background(), &sdkmcp.StdioTransport{}); err != nil {
		os.Exit(1)
	}
}
