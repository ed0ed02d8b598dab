// Package node composes an mcpmesh node: a libp2p host that serves MCP
// servers to peers and calls theirs, over one authenticated connection per
// peer.
//
// A node is both an MCP server and an MCP client. Each server it shares (its
// own Go-registered tools under [mcp.DefaultServer], stdio programs, other
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
	"sync/atomic"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/peer"
	"github.com/mcpmesh/mcpmesh/peer/reach"
	"github.com/mcpmesh/mcpmesh/tasks"
)

var log = logging.Logger("mcpmesh/node")

// Node is one participant of the mesh.
type Node struct {
	cfg    *config
	host   host.Host
	client *sdkmcp.Client
	inputs *mcp.Inputs
	pool   *peer.Sessions
	tools  *toolIndex
	own    *sdkmcp.Server
	disc   *discovery.Service // nil without WithDiscovery
	self   sync.Map           // client sessions to the node's own servers
	limits *limits.Limiter
	reach  *reach.Service                      // see reach.go
	live   *reach.Liveness                     // nil if checks are off
	moves  *reach.Moves[*sdkmcp.ClientSession] // sessions on relayed connections

	policy atomic.Pointer[peer.Policy] // see trust.go
	audit  *audit.Log
	chains chainCache  // delegation chains verified
	issued issuedCache // delegations signed

	taskReg  *tasks.Registry // see tasks.go
	progress sync.Map        // progress token → *served, for calls tasks make
	urlAsks  urlQuestions    // URL-mode questions passed up, for their completion
	detached sync.Map        // task ID → *detached, for MCP Tasks

	ctx    context.Context // ends when Close starts
	cancel context.CancelFunc
	wg     sync.WaitGroup // inbound sessions and shared-program supervisors

	mu       sync.Mutex
	servers  map[string]*sharedServer
	inbound  map[*sdkmcp.ServerSession]*servedSession // open sessions served
	relayed  map[*servedSession]struct{}              // open sessions relayed (re-shared servers)
	programs map[string]*programShare
	closed   bool
}

type sharedServer struct {
	server *sdkmcp.Server // nil for a re-shared server of another peer
	relay  *relayTarget   // set for a re-shared server
	stop   func()         // stops what keeps the server alive (a program's supervisor), if anything
}

// New starts a node: its libp2p host listens, and its default server (for
// tools registered with AddTool and friends) is shared under
// mcp.DefaultServer.
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
		cfg:      cfg,
		host:     h,
		inputs:   mcp.NewInputs(),
		ctx:      ctx,
		cancel:   cancel,
		servers:  map[string]*sharedServer{},
		inbound:  map[*sdkmcp.ServerSession]*servedSession{},
		relayed:  map[*servedSession]struct{}{},
		programs: map[string]*programShare{},
		limits:   lim,
	}
	n.initLimits()
	n.initReach(rs)
	if err := n.initTrust(); err != nil {
		h.Close()
		cancel()
		return nil, err
	}
	n.tools = newToolIndex()
	n.client = sdkmcp.NewClient(n.implementation(), n.clientOptions())
	n.initTasks()
	n.pool = peer.NewSessions(n.dialSession, func(_ peer.SessionKey, cs *sdkmcp.ClientSession) {
		n.tools.invalidate(cs)
		n.self.Delete(cs)
		n.moves.Ended(cs)
	})
	n.own = sdkmcp.NewServer(n.implementation(), &sdkmcp.ServerOptions{Logger: sdkLogger()})
	if err := n.Share(mcp.DefaultServer, n.own); err != nil {
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
		ToolListChangedHandler: func(_ context.Context, req *sdkmcp.ToolListChangedRequest) {
			n.tools.invalidate(req.Session)
			n.selfChanged(req.Session)
		},
		ResourceListChangedHandler: func(_ context.Context, req *sdkmcp.ResourceListChangedRequest) {
			n.selfChanged(req.Session)
		},
		PromptListChangedHandler: func(_ context.Context, req *sdkmcp.PromptListChangedRequest) {
			n.selfChanged(req.Session)
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
	n.taskClientOptions(opts)
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
// mcp.DefaultServer. Register resources, prompts and tools on it with the
// SDK's API; its handlers can learn the caller with peer.Remote and ask the
// caller for input with mcp.Elicit and mcp.Sample.
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
}

// Share makes server reachable by peers under name. The node adds its input
// middleware to server, so that its handlers can use mcp.Elicit and
// mcp.Sample. Sharing a name twice is an error; Unshare first.
func (n *Node) Share(name string, server *sdkmcp.Server) error {
	return n.share(name, server, nil)
}

func (n *Node) share(name string, server *sdkmcp.Server, stop func()) error {
	if err := mcp.ValidateServerName(name); err != nil {
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
	n.trackTasks(name, server, n.inputs.Middleware())      // adds the input middleware inside the task layer
	server.AddReceivingMiddleware(n.trustMiddleware(name)) // outermost: added last
	n.servers[name] = &sharedServer{server: server, stop: stop}
	n.host.SetStreamHandler(mcp.ProtocolID(name), n.serve(name, server))
	n.changed()
	return nil
}

// Unshare stops sharing the server called name: new sessions are refused;
// open sessions to it are closed.
func (n *Node) Unshare(name string) error {
	n.mu.Lock()
	s, ok := n.servers[name]
	if ok {
		delete(n.servers, name)
		delete(n.programs, name)
		n.host.RemoveStreamHandler(mcp.ProtocolID(name))
	}
	var toClose []*sdkmcp.ServerSession
	for ss, served := range n.inbound {
		if served.server == name {
			toClose = append(toClose, ss)
		}
	}
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("no server named %q is shared", name)
	}
	if s.stop != nil {
		s.stop()
	}
	for _, ss := range toClose {
		ss.Close()
	}
	n.pool.Drop(peer.SessionKey{Peer: n.host.ID(), Server: name}, nil)
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

// serve returns the stream handler that runs one MCP server session per
// inbound stream, with the caller's authenticated peer ID on its context.
func (n *Node) serve(name string, server *sdkmcp.Server) network.StreamHandler {
	return func(s network.Stream) {
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			s.Reset()
			return
		}
		n.wg.Add(1)
		n.mu.Unlock()
		defer n.wg.Done()

		remote := s.Conn().RemotePeer()
		served := &servedSession{server: name, caller: remote}
		ctx := context.WithValue(peer.WithRemote(n.ctx, remote), servedKey{}, served)
		ss, err := server.Connect(ctx, capturingTransport{&mcp.StreamTransport{Stream: s, MaxMessageSize: n.cfg.maxMessageSize,
			OnBadFrame: func(err error) { n.badFrame(remote, err) }}, served}, nil)
		if err != nil {
			log.Debugw("serve session", "peer", remote, "error", err)
			s.Reset()
			return
		}
		n.mu.Lock()
		n.inbound[ss] = served
		n.mu.Unlock()
		err = ss.Wait()
		n.mu.Lock()
		delete(n.inbound, ss)
		n.mu.Unlock()
		log.Debugw("session ended", "peer", remote, "protocol", s.Protocol(), "error", err)
	}
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

	n.cancel()
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
	n.wg.Wait()
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
