package node

import (
	"context"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/upstream"
)

// ShareCommand starts the stdio MCP server program cmd and shares its tools,
// resources and prompts under name, names unchanged. The node keeps it
// running: if it exits or fails to start, the node logs why and restarts it
// with backoff until the share ends (Unshare or Close). ShareCommand returns
// once the program is first ready or has first failed; the share stays in
// place either way.
func (n *Node) ShareCommand(ctx context.Context, name string, cmd upstream.Command) error {
	open, cmd, err := upstream.Program(name, cmd)
	if err != nil {
		return err
	}
	return n.shareUpstream(ctx, name, cmd, open)
}

// ShareHTTP shares the Streamable HTTP MCP server r under name, names
// unchanged, as ShareCommand does a program: if the session is lost, the
// node reconnects with backoff.
func (n *Node) ShareHTTP(ctx context.Context, name string, r upstream.Remote) error {
	open, cmd, err := upstream.Endpoint(name, r)
	if err != nil {
		return err
	}
	return n.shareUpstream(ctx, name, cmd, open)
}

// shareUpstream shares the server that open reaches: a mirror serves it to
// peers, a supervisor keeps its session alive.
func (n *Node) shareUpstream(ctx context.Context, name string, cmd upstream.Command, open upstream.Open) error {
	mirror := relay.NewMirror(name, &sdkmcp.Implementation{Name: name, Version: n.cfg.version})
	sup := upstream.New(name, cmd, open, sdkmcp.NewClient(n.implementation(), mirror.ClientOptions()), mirror)
	stop := func() {
		sup.Stop()
		mirror.Close()
	}
	if err := n.share(name, mirror.Server(), stop); err != nil {
		stop()
		return err
	}
	n.mu.Lock()
	n.programs[name] = sup
	n.mu.Unlock()
	sup.Start()
	return sup.Ready(ctx)
}

// Programs reports on the servers shared from programs and endpoints.
func (n *Node) Programs() []upstream.ShareStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]upstream.ShareStatus, 0, len(n.programs))
	for _, sup := range n.programs {
		out = append(out, sup.Status())
	}
	return out
}
