// Package ask lets the handler of a request served on the mesh ask its
// caller for input — elicitation, sampling — whichever MCP protocol version
// the session speaks: before 2026-07-28 as a request to the caller while the
// handler waits, from 2026-07-28 on as input requests in the result (multi
// round-trip), the handler then running again with the answers. [Replay]
// keeps such a handler from doing twice what it did before it asked. A node
// installs [Inputs.Middleware] on every server it shares.
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
	// A question passed up from below names the task below already: its
	// name is replaced (same length), not only added.
	if meta == nil || (len(meta) == len(params.GetMeta()) && tasks.AskedBy(meta) == tasks.AskedBy(params.GetMeta())) {
		return params
	}
	p := *params
	P(&p).SetMeta(meta)
	return &p
}
