package node

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/sessions"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/peer/reach"
)

// reachService makes the node's reachability service, whose relay refuses
// the peers lim has banned.
func (c *config) reachService(lim *limits.Limiter) (*reach.Service, error) {
	rc := c.reach
	if lim != nil {
		rc.Banned = func(p lpeer.ID) bool {
			_, banned := lim.Banned(p)
			return banned
		}
	}
	return reach.New(rc)
}

// initReach sets up what needs the host but runs only on demand: the
// liveness checker and the tracker of relayed sessions. New calls it once
// the host exists, before anything is shared.
func (n *Node) initReach(svc *reach.Service) {
	n.reach = svc
	n.moves = reach.NewMoves(func(cs *sdkmcp.ClientSession) { cs.Close() })
	if interval := n.cfg.liveness[0]; interval > 0 {
		n.live = reach.NewLiveness(n.host, interval, n.cfg.liveness[1], n.lostPeer)
	}
}

// startReach starts the reachability service's watch on connections and
// addresses; New calls it last, once discovery (which a change of address
// republishes) runs.
func (n *Node) startReach() error {
	return n.reach.Start(n.host, reach.Hooks{Direct: n.moves.Direct, AddrsChanged: n.changed})
}

func (n *Node) closeReach() error {
	if n.live != nil {
		n.live.Close()
	}
	if n.reach != nil {
		return n.reach.Close()
	}
	return nil
}

func (n *Node) lostPeer(l reach.Lost) {
	log.Warnf("peer %s did not answer pings for %v: closed its connection (calls to it fail, tasks it asked for are cancelled)", l.Peer, l.Silent.Round(100*time.Millisecond))
}

func nothing() {}

// hold watches p for as long as the node has work with it: a call in flight
// to it, or a task served for it (see reach.Liveness).
func (n *Node) hold(p lpeer.ID) (release func()) {
	if n.live == nil || p == n.host.ID() || p == "" {
		return nothing
	}
	return n.live.Hold(p)
}

// signs returns what tells the liveness checker of the signs of life of
// s's connection (reach.Signs): the node's MCP streams tell it of what they
// read and write, so that a ping waiting behind a large message does not
// make a connection still carrying data look lost. nil if checks are off.
func (n *Node) signs(s network.Stream) transport.Signs {
	if n.live == nil {
		return nil
	}
	return n.live.Signs(s.Conn())
}

// lostWhy says why the connection to p was lost, when the liveness checker
// closed it just now.
func (n *Node) lostWhy(p lpeer.ID) string {
	if n.live == nil {
		return ""
	}
	if l, ok := n.live.LostRecently(p, 10*time.Second); ok {
		return fmt.Sprintf(" (no answer to pings for %v)", l.Silent.Round(100*time.Millisecond))
	}
	return ""
}

// Liveness returns the node's liveness checker, or nil if checks are off.
func (n *Node) Liveness() *reach.Liveness { return n.live }

// Reachability reports how the node is reached and how it reaches each
// connected peer (direct or relayed, transport, latency).
func (n *Node) Reachability() reach.Status {
	return n.reach.Status(n.peerName)
}

// peerName is the name a peer gives as an MCP server (its card's name too),
// from an open session to it.
func (n *Node) peerName(p lpeer.ID) string {
	names := n.serversOf(p)
	if len(names) == 0 {
		return ""
	}
	// The node's own server first: every node has one.
	for i, s := range names {
		if s == transport.DefaultServer {
			names[0], names[i] = names[i], names[0]
		}
	}
	for _, server := range names {
		cs, ok := n.pool.Lookup(sessions.Key{Peer: p, Server: server})
		if !ok {
			continue
		}
		if r := cs.InitializeResult(); r != nil && r.ServerInfo != nil {
			return r.ServerInfo.Name
		}
	}
	return ""
}

// mcpStream marks ctx as that of an MCP stream, which may run over a
// limited (relayed) connection: MCP is what the mesh is for, and a relay's
// limits bound what it carries (see reach.RelayLimits).
func mcpStream(ctx context.Context) context.Context {
	return network.WithAllowLimitedConn(ctx, "mcp")
}

// trackRelayed tracks cs, a session to server on p opened over s, if s runs
// over a relayed connection: a direct connection to p moves it (see
// reach.Moves).
func (n *Node) trackRelayed(p lpeer.ID, server string, s network.Stream, cs *sdkmcp.ClientSession) {
	if !s.Conn().Stat().Limited {
		return
	}
	key := sessions.Key{Peer: p, Server: server}
	n.moves.Relayed(p, cs, func() { n.pool.Retire(key, cs) })
}
