package main

import (
	"context"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

type echoIn struct {
	Text string `json:"text" jsonschema:"the text to send back"`
}

type echoOut struct {
	Text   string `json:"text" jsonschema:"the text received"`
	Caller string `json:"caller" jsonschema:"the caller's authenticated peer ID"`
}

// addBuiltins gives a daemon's default server the tools every node offers.
func addBuiltins(n *node.Node) {
	node.AddTool(n, &sdkmcp.Tool{
		Name:        "echo",
		Description: "Sends the text back with the caller's authenticated peer ID: a way to check that two nodes reach each other.",
	}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, echoOut, error) {
		caller, _ := identity.Remote(ctx)
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: in.Text}}},
			echoOut{Text: in.Text, Caller: caller.String()}, nil
	})
}
