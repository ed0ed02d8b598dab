package reach

import (
	"context"
	"slices"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// autoRelayTag is the tag AutoRelay protects a relay's connection with while
// it holds a reservation there (autorelayTag in go-libp2p v0.51
// p2p/host/autorelay/relay_finder.go). It is the only outside trace of
// AutoRelay's reservations; TestRelayedCall fails if it changes.
const autoRelayTag = "autorelay"

// maxAddrsPerRelay bounds the circuit addresses announced through one relay.
const maxAddrsPerRelay = 8

// relaySource is AutoRelay's peer source: the static relays first, then the
// connected peers that speak the relay protocol (learned by identify) over
// a direct connection.
func (s *Service) relaySource(_ context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, num)
	defer close(out)
	seen := map[peer.ID]bool{}
	for _, r := range s.cfg.Relays {
		if len(out) == num {
			return out
		}
		seen[r.ID] = true
		out <- r
	}
	hp := s.host.Load()
	if hp == nil {
		return out
	}
	h := *hp
	for _, p := range h.Network().Peers() {
		if len(out) == num {
			break
		}
		if seen[p] || !speaksHop(h, p) || !hasDirectConn(h, p) {
			continue
		}
		out <- peer.AddrInfo{ID: p, Addrs: h.Peerstore().Addrs(p)}
	}
	return out
}

func speaksHop(h host.Host, p peer.ID) bool {
	protos, err := h.Peerstore().SupportsProtocols(p, proto.ProtoIDv2Hop)
	return err == nil && len(protos) > 0
}

func hasDirectConn(h host.Host, p peer.ID) bool {
	return slices.ContainsFunc(h.Network().ConnsToPeer(p), func(c network.Conn) bool { return !c.Stat().Limited })
}

// relaysInUse lists the relays AutoRelay holds a reservation with (and is
// still connected to).
func relaysInUse(h host.Host) []peer.ID {
	var out []peer.ID
	for _, p := range h.Network().Peers() {
		if h.ConnManager().IsProtected(p, autoRelayTag) && hasDirectConn(h, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// withCircuitAddrs is the host's address factory: it adds a circuit address
// through each relay the node holds a reservation with, while the node is
// not known to be publicly reachable.
//
// AutoRelay announces such addresses itself, but builds them from the
// relay's public addresses only (cleanupAddressSet, autorelay/addrsplosion.go):
// a relay that joins two private networks gives none, and a node behind it
// could never be dialed. Here every address of the relay that a peer could
// use counts: private ones, and loopback ones when the relay is reached over
// loopback.
func (s *Service) withCircuitAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	hp := s.host.Load()
	if hp == nil {
		return addrs
	}
	h := *hp
	if hostReachability(h) == network.ReachabilityPublic {
		return addrs
	}
	var out []ma.Multiaddr
	for _, r := range relaysInUse(h) {
		if out == nil {
			out = slices.Clone(addrs)
		}
		out = append(out, circuitAddrs(h, r)...)
	}
	if out == nil {
		return addrs
	}
	return out
}

// circuitAddrs are the addresses of this node through relay r.
func circuitAddrs(h host.Host, r peer.ID) []ma.Multiaddr {
	loopback := slices.ContainsFunc(h.Network().ConnsToPeer(r), func(c network.Conn) bool { return manet.IsIPLoopback(c.RemoteMultiaddr()) })
	circuit := ma.StringCast("/p2p/" + r.String() + "/p2p-circuit")
	var out []ma.Multiaddr
	for _, a := range h.Peerstore().Addrs(r) {
		if len(out) == maxAddrsPerRelay {
			break
		}
		if isCircuit(a) || manet.IsIP6LinkLocal(a) || (manet.IsIPLoopback(a) && !loopback) || manet.IsIPUnspecified(a) {
			continue
		}
		out = append(out, a.Encapsulate(circuit))
	}
	return out
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// AllowLimited wraps h so that every stream it opens may run over a limited
// (relayed) connection. Give it to a protocol that libp2p would otherwise
// keep off relayed connections: the swarm then waits for a direct
// connection (DialPeerTimeout, a minute by default) before failing, so a
// DHT query that meets a peer reachable only through a relay would stall
// for the whole lookup. DHT messages are small; a relay's limits bound them.
func AllowLimited(h host.Host) host.Host { return limitedOK{h} }

type limitedOK struct{ host.Host }

func (h limitedOK) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	return h.Host.NewStream(network.WithAllowLimitedConn(ctx, "mcpmesh"), p, pids...)
}
