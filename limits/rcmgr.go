package limits

import (
	"fmt"
	"math"
	"strings"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// ResourceManager returns a libp2p resource manager with go-libp2p's default
// limits scaled to the machine (as libp2p.New builds by default, its own
// services' limits included), lowered per peer to cfg's MaxStreamsPerPeer
// inbound streams and MaxMemoryPerPeer, and with limits of their own for
// the mcpmesh MCP protocols: MaxStreamsPerProtocol inbound streams per
// shared server, MaxStreamsPerProtocolPeer per server and peer. opts go to
// rcmgr.NewResourceManager.
//
// The MCP protocols are one per shared server (transport.ProtocolPrefix + name),
// and servers come and go while the node runs, so they are matched by
// prefix: each server has the same limits, counted apart.
func ResourceManager(cfg Config, opts ...rcmgr.Option) (network.ResourceManager, error) {
	cfg = cfg.withDefaults()
	scaling := rcmgr.DefaultLimits // a copy: its maps are nil, filled below in the copy only
	libp2p.SetDefaultServiceLimits(&scaling)
	partial := rcmgr.PartialLimitConfig{
		PeerDefault: rcmgr.ResourceLimits{
			StreamsInbound: rcmgr.LimitVal(cfg.MaxStreamsPerPeer),
			Memory:         rcmgr.LimitVal64(cfg.MaxMemoryPerPeer),
		},
	}
	base := rcmgr.NewFixedLimiter(partial.Build(scaling.AutoScale()))
	l := &mcpLimiter{
		Limiter:   base,
		proto:     withInbound(base.GetProtocolLimits(""), cfg.MaxStreamsPerProtocol),
		protoPeer: withInbound(base.GetProtocolPeerLimits(""), min(cfg.MaxStreamsPerProtocolPeer, cfg.MaxStreamsPerPeer)),
	}
	// Outbound MCP streams are bounded per peer only (the node opens one
	// per server it calls, a relay one per session it relays): so a stream
	// refused at the MCP per-peer scope is always an inbound one, which
	// the reporter of Limiter.ResourceManager counts as a strike.
	l.protoPeer.StreamsOutbound = math.MaxInt
	l.protoPeer.Streams = math.MaxInt
	rm, err := rcmgr.NewResourceManager(l, opts...)
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	return rm, nil
}

// ResourceManager returns the resource manager of the package-level
// ResourceManager with l's limits, which also tells l of each inbound
// stream it refuses a peer (over its streams in all, or on one MCP server):
// each is a strike against that peer.
func (l *Limiter) ResourceManager(opts ...rcmgr.Option) (network.ResourceManager, error) {
	return ResourceManager(l.cfg, append(opts, rcmgr.WithMetrics(striker{l}))...)
}

// striker is a metrics reporter that strikes the peers whose inbound
// streams the resource manager refuses.
type striker struct{ l *Limiter }

func (s striker) BlockStream(p peer.ID, dir network.Direction) {
	if dir == network.DirInbound {
		s.l.Strike(p, "streams")
	}
}

func (s striker) BlockProtocolPeer(proto protocol.ID, p peer.ID) {
	if isMCP(proto) {
		s.l.Strike(p, "streams")
	}
}

func (striker) AllowConn(network.Direction, bool)      {}
func (striker) BlockConn(network.Direction, bool)      {}
func (striker) AllowStream(peer.ID, network.Direction) {}
func (striker) AllowPeer(peer.ID)                      {}
func (striker) BlockPeer(peer.ID)                      {}
func (striker) AllowProtocol(protocol.ID)              {}
func (striker) BlockProtocol(protocol.ID)              {}
func (striker) AllowService(string)                    {}
func (striker) BlockService(string)                    {}
func (striker) BlockServicePeer(string, peer.ID)       {}
func (striker) AllowMemory(int)                        {}
func (striker) BlockMemory(int)                        {}

// mcpLimiter is a limiter with the same limits for every protocol ID that
// starts with transport.ProtocolPrefix: rcmgr only knows exact IDs.
type mcpLimiter struct {
	rcmgr.Limiter
	proto, protoPeer rcmgr.BaseLimit
}

func isMCP(id protocol.ID) bool { return strings.HasPrefix(string(id), transport.ProtocolPrefix) }

func (l *mcpLimiter) GetProtocolLimits(id protocol.ID) rcmgr.Limit {
	if isMCP(id) {
		return &l.proto
	}
	return l.Limiter.GetProtocolLimits(id)
}

func (l *mcpLimiter) GetProtocolPeerLimits(id protocol.ID) rcmgr.Limit {
	if isMCP(id) {
		return &l.protoPeer
	}
	return l.Limiter.GetProtocolPeerLimits(id)
}

// withInbound is lim with inbound streams bounded by in; the total is no
// less than that, outbound streams and memory stay.
func withInbound(lim rcmgr.Limit, in int) rcmgr.BaseLimit {
	return rcmgr.BaseLimit{
		StreamsInbound:  in,
		StreamsOutbound: lim.GetStreamLimit(network.DirOutbound),
		Streams:         max(lim.GetStreamTotalLimit(), in),
		Conns:           lim.GetConnTotalLimit(),
		ConnsInbound:    lim.GetConnLimit(network.DirInbound),
		ConnsOutbound:   lim.GetConnLimit(network.DirOutbound),
		FD:              lim.GetFDLimit(),
		Memory:          lim.GetMemoryLimit(),
	}
}
