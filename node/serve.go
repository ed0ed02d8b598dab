package node

import (
	"context"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/trust"
)

// addLayers puts the mesh's layers in front of a server the node shares
// under name. Every request a peer sends passes them in this order,
// outermost first:
//
//  1. trust (peer/trust): the call's delegation verified, the policy
//     applied, the caller's limits applied, the call audited (refusals
//     too); list answers filtered, and remembered for list_changed.
//  2. tasks (tasks/tracker): a tools/call becomes a task of the tree
//     (guards, registry, deadline; MCP Tasks' detached runs), whose ID it
//     returns to the trust layer for the audit record.
//  3. input (mcp/ask): the handler may ask its caller with Elicit and
//     Sample on either protocol version (multi round-trip state).
//  4. asking (tasks/tracker): while the handler runs, the questions its
//     own calls relay up are asked through its context.
//
// and then the server's own handlers. What the server sends passes the
// tracker's sending middleware (a task's progress, kept increasing). With
// task tracking off, 2 and 4 pass requests through.
func (n *Node) addLayers(name string, server *sdkmcp.Server) {
	server.AddReceivingMiddleware(func(handler sdkmcp.MethodHandler) sdkmcp.MethodHandler {
		asking := n.tasks.Asking(handler)
		input := n.inputs.Middleware()(asking)
		task := n.tasks.Serve(name, input)
		return n.trust.Serve(name, trust.Handler(task))
	})
	n.tasks.AddMethods(server)
}

// serve returns the stream handler that runs one MCP server session per
// inbound stream, with the caller's authenticated peer ID on its context.
func (n *Node) serve(name string, server *sdkmcp.Server) network.StreamHandler {
	return func(s network.Stream) {
		if !n.group.Enter() {
			s.Reset()
			return
		}
		defer n.group.Leave()

		remote := s.Conn().RemotePeer()
		sess := trust.NewSession(name, remote)
		ctx := trust.WithSession(identity.WithRemote(n.ctx, remote), sess)
		// The limits bound what the peer can make this session cost: what a
		// message holds once decoded, its requests in flight, the memory
		// they hold, how long it may stay silent.
		t := &transport.StreamTransport{Stream: s, MaxMessageSize: n.cfg.maxMessageSize, Guard: n.guard(remote), Signs: n.signs(s),
			OnBadFrame: func(err error) { n.trust.BadFrame(remote, err) }}
		conn := t.Conn()
		// Room for this session, made by evicting another if need be
		// (limits.OpenSession); and when the node closes, the session ends
		// even while it waits for answers (at its window, or after the peer
		// closed its side).
		if n.limits != nil {
			slot := n.limits.OpenSession(remote, conn.Activity, conn.Abort)
			defer slot.Close()
		}
		defer context.AfterFunc(n.ctx, conn.Abort)()
		// A stream that never speaks costs a read, not a session: the SDK's
		// session is built once the peer has sent something, within the
		// handshake timeout.
		if err := conn.AwaitRequest(); err != nil {
			log.Debugw("session not started", "peer", remote, "error", err)
			conn.Close()
			return
		}
		// The trust layer writes list_changed notices to this session alone,
		// which the SDK has no call for.
		notify := func(ctx context.Context, c sdkmcp.Connection) {
			sess.Notify = func(method string) error { return c.Write(ctx, &jsonrpc.Request{Method: method}) }
		}
		ss, err := server.Connect(ctx, sdkcompat.OnConnect(conn.Transport(), notify), nil)
		if err != nil {
			log.Debugw("serve session", "peer", remote, "error", err)
			s.Reset()
			return
		}
		n.mu.Lock()
		n.inbound[ss] = name
		n.mu.Unlock()
		n.trust.Track(sess)
		err = ss.Wait()
		n.trust.Untrack(sess)
		n.mu.Lock()
		delete(n.inbound, ss)
		n.mu.Unlock()
		log.Debugw("session ended", "peer", remote, "protocol", s.Protocol(), "error", err)
	}
}

// guard returns the bounds of a session that p opens (limits.Limiter.Guard),
// or the transport's defaults for the frames when the node has no limiter.
func (n *Node) guard(p lpeer.ID) transport.Guard {
	if n.limits == nil {
		return transport.Guard{}
	}
	return n.limits.Guard(p)
}
