package node

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/peer/trust"
)

// relayTarget is a server of another peer that this node re-shares.
type relayTarget struct {
	peer   lpeer.ID
	server string
	ctx    context.Context // ends when the share ends: every relayed session stops
	cancel context.CancelFunc
}

// SharePeer re-shares the server called server on peer p under name: peers
// that cannot reach p (another network, behind NAT, not permitted there)
// reach it through this node. Each session opened on name is relayed to a
// session of its own on p, message by message, decoding nothing beyond the
// JSON-RPC envelope, so everything MCP carries passes through unchanged; only
// the task context of a tools/call is extended by this hop.
func (n *Node) SharePeer(name string, p lpeer.ID, server string) error {
	if err := transport.ValidateServerName(server); err != nil {
		return err
	}
	if p == n.host.ID() {
		return fmt.Errorf("share %s: %s/%s is this node's own server", name, p, server)
	}
	if err := transport.ValidateServerName(name); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(n.ctx)
	t := &relayTarget{peer: p, server: server, ctx: ctx, cancel: cancel}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		cancel()
		return ErrClosed
	}
	if _, ok := n.servers[name]; ok {
		cancel()
		return fmt.Errorf("a server named %q is already shared", name)
	}
	n.servers[name] = &sharedServer{relay: t, stop: cancel}
	n.host.SetStreamHandler(transport.ProtocolID(name), n.serveRelay(name, t))
	n.changed()
	return nil
}

// serveRelay returns the stream handler of a re-shared server.
func (n *Node) serveRelay(name string, t *relayTarget) network.StreamHandler {
	return func(s network.Stream) {
		if !n.group.Enter() {
			s.Reset()
			return
		}
		defer n.group.Leave()
		caller := s.Conn().RemotePeer()
		if !n.trust.MayOpenRelay(caller, name) {
			s.Reset()
			return
		}
		up, err := n.openRelay(t)
		if err != nil {
			s.Reset()
			log.Debugw("relay session refused", "server", name, "error", err)
			return
		}
		r := relay.NewStreamRelay(s, up, n.cfg.maxMessageSize)
		// The trust layer's rewrites first, then the task hop's.
		toServer, toClient, end := n.trust.RelayRewrites(caller, name, trust.Target{Peer: t.peer, Server: t.server},
			relay.TaskHop(n.host.ID(), caller), r.SendToClient)
		defer end(nil)
		r.ServerLost = end // the target's side ended: answer what waits on it
		if err := r.Run(t.ctx, toServer, toClient); err != nil {
			log.Debugw("relay session ended", "server", name, "to", t.peer, "error", err)
		}
	}
}

// openRelay opens the stream to the target of a re-shared server.
func (n *Node) openRelay(t *relayTarget) (network.Stream, error) {
	dialCtx, cancel := context.WithTimeout(t.ctx, n.cfg.dialTimeout)
	defer cancel()
	s, err := n.host.NewStream(mcpStream(network.WithDialPeerTimeout(dialCtx, n.cfg.dialTimeout)), t.peer, transport.ProtocolID(t.server))
	if err != nil {
		// The caller sees its session end: it cannot get a better answer
		// before it has sent anything.
		return nil, fmt.Errorf("relay to %s/%s: %w", t.peer, t.server, n.dialError(t.peer, err))
	}
	return s, nil
}

// relay pumps down's session (a connection in memory, from the node
// itself) to the target.
func (n *Node) relay(t *relayTarget, down sdkmcp.Connection, caller lpeer.ID) error {
	s, err := n.openRelay(t)
	if err != nil {
		down.Close()
		return err
	}
	up, _ := (&transport.StreamTransport{Stream: s, MaxMessageSize: n.cfg.maxMessageSize}).Connect(t.ctx)
	return relay.Pump(t.ctx, down, up, relay.TaskHopMessages(n.host.ID(), caller))
}
