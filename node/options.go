package node

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/peer"
	"github.com/mcpmesh/mcpmesh/peer/reach"
)

// ElicitationHandler answers a question that a peer serving one of this
// node's calls asks for its user (elicitation/create).
type ElicitationHandler func(context.Context, *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error)

// SamplingHandler answers a peer's request for an LLM completion
// (sampling/createMessage) made while serving one of this node's calls.
type SamplingHandler func(context.Context, *sdkmcp.CreateMessageRequest) (*sdkmcp.CreateMessageResult, error)

// Option configures a Node.
type Option func(*config) error

type config struct {
	key             crypto.PrivKey
	home            string
	name            string
	version         string
	listen          []string
	maxMessageSize  int
	dialTimeout     time.Duration
	protocolVersion string
	elicit          ElicitationHandler
	elicitDone      ElicitationCompleteHandler
	sample          SamplingHandler
	sampleTools     SamplingWithToolsHandler
	libp2pOpts      []libp2p.Option
	discovery       *discovery.Config
	description     string
	tags            []string
	tasks           taskConfig  // see tasks.go
	psk             pnet.PSK    // see pnet.go
	trust           trustConfig // see trust.go
	limits          *limits.Config
	reach           reach.Config     // see reach.go
	liveness        [2]time.Duration // interval, timeout; see reach.go
}

// DefaultListenAddrs are where a node listens when no WithListenAddrs is
// given: every interface, TCP and QUIC, on ports the system picks.
var DefaultListenAddrs = []string{
	"/ip4/0.0.0.0/tcp/0",
	"/ip4/0.0.0.0/udp/0/quic-v1",
	"/ip6/::/tcp/0",
	"/ip6/::/udp/0/quic-v1",
}

// DefaultProtocolVersion is the MCP protocol version a node asks for on the
// sessions it opens to peers. 2025-11-25 keeps one stateful session per
// stream, lets servers ask their caller directly (elicitation, sampling)
// and sends less per request than 2026-07-28, which a node also serves and
// can be asked to speak with WithProtocolVersion.
const DefaultProtocolVersion = "2025-11-25"

func defaults() *config {
	return &config{
		name:            "mcpmesh",
		version:         "dev",
		listen:          DefaultListenAddrs,
		maxMessageSize:  mcp.DefaultMaxMessageSize,
		dialTimeout:     10 * time.Second,
		protocolVersion: DefaultProtocolVersion,
		reach:           libraryReach(),
		liveness:        [2]time.Duration{reach.DefaultLivenessInterval, reach.DefaultLivenessTimeout},
	}
}

// WithIdentity sets the node's private key. Without it (and without
// WithHome) the node has a fresh, ephemeral identity.
func WithIdentity(key crypto.PrivKey) Option {
	return func(c *config) error {
		if key == nil {
			return fmt.Errorf("WithIdentity: nil key")
		}
		c.key = key
		return nil
	}
}

// WithHome loads the node's identity from the folder dir, creating it on
// first use (see peer.LoadOrCreateIdentity).
func WithHome(dir string) Option {
	return func(c *config) error {
		if dir == "" {
			return fmt.Errorf("WithHome: empty folder")
		}
		c.home = dir
		return nil
	}
}

// WithName sets the name the node gives as an MCP implementation (client
// and default server), shown to peers.
func WithName(name string) Option {
	return func(c *config) error {
		c.name = name
		return nil
	}
}

// WithVersion sets the software version the node reports to peers.
func WithVersion(v string) Option {
	return func(c *config) error {
		c.version = v
		return nil
	}
}

// WithListenAddrs replaces the multiaddrs the node listens on.
func WithListenAddrs(addrs ...string) Option {
	return func(c *config) error {
		c.listen = addrs
		return nil
	}
}

// WithMaxMessageSize bounds one JSON-RPC message on an MCP stream, in both
// directions of every session. A peer that sends more has its stream reset.
func WithMaxMessageSize(n int) Option {
	return func(c *config) error {
		if n < 1024 {
			return fmt.Errorf("WithMaxMessageSize(%d): want at least 1024 bytes", n)
		}
		c.maxMessageSize = n
		return nil
	}
}

// WithDialTimeout bounds how long reaching a peer (connection, stream and
// MCP handshake) may take. The default is 10 seconds.
func WithDialTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("WithDialTimeout(%v): want a positive duration", d)
		}
		c.dialTimeout = d
		return nil
	}
}

// WithProtocolVersion sets the MCP protocol version this node asks for on
// the sessions it opens; the serving peer may settle on another it supports.
func WithProtocolVersion(v string) Option {
	return func(c *config) error {
		c.protocolVersion = v
		return nil
	}
}

// WithElicitationHandler answers questions that peers serving this node's
// calls ask for its user. Without one the node tells peers it cannot answer.
func WithElicitationHandler(h ElicitationHandler) Option {
	return func(c *config) error {
		c.elicit = h
		return nil
	}
}

// ElicitationCompleteHandler learns that a URL-mode question a peer asked
// (a consent page, a login) has been completed out of band
// (notifications/elicitation/complete).
type ElicitationCompleteHandler func(context.Context, *sdkmcp.ElicitationCompleteNotificationRequest)

// WithElicitationCompleteHandler tells the node's user when a URL-mode
// question asked of it has been completed on the peer's side.
func WithElicitationCompleteHandler(h ElicitationCompleteHandler) Option {
	return func(c *config) error {
		c.elicitDone = h
		return nil
	}
}

// WithSamplingHandler answers peers' requests for LLM completions made while
// serving this node's calls. Without one the node tells peers it cannot.
func WithSamplingHandler(h SamplingHandler) Option {
	return func(c *config) error {
		c.sample = h
		return nil
	}
}

// SamplingWithToolsHandler answers a peer's request for an LLM completion
// that may use tools (sampling/createMessage with tools), made while serving
// one of this node's calls: the answer may hold several content blocks,
// tool_use among them.
type SamplingWithToolsHandler func(context.Context, *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error)

// WithSamplingWithToolsHandler answers peers' sampling requests, tools
// included (an agent on a peer running on this node's model, for one). It
// replaces WithSamplingHandler, which sees requests without their tools.
func WithSamplingWithToolsHandler(h SamplingWithToolsHandler) Option {
	return func(c *config) error {
		c.sampleTools = h
		return nil
	}
}

// WithLibp2pOptions adds options to the libp2p host the node builds, after
// the node's own identity and listen addresses and before its reachability
// options (see package reach), which override relay, AutoNAT and AutoRelay
// settings given here; an address factory or NAT manager given here is
// kept (the factory composed with the node's own).
func WithLibp2pOptions(opts ...libp2p.Option) Option {
	return func(c *config) error {
		c.libp2pOpts = append(c.libp2pOpts, opts...)
		return nil
	}
}

func (c *config) identity() (crypto.PrivKey, error) {
	switch {
	case c.key != nil:
		return c.key, nil
	case c.home != "":
		return peer.LoadOrCreateIdentity(c.home)
	default:
		key, _, err := crypto.GenerateEd25519Key(nil)
		return key, err
	}
}

// libraryReach is the library's default reachability: reach.DefaultConfig
// without port mapping (see WithPortMapping).
func libraryReach() reach.Config {
	c := reach.DefaultConfig()
	c.PortMapping = false
	return c
}

// WithReachability says how the node decides whether peers outside its own
// networks can dial it: reach.Auto (the default: AutoNAT asks peers to dial
// back), reach.Public (it can: no relay reservations) or reach.Private (it
// cannot: it reserves a slot with relays at once). See package reach.
func WithReachability(mode string) Option {
	return func(c *config) error {
		c.reach.Reachability = mode
		return nil
	}
}

// WithRelayService says when the node carries connections for others as a
// circuit relay: reach.RelayAuto (the default: while AutoNAT says it is
// publicly reachable), reach.RelayOn (always: a node that joins two private
// networks) or reach.RelayOff. What it gives is bounded by WithRelayLimits.
func WithRelayService(mode string) Option {
	return func(c *config) error {
		c.reach.RelayService = mode
		return nil
	}
}

// WithRelayLimits bounds what the node's relay service gives others (see
// reach.DefaultRelayLimits).
func WithRelayLimits(l reach.RelayLimits) Option {
	return func(c *config) error {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("WithRelayLimits: %w", err)
		}
		c.reach.RelayLimits = l
		return nil
	}
}

// WithRelays adds relays the node reserves a slot with whenever it is not
// known to be publicly reachable, besides those it finds among its peers.
// Each needs an address (a full multiaddr's AddrInfo).
func WithRelays(relays ...lpeer.AddrInfo) Option {
	return func(c *config) error {
		for _, r := range relays {
			if len(r.Addrs) == 0 {
				return fmt.Errorf("WithRelays: relay %s has no address", r.ID)
			}
		}
		c.reach.Relays = append(c.reach.Relays, relays...)
		return nil
	}
}

// WithHolePunching turns DCUtR hole punching on or off (on by default): a
// relayed connection is replaced by a direct one when both sides can.
func WithHolePunching(on bool) Option {
	return func(c *config) error {
		c.reach.HolePunching = on
		return nil
	}
}

// WithPortMapping turns UPnP/NAT-PMP port mapping on or off: the node asks
// its router to forward its listen ports. Off by default in the library
// (the daemon turns it on): libp2p's UPnP discovery leaves goroutines that
// run for up to 15 s after the node has closed (they end on their own).
func WithPortMapping(on bool) Option {
	return func(c *config) error {
		c.reach.PortMapping = on
		return nil
	}
}

// WithLivenessInterval sets how often the node pings a peer while it has a
// call in flight to it or serves a task for it (default 1s); a negative
// interval turns the checks off.
func WithLivenessInterval(d time.Duration) Option {
	return func(c *config) error {
		if d == 0 {
			return fmt.Errorf("WithLivenessInterval(0): want a positive interval, or a negative one to turn checks off")
		}
		c.liveness[0] = d
		return nil
	}
}

// WithLivenessTimeout sets how long such a peer may go without answering a
// ping before its connection is closed and the calls on it fail (default
// 3s). A link so slow that a ping waits longer than this behind a large
// message needs more.
func WithLivenessTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("WithLivenessTimeout(%v): want a positive duration", d)
		}
		c.liveness[1] = d
		return nil
	}
}
