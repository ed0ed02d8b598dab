package node_test

import (
	"context"
	"strings"
	"testing"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// A call's own user (tasks.WithUser) answers the questions asked anywhere
// below it, two hops away through a --share-peer relay included, in place
// of the node's handler; a call without one still reaches the node's.
func TestTheUserOfACallAnswersItsQuestions(t *testing.T) {
	for _, version := range []string{"", "2026-07-28"} {
		t.Run("protocol "+version, func(t *testing.T) {
			opts := []node.Option{node.WithElicitationHandler(func(context.Context, *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
				return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"who": "node"}}, nil
			})}
			if version != "" {
				opts = append(opts, node.WithProtocolVersion(version))
			}
			a, b, c := relayChain(t, opts...)
			for _, n := range []*node.Node{b, c} {
				sdkmcp.AddTool(n.Server(), &sdkmcp.Tool{Name: "who"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, any, error) {
					res, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{Message: "who are you?", RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"who": map[string]any{"type": "string"}}}})
					if err != nil {
						return nil, nil, err
					}
					text := res.Action
					if res.Content != nil {
						text += " " + res.Content["who"].(string)
					}
					return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: text}}}, nil, nil
				})
				sdkmcp.AddTool(n.Server(), &sdkmcp.Tool{Name: "think"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, any, error) {
					_, err := ask.Sample(ctx, &sdkmcp.CreateMessageParams{MaxTokens: 10, Messages: []*sdkmcp.SamplingMessage{{Role: "user", Content: &sdkmcp.TextContent{Text: "hi"}}}})
					return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "sampling: " + err.Error()}}}, nil, nil
				})
			}
			user := &tasks.User{
				Elicit: func(_ context.Context, r *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
					return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"who": "user, asked " + r.Params.Message}}, nil
				},
				Sample: func(context.Context, *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error) {
					return nil, errorString("the user has no model")
				},
			}
			ctx := tasks.WithUser(context.Background(), user)
			for _, tool := range []string{"node/who", "far/who"} { // one hop, two hops
				if got := callText(t, a, ctx, b, tool); got != "accept user, asked who are you?" {
					t.Errorf("%s with a user = %q", tool, got)
				}
				if got := callText(t, a, context.Background(), b, tool); got != "accept node" {
					t.Errorf("%s without = %q", tool, got)
				}
				if got := callText(t, a, ctx, b, strings.Replace(tool, "who", "think", 1)); !strings.Contains(got, "the user has no model") {
					t.Errorf("sampling %s with a user = %q", tool, got)
				}
			}
		})
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func callText(t *testing.T, a *node.Node, ctx context.Context, b *node.Node, tool string) string {
	t.Helper()
	res, err := a.CallTool(ctx, b.ID(), tool, nil)
	if err != nil {
		return err.Error() // a refused question fails the call on 2026-07-28
	}
	if len(res.Content) != 1 {
		t.Fatalf("%s: %+v", tool, res)
	}
	return res.Content[0].(*sdkmcp.TextContent).Text
}
