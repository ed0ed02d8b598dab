package node

import (
	"context"
	"errors"
	"fmt"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/mcp/upstream"
	"github.com/mcpmesh/mcpmesh/peer/trust"
)

// A ShareOption changes how ShareCommand and ShareHTTP share a server.
type ShareOption func(*relay.ShareConfig)

// ShareMode sets how callers share the upstream: relay.Isolated (the
// default: a session, and for a program a process, of its own each) or
// relay.Shared (one upstream session carries every caller's).
func ShareMode(m relay.Mode) ShareOption {
	return func(c *relay.ShareConfig) { c.Mode = m }
}

// ShareSessions bounds the callers' sessions of an isolated share, and sets
// how many processes a program's share keeps started ahead and when idle
// sessions end (zero fields keep the defaults of upstream.PoolConfig).
func ShareSessions(p upstream.PoolConfig) ShareOption {
	return func(c *relay.ShareConfig) { c.Pool = p }
}

// ShareCommand starts the stdio MCP server program cmd and shares it under
// name, passed through: each caller session is relayed to a session of the
// program as it is (its own initialize, capabilities, lists, errors,
// notifications and requests), in isolated mode (the default) to a process
// of its own. The node keeps a process of its own too, its index of what
// the program offers (for its card and status): if it exits or fails to
// start, the node logs why and restarts it with backoff until the share
// ends (Unshare or Close). ShareCommand returns once the program is first
// ready or has first failed; the share stays in place either way.
func (n *Node) ShareCommand(ctx context.Context, name string, cmd upstream.Command, opts ...ShareOption) error {
	up, err := upstream.Program(name, cmd, n.cfg.maxMessageSize)
	if err != nil {
		return err
	}
	return n.shareUpstream(ctx, name, up, opts)
}

// ShareHTTP shares the Streamable HTTP MCP server r under name, as
// ShareCommand does a program: each caller session is relayed to an HTTP
// session of its own (isolated mode), and the node's own session is
// reopened with backoff if lost.
func (n *Node) ShareHTTP(ctx context.Context, name string, r upstream.Remote, opts ...ShareOption) error {
	up, err := upstream.Endpoint(name, r, n.cfg.maxMessageSize)
	if err != nil {
		return err
	}
	return n.shareUpstream(ctx, name, up, opts)
}

// muxVersion is the protocol version the node's own session with a
// program or an endpoint asks for (its index, and in shared mode the
// session every caller's is carried on): the newest with initialize, where
// a program may ask its client during a call.
const muxVersion = "2025-11-25"

func (n *Node) shareUpstream(ctx context.Context, name string, up *upstream.Upstream, opts []ShareOption) error {
	cfg := relay.ShareConfig{Changed: n.changed}
	for _, o := range opts {
		o(&cfg)
	}
	if _, err := relay.ParseMode(string(cfg.Mode)); err != nil {
		return err
	}
	cfg.Init = relay.MuxInit{ProtocolVersion: muxVersion, ClientInfo: n.implementation(), Capabilities: &sdkmcp.ClientCapabilities{}}
	if cfg.Mode == relay.Shared {
		// Callers may be asked through it, one call at a time (see relay.Mux).
		cfg.Init.Capabilities.Sampling = &sdkmcp.SamplingCapabilities{}
		cfg.Init.Capabilities.Elicitation = &sdkmcp.ElicitationCapabilities{Form: &sdkmcp.FormElicitationCapabilities{}}
	}
	sh := relay.NewShare(up, cfg)
	s := &sharedServer{share: sh, stop: sh.Stop}
	s.pass = n.passToShare(name, sh, &s.live)
	if err := n.addServer(name, s); err != nil {
		return err
	}
	sh.Start()
	return sh.Ready(ctx)
}

// passToShare returns how a session of a program's or an endpoint's share
// is served: relayed to an upstream session of its own (or its place on
// the shared one).
func (n *Node) passToShare(name string, sh *relay.Share, live *liveRelays) passFunc {
	return func(down *transport.Conn, caller lpeer.ID) {
		if refusal := n.trust.MayOpenRelay(caller, name); refusal != nil {
			relay.RefuseSession(down, refusal.Code, refusal.Message)
			return
		}
		up, err := sh.Open(n.ctx, caller.String())
		if err != nil {
			code := int64(jsonrpc.CodeInternalError)
			if errors.Is(err, upstream.ErrPoolFull) {
				code = trust.CodeLimited
			}
			log.Debugw("shared server session refused", "server", name, "caller", caller, "error", err)
			relay.RefuseSession(down, code, fmt.Sprintf("%v (on %s)", err, n.host.ID()))
			return
		}
		if err := n.runRelay(n.ctx, name, caller, down, up, "", name, up.SetBusy, live); err != nil {
			log.Debugw("shared server session ended", "server", name, "caller", caller, "error", err)
		}
	}
}

// Programs reports on the servers shared from programs and endpoints.
func (n *Node) Programs() []upstream.ShareStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []upstream.ShareStatus
	for _, s := range n.servers {
		if s.share != nil {
			out = append(out, s.share.Status())
		}
	}
	return out
}
