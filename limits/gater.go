package limits

import (
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Gater returns a connection gater that refuses connections to and from
// banned peers: dials to them, and inbound connections once their peer ID
// is known (after the security handshake). With next, a connection must
// pass both gaters.
func (l *Limiter) Gater(next ...connmgr.ConnectionGater) connmgr.ConnectionGater {
	g := &gater{l: l}
	if len(next) > 0 {
		g.next = next[0]
	}
	return g
}

type gater struct {
	l    *Limiter
	next connmgr.ConnectionGater // may be nil
}

func (g *gater) allowed(p peer.ID) bool {
	_, banned := g.l.Banned(p)
	if banned {
		log.Debugw("refused a connection of a banned peer", "peer", p)
	}
	return !banned
}

func (g *gater) InterceptPeerDial(p peer.ID) bool {
	return g.allowed(p) && (g.next == nil || g.next.InterceptPeerDial(p))
}

func (g *gater) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	return g.allowed(p) && (g.next == nil || g.next.InterceptAddrDial(p, a))
}

func (g *gater) InterceptAccept(c network.ConnMultiaddrs) bool {
	return g.next == nil || g.next.InterceptAccept(c)
}

func (g *gater) InterceptSecured(d network.Direction, p peer.ID, c network.ConnMultiaddrs) bool {
	return g.allowed(p) && (g.next == nil || g.next.InterceptSecured(d, p, c))
}

func (g *gater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	if !g.allowed(c.RemotePeer()) {
		return false, 0
	}
	if g.next == nil {
		return true, 0
	}
	return g.next.InterceptUpgraded(c)
}
