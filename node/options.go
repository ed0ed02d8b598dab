package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/metrics"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/peer/reach"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// ElicitationHandler answers a question that a peer serving one of this
// node's calls asks for its user (elicitation/create).
type ElicitationHandler func(context.Context, *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error)

// SamplingHandler answers a peer's request for an LLM completion
// (sampling/createMessage) made while serving one of this node's calls.
type SamplingHandler func(context.Context, *sdkmcp.CreateMessageRequest) (*sdkmcp.CreateMessageResult, error)

// Option configures a Node. Every option of a node is in this file; New
// validates them once, in order.
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
	tasks           taskConfig
	psk             pnet.PSK // see pnet.go
	trust           trustConfig
	limits          *limits.Config
	reach           reach.Config     // see reach.go
	liveness        [2]time.Duration // interval, timeout; see reach.go
	events          EventsConfig     // see events.go
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
		maxMessageSize:  transport.DefaultMaxMessageSize,
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
// first use (see identity.LoadOrCreate).
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
		return identity.LoadOrCreate(c.home)
	default:
		key, _, err := crypto.GenerateEd25519Key(nil)
		return key, err
	}
}

// --- discovery ---

// WithDiscovery runs a DHT on the node: it publishes the node's signed card
// and advertises every tool name and tag it shares, and can look up others'
// (Find, Card, CallAny). cfg's zero value is a sane default, with mDNS off.
// In a private mesh (WithPrivateNetwork) mDNS, if cfg turns it on, announces
// under a name derived from the mesh key (discovery.PrivateMDNSService).
func WithDiscovery(cfg discovery.Config) Option {
	return func(c *config) error {
		c.discovery = &cfg
		return nil
	}
}

// WithDescription sets the description on the node's card.
func WithDescription(d string) Option {
	return func(c *config) error {
		c.description = d
		return nil
	}
}

// WithTags sets tags that apply to the whole node, on its card.
func WithTags(tags ...string) Option {
	return func(c *config) error {
		c.tags = tags
		return nil
	}
}

// --- private mesh ---

// WithPrivateNetwork makes the node a member of a private mesh: its libp2p
// connections are encrypted with psk (libp2p's private networks, on top of
// the usual Noise or TLS), so it can reach and be reached only by nodes
// holding the same key. A node without the key cannot even complete a
// connection.
//
// Private networks work over TCP and WebSocket only: libp2p has no QUIC (nor
// WebTransport, WebRTC) with a pre-shared key. The node therefore drops its
// QUIC listen addresses (see PrivateNetworkAddrs); with none left it fails
// to start. The cost: no QUIC, so no 0-RTT connection setup, and one TCP
// connection's head-of-line blocking for all streams; relays and hole
// punching work over TCP.
func WithPrivateNetwork(psk pnet.PSK) Option {
	return func(c *config) error {
		if len(psk) != 32 {
			return fmt.Errorf("WithPrivateNetwork: key of %d bytes, want 32", len(psk))
		}
		c.psk = psk
		return nil
	}
}

// --- trust: policy, delegation, audit, limits ---

// DefaultDelegationTTL is how long the delegation a node gives with a call it
// starts stays valid, unless WithDelegation says otherwise.
const DefaultDelegationTTL = time.Hour

// AuditFile is the name of the audit log in a node's home.
const AuditFile = "audit.log"

// trustConfig is who may see and call what the node shares, and what the
// node delegates with the calls it makes.
type trustConfig struct {
	open       bool
	policy     *policy.Policy
	scope      delegation.Scope // delegated with the calls the node starts
	ttl        time.Duration
	noDelegate bool
	auditPath  string // "" with no home: in memory only
	auditSet   bool
	metrics    *metrics.Metrics
}

// WithOpen lets every peer that can connect see and call everything the node
// shares, as if its policy granted everything to everyone. For demos and
// labs; a node started this way says so in its log.
func WithOpen() Option {
	return func(c *config) error {
		c.trust.open, c.trust.policy = true, nil
		return nil
	}
}

// WithPolicy sets who may see and call what the node shares. Without it
// (and without WithOpen) a node is closed: peers see and may call nothing.
// SetPolicy replaces it while the node runs.
func WithPolicy(p *policy.Policy) Option {
	return func(c *config) error {
		c.trust.policy, c.trust.open = p, false
		return nil
	}
}

// WithDelegation sets what the node delegates to the peer it calls with each
// call it starts (not one it makes while serving a call: that one passes on,
// narrowed, the delegation it was given): the tools the peer may use on the
// node's behalf, on which peers, for how long. The default is everything,
// everywhere, for DefaultDelegationTTL: the serving peers' policies decide.
// A zero ttl keeps the default; WithoutDelegation sends none.
func WithDelegation(scope delegation.Scope, ttl time.Duration) Option {
	return func(c *config) error {
		if len(scope.Tools) == 0 || len(scope.Peers) == 0 {
			return errors.New("delegation scope: name at least one tool pattern and one peer (or \"*\")")
		}
		c.trust.scope = scope
		if ttl > 0 {
			c.trust.ttl = ttl
		}
		return nil
	}
}

// WithoutDelegation makes the node call as itself only: peers it calls see
// no delegation, and cannot act for it further down.
func WithoutDelegation() Option {
	return func(c *config) error {
		c.trust.noDelegate = true
		return nil
	}
}

// WithAuditFile sets where the node writes its audit log (one JSON record
// per served call). The default is AuditFile in the node's home, or memory
// only without a home; "" keeps it in memory only.
func WithAuditFile(path string) Option {
	return func(c *config) error {
		c.trust.auditPath, c.trust.auditSet = path, true
		return nil
	}
}

// WithMetrics makes the node count its calls, refusals, tasks and lookups in
// m, and libp2p its own. Serve m.Handler() where Prometheus can scrape it.
func WithMetrics(m *metrics.Metrics) Option {
	return func(c *config) error {
		c.trust.metrics = m
		return nil
	}
}

// WithLimits sets what one peer may ask of the node: calls in flight and
// per second, strikes before a ban and how long a ban lasts, and the
// streams and memory libp2p may hold for it. The default is
// limits.DefaultConfig(); zero fields take their default.
func WithLimits(cfg limits.Config) Option {
	return func(c *config) error {
		if cfg.Rate > 0 && cfg.Burst < 0 || cfg.StrikeWindow < 0 || cfg.BanFor < 0 {
			return fmt.Errorf("WithLimits: negative burst, strike window or ban duration")
		}
		c.limits = &cfg
		return nil
	}
}

// --- reachability: relays, hole punching, port mapping, liveness ---

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
// 3s). Bytes still moving to or from the peer on its MCP streams count as
// an answer (see reach.Signs), so a ping waiting behind a large message
// on a slow link is not silence.
func WithLivenessTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("WithLivenessTimeout(%v): want a positive duration", d)
		}
		c.liveness[1] = d
		return nil
	}
}

// --- tasks ---

// taskConfig is the task layer's part of the node's configuration.
type taskConfig struct {
	off       bool
	retention tasks.Retention
	promote   time.Duration
}

// WithTaskTracking turns the task layer on (the default) or off. Off, the
// node neither records the calls it serves and makes nor passes a task
// context on: no tree, no loop, budget or deadline guards. For comparison
// and for nodes that must not keep any record of calls.
func WithTaskTracking(on bool) Option {
	return func(c *config) error {
		c.tasks.off = !on
		return nil
	}
}

// WithTaskRetention sets how long (default 10 minutes) and how many (default
// 1000) ended tasks the node keeps, with their results, for listing and
// polling.
func WithTaskRetention(ttl time.Duration, max int) Option {
	return func(c *config) error {
		if ttl < 0 || max < 0 {
			return fmt.Errorf("WithTaskRetention(%v, %d): want positive values", ttl, max)
		}
		c.tasks.retention = tasks.Retention{TTL: ttl, Max: max}
		return nil
	}
}

// WithTaskPromotion makes a tools/call from a client that declares the MCP
// Tasks extension (io.modelcontextprotocol/tasks) and that has not finished
// within d become a task: the call is answered with a task handle
// (resultType "task") and the client polls tasks/get. 0 (the default) means
// only calls that ask for it (StartTask) become tasks.
func WithTaskPromotion(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("WithTaskPromotion(%v): want a positive duration", d)
		}
		c.tasks.promote = d
		return nil
	}
}

// --- events ---

// EventsConfig tunes a node's events: the log subscribers resume from, and
// what one peer may hold of the feed. The zero value is the default.
type EventsConfig struct {
	// Log bounds the event log (defaults: 10,000 events, 16 MiB, an hour).
	// Its Dir defaults to the events folder of the node's home (the log
	// then outlives a restart), unless Memory is set; a node without a
	// home keeps it in memory.
	Log    events.LogConfig
	Memory bool
	// MaxData bounds one event's data (default 64 KiB).
	MaxData int
	// MaxSubscriptionsPerPeer and MaxSubscriptions bound the subscriptions
	// held open (defaults 16 per peer, 1024 in all).
	MaxSubscriptionsPerPeer, MaxSubscriptions int
	// Heartbeat is how often a quiet subscription hears from the node
	// (default 15s); WriteTimeout how long a subscriber may leave an event
	// unread before it is dropped (default 30s).
	Heartbeat, WriteTimeout time.Duration
	// Off turns events off: no log, no feed, no event types on the card.
	Off bool
}

// WithEvents tunes the node's events (see EventsConfig).
func WithEvents(cfg EventsConfig) Option {
	return func(c *config) error {
		if cfg.MaxData < 0 || cfg.MaxSubscriptions < 0 || cfg.MaxSubscriptionsPerPeer < 0 || cfg.Heartbeat < 0 || cfg.WriteTimeout < 0 {
			return fmt.Errorf("WithEvents: negative bound")
		}
		c.events = cfg
		return nil
	}
}
