package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/multiformats/go-multistream"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

// DialServer opens a new raw MCP connection to the server called server on
// peer p, for a relay (the HTTP gateway): the caller is the session's
// client, sends initialize itself and owns the connection (Close ends the
// session). Nothing is decoded or added on the way. p may be the node
// itself, whose servers are then reached in memory.
func (n *Node) DialServer(ctx context.Context, p lpeer.ID, server string) (sdkmcp.Connection, error) {
	if err := transport.ValidateServerName(server); err != nil {
		return nil, err
	}
	if p == n.host.ID() {
		return n.dialOwnServer(ctx, server)
	}
	s, err := n.host.NewStream(mcpStream(network.WithDialPeerTimeout(ctx, n.cfg.dialTimeout)), p, transport.ProtocolID(server))
	if err != nil {
		var notSupported multistream.ErrNotSupported[protocol.ID]
		if errors.As(err, &notSupported) {
			return nil, fmt.Errorf("peer %s shares no server named %q (it shares: %s)", p, server, strings.Join(n.serversOf(p), ", "))
		}
		return nil, n.dialError(p, err)
	}
	return (&transport.StreamTransport{Stream: s, MaxMessageSize: n.cfg.maxMessageSize, Signs: n.signs(s)}).Connect(ctx)
}

// dialOwnServer connects a raw connection to one of the node's own servers
// in memory, served as a session from the node itself.
func (n *Node) dialOwnServer(ctx context.Context, server string) (sdkmcp.Connection, error) {
	n.mu.Lock()
	s, ok := n.servers[server]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("this node shares no server named %q (it shares: %s)", server, strings.Join(n.Shared(), ", "))
	}
	if s.pass != nil {
		// A pipe in memory, served as an inbound stream from the node itself.
		mine, theirs := net.Pipe()
		self := n.host.ID()
		down := transport.NewPipeConn(theirs, self.String(), n.cfg.maxMessageSize)
		if !n.group.Go(func() { s.pass(down, self) }) {
			mine.Close()
			theirs.Close()
			return nil, ErrClosed
		}
		return transport.NewPipeConn(mine, server, n.cfg.maxMessageSize), nil
	}
	st, ct := sdkmcp.NewInMemoryTransports()
	if _, err := s.server.Connect(identity.WithRemote(n.ctx, n.host.ID()), st, nil); err != nil {
		return nil, fmt.Errorf("connect to own server %s: %w", server, err)
	}
	return ct.Connect(ctx)
}
