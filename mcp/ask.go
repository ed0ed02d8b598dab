package mcp

import (
	"context"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/tasks"
)

// elicitParams returns params with the asking task's caller task in its
// _meta (see tasks.AskMeta), so that a node in the middle of a tree can pass
// the question on to its own caller; params itself is not changed.
func elicitParams(ctx context.Context, params *sdkmcp.ElicitParams) *sdkmcp.ElicitParams {
	meta := tasks.AskMeta(ctx, params.Meta)
	if meta == nil || len(meta) == len(params.Meta) {
		return params
	}
	p := *params
	p.Meta = meta
	return &p
}

// sampleParams is elicitParams for sampling requests.
func sampleParams(ctx context.Context, params *sdkmcp.CreateMessageParams) *sdkmcp.CreateMessageParams {
	meta := tasks.AskMeta(ctx, params.Meta)
	if meta == nil || len(meta) == len(params.Meta) {
		return params
	}
	p := *params
	p.Meta = meta
	return &p
}

// sampleWithToolsParams is elicitParams for sampling requests with tools.
func sampleWithToolsParams(ctx context.Context, params *sdkmcp.CreateMessageWithToolsParams) *sdkmcp.CreateMessageWithToolsParams {
	meta := tasks.AskMeta(ctx, params.Meta)
	if meta == nil || len(meta) == len(params.Meta) {
		return params
	}
	p := *params
	p.Meta = meta
	return &p
}
