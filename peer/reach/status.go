package reach

import (
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/nat"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Status is how a node is reached and how it reaches its peers, now.
type Status struct {
	// Reachability is "public", "private" or "unknown"; DecidedBy says what
	// decided it; Mode is the configured mode (auto, public, private).
	Reachability string `json:"reachability"`
	DecidedBy    string `json:"decidedBy"`
	Mode         string `json:"mode"`
	// Listen are the addresses the node listens on; Announced those it
	// gives peers (interface addresses, observed and mapped ones, circuit
	// addresses through its relays).
	Listen    []string `json:"listen"`
	Announced []string `json:"announced"`
	// Reachable and Unreachable are the addresses AutoNAT v2 has checked.
	Reachable   []string `json:"reachable,omitempty"`
	Unreachable []string `json:"unreachable,omitempty"`
	// PortMapping is "off", "searching", "no gateway" or "gateway found";
	// Mappings are the external addresses the gateway gave.
	PortMapping string   `json:"portMapping"`
	Mappings    []string `json:"mappings,omitempty"`
	// RelayService is the configured mode, Relaying whether the node serves
	// as a relay now.
	RelayService string `json:"relayService"`
	Relaying     bool   `json:"relaying"`
	HolePunching bool   `json:"holePunching"`
	// Relays are the relays this node holds a reservation with.
	Relays []RelayInUse `json:"relays"`
	// Peers are the connected peers.
	Peers []PeerStatus `json:"peers"`
}

// RelayInUse is a relay the node holds a reservation with, and the circuit
// addresses through it.
type RelayInUse struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// PeerStatus is one connected peer.
type PeerStatus struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Relayed is true when every connection to the peer goes through a
	// relay (Via); Transport is the best connection's ("tcp", "quic-v1", …).
	Relayed   bool          `json:"relayed"`
	Via       string        `json:"via,omitempty"`
	Transport string        `json:"transport"`
	Addr      string        `json:"addr"`
	Conns     int           `json:"conns"`
	Latency   time.Duration `json:"latencyNs,omitempty"`
}

// Status describes h, the host the service was started with; name, if not
// nil, gives a peer's name when known.
func (s *Service) Status(name func(peer.ID) string) Status {
	hp := s.host.Load()
	if hp == nil {
		return Status{}
	}
	h := *hp
	st := Status{
		Mode:         s.cfg.Reachability,
		RelayService: s.cfg.RelayService,
		HolePunching: s.cfg.HolePunching,
		Listen:       strs(slices.DeleteFunc(h.Network().ListenAddresses(), isCircuit)), // the relay transport's bare /p2p-circuit
		Announced:    strs(h.Addrs()),
		Relays:       []RelayInUse{},
		Peers:        []PeerStatus{},
	}
	if c, ok := h.(interface {
		ConfirmedAddrs() (reachable, unreachable, unknown []ma.Multiaddr)
	}); ok {
		r, u, _ := c.ConfirmedAddrs()
		st.Reachable, st.Unreachable = strs(r), strs(u)
	}
	st.Reachability, st.DecidedBy = s.decide(h, len(st.Reachable), len(st.Unreachable))
	st.PortMapping, st.Mappings = s.portMapping(h)
	protos := h.Mux().Protocols()
	st.Relaying = slices.Contains(protos, proto.ProtoIDv2Hop)
	for _, r := range relaysInUse(h) {
		st.Relays = append(st.Relays, RelayInUse{ID: r.String(), Addrs: strs(circuitAddrs(h, r))})
	}
	for _, p := range h.Network().Peers() {
		ps := peerStatus(h, p)
		if name != nil {
			ps.Name = name(p)
		}
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return strings.Compare(a.ID, b.ID) })
	return st
}

func (s *Service) decide(h host.Host, reachable, unreachable int) (string, string) {
	switch s.cfg.Reachability {
	case Public:
		return "public", "set by configuration (reachability public)"
	case Private:
		return "private", "set by configuration (reachability private)"
	}
	switch {
	case reachable > 0:
		return "public", "AutoNAT v2: peers dialed back an address of this node"
	}
	switch hostReachability(h) {
	case network.ReachabilityPublic:
		return "public", "AutoNAT: peers dialed this node back"
	case network.ReachabilityPrivate:
		return "private", "AutoNAT: peers could not dial this node back"
	}
	if unreachable > 0 {
		return "private", "AutoNAT v2: peers could not dial back any address of this node"
	}
	if !slices.ContainsFunc(h.Addrs(), manet.IsPublicAddr) {
		return "unknown", "no public address: reachable on its own networks, and from elsewhere only through a relay"
	}
	return "unknown", "AutoNAT has no answer yet (it needs connected peers with public addresses)"
}

func (s *Service) portMapping(h host.Host) (string, []string) {
	if !s.cfg.PortMapping {
		return "off", nil
	}
	mp := s.natmgr.Load()
	if mp == nil {
		return "off", nil
	}
	m := *mp
	if !m.HasDiscoveredNAT() {
		if time.Since(s.started) < nat.DiscoveryTimeout {
			return "searching", nil
		}
		return "no gateway", nil
	}
	var mapped []string
	for _, a := range h.Network().ListenAddresses() {
		if ext := m.GetMapping(a); ext != nil {
			mapped = append(mapped, a.String()+" → "+ext.String())
		}
	}
	return "gateway found", mapped
}

func peerStatus(h host.Host, p peer.ID) PeerStatus {
	ps := PeerStatus{ID: p.String(), Latency: h.Peerstore().LatencyEWMA(p)}
	conns := h.Network().ConnsToPeer(p)
	ps.Conns = len(conns)
	var best network.Conn
	for _, c := range conns {
		if best == nil || best.Stat().Limited && !c.Stat().Limited {
			best = c
		}
	}
	if best == nil {
		return ps
	}
	addr := best.RemoteMultiaddr()
	ps.Addr = addr.String()
	ps.Relayed = best.Stat().Limited || isCircuit(addr)
	if ps.Relayed {
		relayPart, _ := ma.SplitFunc(addr, func(c ma.Component) bool { return c.Protocol().Code == ma.P_CIRCUIT })
		if id, err := peer.IDFromP2PAddr(relayPart); err == nil {
			ps.Via = id.String()
		}
		ps.Transport = "p2p-circuit"
		return ps
	}
	ps.Transport = best.ConnState().Transport
	return ps
}

func strs(addrs []ma.Multiaddr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}
