package limits

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/x/rate"
	ma "github.com/multiformats/go-multiaddr"

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
	opts = append(connLimitOptions(cfg), opts...)
	rm, err := rcmgr.NewResourceManager(l, opts...)
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	return &hintingRM{ResourceManager: rm}, nil
}

// privateNets are not rate limited per IP (a restarting LAN node must not be
// locked out); the concurrent bound per IP still applies there.
var privateNets = []string{
	"127.0.0.0/8", "::1/128", // loopback (libp2p's own exemption)
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
	"fc00::/7", "fe80::/10",
}

// connLimitOptions are rcmgr's per-IP connection limits sized by cfg: how
// many connections one IP address may hold open, and how fast a public one
// may open new ones.
func connLimitOptions(cfg Config) []rcmgr.Option {
	var exempt []rate.PrefixLimit
	for _, n := range privateNets {
		exempt = append(exempt, rate.PrefixLimit{Prefix: netip.MustParsePrefix(n)}) // zero limit: none
	}
	perIP := rate.Limit{RPS: cfg.ConnRatePerIP, Burst: cfg.ConnBurstPerIP}
	return []rcmgr.Option{
		rcmgr.WithConnRateLimiters(&rate.Limiter{
			NetworkPrefixLimits: exempt,
			SubnetRateLimiter: rate.SubnetLimiter{
				IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: perIP}},
				IPv6SubnetLimits: []rate.SubnetLimit{{PrefixLength: 56, Limit: perIP}},
				GracePeriod:      time.Minute,
			},
		}),
		rcmgr.WithLimitPerSubnet(
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: cfg.ConnsPerIP}},
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 56, ConnCount: cfg.ConnsPerIP}, {PrefixLength: 48, ConnCount: 8 * cfg.ConnsPerIP}},
		),
	}
}

// hintingRM names the setting to change when a connection is refused for
// the per-IP limits: libp2p says only "rate limit exceeded". The refusing
// side also logs it (at most once a minute), as the peer refused only sees
// its connection closed.
type hintingRM struct {
	network.ResourceManager
	logged atomic.Int64 // unix nanoseconds of the last warning
}

// Per-IP connection refusals, as rcmgr words them (go-libp2p v0.51
// p2p/host/resource-manager/rcmgr.go).
const (
	rcmgrRateLimited = "rate limit exceeded"
	rcmgrTooManyConn = "connections per ip limit exceeded"
)

// ErrConnLimit marks a connection refused for the per-IP limits.
var ErrConnLimit = errors.New("per-IP connection limit")

func (h *hintingRM) OpenConnection(dir network.Direction, usefd bool, endpoint ma.Multiaddr) (network.ConnManagementScope, error) {
	scope, err := h.ResourceManager.OpenConnection(dir, usefd, endpoint)
	if err == nil {
		return scope, nil
	}
	var hint string
	switch msg := err.Error(); {
	case strings.Contains(msg, rcmgrRateLimited):
		hint = "too many new connections with this IP address in a short time; raise \"limits\": {\"connRatePerIP\", \"connBurstPerIP\"} in the configuration (limits.Config.ConnRatePerIP)"
	case strings.Contains(msg, rcmgrTooManyConn):
		hint = "too many connections open with this IP address; raise \"limits\": {\"connsPerIP\"} in the configuration (limits.Config.ConnsPerIP)"
	default:
		return nil, err
	}
	err = fmt.Errorf("%w with %s: %w: %s", ErrConnLimit, endpoint, err, hint)
	now := time.Now().UnixNano()
	if last := h.logged.Load(); now-last > int64(time.Minute) && h.logged.CompareAndSwap(last, now) {
		log.Warnf("refused a %s connection: %v", dir, err)
	}
	return nil, err
}

// GetConnLimit passes libp2p's check of the connection manager's limits on.
func (h *hintingRM) GetConnLimit() int {
	if l, ok := h.ResourceManager.(interface{ GetConnLimit() int }); ok {
		return l.GetConnLimit()
	}
	return math.MaxInt
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
