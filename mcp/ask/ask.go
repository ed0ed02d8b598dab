package ask

import (
	"context"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/tasks"
)

// askParams returns params with the asking task's caller task in its
// _meta (see tasks.AskMeta), so that a node in the middle of a tree can pass
// the question on to its own caller; params itself is not changed. It serves
// elicitation and both forms of sampling requests.
func askParams[T any, P interface {
	*T
	sdkmcp.Params
}](ctx context.Context, params P) P {
	meta := tasks.AskMeta(ctx, params.GetMeta())
	if meta == nil || len(meta) == len(params.GetMeta()) {
		return params
	}
	p := *params
	P(&p).SetMeta(meta)
	return &p
}
