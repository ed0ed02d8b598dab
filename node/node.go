// Package node composes an mcpmesh node: a libp2p host that serves MCP
// servers to peers and calls theirs, over one authenticated connection per
// peer.
//
// A node is both an MCP server and an MCP client. Each server it shares (its
// own Go-registered tools under [transport.DefaultServer], stdio programs, other
// SDK servers) is reached on its own stream protocol; each peer the node
// calls gets one client session per server, reused by concurrent calls.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/internal/owner"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/sessions"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node/iface"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/reach"
	"github.com/mcpmesh/mcpmesh/peer/trust"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

var log = logging.Logger("mcpmesh/node")

// A Node is what the gateway and agents use.
var _ iface.Node = (*Node)(nil)

// Node is one participant of the mesh.
type Node struct {
	cfg    *config
	host   host.Host
	client *sdkmcp.Client
	inputs *ask.Inputs
	pool   *sessions.Pool
	tools  *toolIndex
	own    *sdkmcp.Server
	disc   *discovery.Service // nil without WithDiscovery
	self   sync.Map           // client sessions to the node's own servers
	limits *limits.Limiter
	reach  *reach.Service                      // see reach.go
	live   *reach.Liveness                     // nil if checks are off
	moves  *reach.Moves[*sdkmcp.ClientSession] // sessions on relayed connections
	audit  *audit.Log
	names  identity.Texts   // peer IDs' text, for metrics
	trust  *trust.Guard     // policy, delegation, limits, audit: see trust.go
	tasks  *tracker.Tracker // the task layer: see tasks.go
	ev     *nodeEvents      // the event log, feed and sources: see events.go; nil with events off

	ctx    context.Context // ends when Close starts
	cancel context.CancelFunc
	group  owner.Group // inbound sessions, relays, KeepConnected loops, bans being enforced

	mu      sync.Mutex
	servers map[string]*sharedServer
	inbound map[*sdkmcp.ServerSession]string // open sessions served, to the server named
	closed  bool
}

// sharedServer is a server the node shares: an SDK server of its own
// (server), or one whose sessions it passes through (pass): a peer's
// (relay) or a program's or an endpoint's (share).
type sharedServer struct {
	server *sdkmcp.Server
	pass   passFunc
	relay  *relayTarget
	share  *relay.Share
	stop   func() // stops what keeps the server alive (a program's processes), if anything
}

// New starts a node: its libp2p host listens, and its default server (for
// tools registered with AddTool and friends) is shared under
// transport.DefaultServer.
func New(opts ...Option) (*Node, error) {
	cfg := defaults()
	for _, o := range opts {
		if err := o(cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.applyPrivateNetwork(); err != nil {
		return nil, err
	}
	key, err := cfg.identity()
	if err != nil {
		return nil, err
	}
	hostOpts := append([]libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(cfg.listen...),
		libp2p.UserAgent("mcpmesh/" + cfg.version),
	}, cfg.libp2pOpts...)
	if m := cfg.trust.metrics; m != nil {
		hostOpts = append(hostOpts, libp2p.PrometheusRegisterer(m.Registerer()))
	} else {
		hostOpts = append(hostOpts, libp2p.DisableMetrics())
	}
	lim, limitOpts, err := cfg.limitOptions(key)
	if err != nil {
		return nil, err
	}
	rs, err := cfg.reachService(lim)
	if err != nil {
		return nil, err
	}
	hostOpts = append(hostOpts, rs.Options()...)
	hostOpts = append(hostOpts, limitOpts...) // last: see limitOptions
	h, err := libp2p.New(hostOpts...)
	if err != nil {
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:     cfg,
		host:    h,
		inputs:  ask.NewInputs(),
		ctx:     ctx,
		cancel:  cancel,
		servers: map[string]*sharedServer{},
		inbound: map[*sdkmcp.ServerSession]string{},
		limits:  lim,
	}
	n.initLimits()
	n.initReach(rs)
	if err := n.initTrust(); err != nil {
		h.Close()
		cancel()
		return nil, err
	}
	if err := n.initEvents(); err != nil {
		h.Close()
		cancel()
		n.audit.Close()
		return nil, err
	}
	n.initTasks()
	n.tools = newToolIndex()
	n.client = sdkmcp.NewClient(n.implementation(), n.clientOptions())
	n.tasks.RegisterClient(n.client)
	n.pool = sessions.NewPool(n.dialSession, func(_ sessions.Key, cs *sdkmcp.ClientSession) {
		n.tools.invalidate(cs)
		n.self.Delete(cs)
		n.moves.Ended(cs)
	})
	n.own = sdkmcp.NewServer(n.implementation(), &sdkmcp.ServerOptions{Logger: sdkLogger(),
		// Resources added to the node's server can be subscribed to (the
		// SDK keeps the subscriptions): Server().ResourceUpdated reaches
		// peers and the node's own events.
		SubscribeHandler:   func(context.Context, *sdkmcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *sdkmcp.UnsubscribeRequest) error { return nil },
	})
	if err := n.Share(transport.DefaultServer, n.own); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.startDiscovery(); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.startReach(); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.startEvents(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) implementation() *sdkmcp.Implementation {
	return &sdkmcp.Implementation{Name: n.cfg.name, Version: n.cfg.version}
}

// sdkLogger gives the SDK's own logging to go-log, under mcpmesh/sdk.
func sdkLogger() *slog.Logger {
	return slog.New(logging.SlogHandler()).With("logger", "mcpmesh/sdk")
}

func (n *Node) clientOptions() *sdkmcp.ClientOptions {
	opts := &sdkmcp.ClientOptions{
		Logger: sdkLogger(),
		// A changed tool list on a peer's server makes our cached copy stale;
		// on one of our own, our card too.
		// On one of our own, our card too, and it is an event.
		ToolListChangedHandler: func(_ context.Context, req *sdkmcp.ToolListChangedRequest) {
			n.tools.invalidate(req.Session)
			n.selfChanged(req.Session)
			n.serverChanged(req.Session, events.ToolsChanged)
		},
		ResourceListChangedHandler: func(_ context.Context, req *sdkmcp.ResourceListChangedRequest) {
			n.selfChanged(req.Session)
			n.serverChanged(req.Session, events.ResourcesChanged)
		},
		PromptListChangedHandler: func(_ context.Context, req *sdkmcp.PromptListChangedRequest) {
			n.selfChanged(req.Session)
			n.serverChanged(req.Session, events.PromptsChanged)
		},
		// Updates of resources of our own servers, which the node
		// subscribes to (see startWatch), are events.
		ResourceUpdatedHandler: func(_ context.Context, req *sdkmcp.ResourceUpdatedNotificationRequest) {
			n.resourceUpdated(req.Session, req.Params.URI)
		},
		// Peers have no roots of ours to list.
		Capabilities: &sdkmcp.ClientCapabilities{},
	}
	if h := n.cfg.elicit; h != nil {
		opts.ElicitationHandler = h
	}
	if h := n.cfg.elicitDone; h != nil {
		opts.ElicitationCompleteHandler = h
	}
	if h := n.cfg.sampleTools; h != nil {
		opts.CreateMessageWithToolsHandler = h
	} else if h := n.cfg.sample; h != nil {
		opts.CreateMessageHandler = h
	}
	n.tasks.ClientOptions(opts)
	if opts.ElicitationHandler != nil {
		// URL mode too: a hop that needs its user's consent or a login
		// sends a link, which reaches the root's user like any question.
		opts.Capabilities.Elicitation = &sdkmcp.ElicitationCapabilities{
			Form: &sdkmcp.FormElicitationCapabilities{},
			URL:  &sdkmcp.URLElicitationCapabilities{},
		}
	}
	return opts
}

// ID returns the node's peer ID.
func (n *Node) ID() lpeer.ID { return n.host.ID() }

// Host returns the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Addrs returns the node's listen addresses as full multiaddrs, each ending
// in /p2p/<peer ID>, ready to give to another node's Connect.
func (n *Node) Addrs() []ma.Multiaddr {
	addrs, err := lpeer.AddrInfoToP2pAddrs(&lpeer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// Server returns the node's default MCP server, shared under
// transport.DefaultServer. Register resources, prompts and tools on it with the
// SDK's API; its handlers can learn the caller with identity.Remote and ask the
// caller for input with ask.Elicit and ask.Sample.
func (n *Node) Server() *sdkmcp.Server { return n.own }

// AddTool registers a typed tool on the node's default server, exactly as
// the SDK's mcp.AddTool does (input schema from In, output schema from Out,
// arguments validated before h runs).
func AddTool[In, Out any](n *Node, t *sdkmcp.Tool, h sdkmcp.ToolHandlerFor[In, Out]) {
	sdkmcp.AddTool(n.own, t, h)
	// The list_changed notification reaches the node's own sessions a
	// little later: a call by name right after must not see the old list.
	n.self.Range(func(k, _ any) bool {
		n.tools.invalidate(k.(*sdkmcp.ClientSession))
		return true
	})
	// Nor may the card wait for it: Sync (a daemon's "ready") counts on
	// every change being announced before it returns.
	n.changed()
}

// Share makes server reachable by peers under name. The node adds its input
// middleware to server, so that its handlers can use ask.Elicit and
// ask.Sample. Sharing a name twice is an error; Unshare first.
func (n *Node) Share(name string, server *sdkmcp.Server) error {
	return n.share(name, server, nil)
}

func (n *Node) share(name string, server *sdkmcp.Server, stop func()) error {
	n.addLayers(name, server) // see serve.go
	return n.addServer(name, &sharedServer{server: server, stop: stop})
}

// addServer shares s under name.
func (n *Node) addServer(name string, s *sharedServer) error {
	if err := transport.ValidateServerName(name); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if _, ok := n.servers[name]; ok {
		return fmt.Errorf("a server named %q is already shared", name)
	}
	n.servers[name] = s
	if s.pass != nil {
		n.host.SetStreamHandler(transport.ProtocolID(name), n.passStreams(s.pass))
	} else {
		n.host.SetStreamHandler(transport.ProtocolID(name), n.serve(name, s.server))
	}
	n.changed()
	n.startWatch(name) // its resource updates are events
	return nil
}

// Unshare stops sharing the server called name: new sessions are refused;
// open sessions to it are closed.
func (n *Node) Unshare(name string) error {
	n.mu.Lock()
	s, ok := n.servers[name]
	if ok {
		delete(n.servers, name)
		n.host.RemoveStreamHandler(transport.ProtocolID(name))
	}
	var toClose []*sdkmcp.ServerSession
	for ss, server := range n.inbound {
		if server == name {
			toClose = append(toClose, ss)
		}
	}
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("no server named %q is shared", name)
	}
	n.stopWatch(name)
	if s.stop != nil {
		s.stop()
	}
	for _, ss := range toClose {
		ss.Close()
	}
	n.pool.Drop(sessions.Key{Peer: n.host.ID(), Server: name}, nil)
	n.changed()
	return nil
}

// Shared lists the names of the servers this node shares.
func (n *Node) Shared() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	names := make([]string, 0, len(n.servers))
	for name := range n.servers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// ErrClosed is returned by a closed node.
var ErrClosed = errors.New("node closed")

// Close stops the node: it closes every session, stops shared programs and
// the libp2p host, and waits for everything it started.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	var stops []func()
	for _, s := range n.servers {
		if s.stop != nil {
			stops = append(stops, s.stop)
		}
	}
	inbound := make([]*sdkmcp.ServerSession, 0, len(n.inbound))
	for ss := range n.inbound {
		inbound = append(inbound, ss)
	}
	n.mu.Unlock()

	n.group.Stop()
	n.cancel()
	n.closeEvents()
	var errs []error
	if err := n.closeReach(); err != nil {
		errs = append(errs, fmt.Errorf("close reachability: %w", err))
	}
	if n.disc != nil {
		if err := n.disc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close discovery: %w", err))
		}
	}
	// Closing the host first resets every stream: calls in flight both ways
	// fail at once and remote handlers are cancelled, where a graceful
	// session close would wait for them.
	if err := n.host.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close host: %w", err))
	}
	if err := n.pool.Close(); err != nil {
		errs = append(errs, err)
	}
	for _, stop := range stops {
		stop()
	}
	for _, ss := range inbound {
		ss.Close()
	}
	n.tasks.Close()
	n.group.Wait()
	n.trust.Close()
	if err := n.closeEventLog(); err != nil {
		errs = append(errs, fmt.Errorf("close event log: %w", err))
	}
	if err := n.audit.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close audit log: %w", err))
	}
	return errors.Join(errs...)
}

// Name returns the name the node gives peers.
func (n *Node) Name() string { return n.cfg.name }

// Version returns the software version the node reports.
func (n *Node) Version() string { return n.cfg.version }

// selfChanged republishes the card when cs, a session to one of the node's
// own servers, reports a change.
func (n *Node) selfChanged(cs *sdkmcp.ClientSession) {
	if _, ok := n.self.Load(cs); ok {
		n.changed()
	}
}
