package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/multiformats/go-multistream"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/mcp/sessions"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node/iface"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/tasks"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

// Connect connects to a peer given as a peer ID or a full multiaddr (see
// identity.ParseTarget) and returns its ID. A bare peer ID works only for a peer
// whose addresses the node already knows.
func (n *Node) Connect(ctx context.Context, target string) (lpeer.ID, error) {
	info, err := identity.ParseTarget(target)
	if err != nil {
		return "", err
	}
	return info.ID, n.ConnectAddr(ctx, info)
}

// ConnectAddr connects to the peer info, within the node's dial timeout.
func (n *Node) ConnectAddr(ctx context.Context, info lpeer.AddrInfo) error {
	if info.ID == n.host.ID() {
		return nil // a node reaches its own servers in memory
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.dialTimeout)
	defer cancel()
	if err := n.host.Connect(ctx, info); err != nil {
		if len(n.cfg.psk) == 0 && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "failed to negotiate security protocol")) {
			// The connection opened, then the handshake timed out, was
			// reset or made no sense: what a member of a private mesh does
			// to a node without the mesh's key.
			return fmt.Errorf("peer %s unreachable: it accepted the connection but not libp2p's handshake (%w); if it is in a private mesh, this node needs the mesh's key (HOME/swarm.key or --mesh-key)", info.ID, oneLine{err})
		}
		return n.dialError(info.ID, err)
	}
	return nil
}

func (n *Node) dialError(p lpeer.ID, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded) && len(n.cfg.psk) > 0:
		return fmt.Errorf("peer %s unreachable: no answer within %v (this node is in a private mesh: only nodes holding its key answer it)", p, n.cfg.dialTimeout)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("peer %s unreachable: no answer within %v (it is down, cannot be reached from here, or is in a private mesh whose key this node lacks)", p, n.cfg.dialTimeout)
	case len(n.cfg.psk) > 0 && (strings.Contains(err.Error(), "privnet") || strings.Contains(err.Error(), "failed to negotiate security protocol")):
		return fmt.Errorf("peer %s unreachable: it is not in this node's private mesh (no key, or another mesh's: %w)", p, oneLine{err})
	case len(n.host.Peerstore().Addrs(p)) == 0 && n.host.Network().Connectedness(p) != network.Connected:
		return fmt.Errorf("peer %s unreachable: no known address (give a full multiaddr ending in /p2p/%s)", p, p)
	default:
		return fmt.Errorf("peer %s unreachable: %w", p, oneLine{err})
	}
}

// oneLine shows a multi-line error (libp2p lists every failed dial on a line
// of its own) on one line, for logs and command output.
type oneLine struct{ err error }

func (e oneLine) Error() string {
	return strings.Join(strings.Fields(strings.ReplaceAll(e.err.Error(), "\n  * ", "; ")), " ")
}

func (e oneLine) Unwrap() error { return e.err }

// dialSession opens a client session to server on p; it is the pool's
// DialFunc.
func (n *Node) dialSession(ctx context.Context, p lpeer.ID, server string) (*sdkmcp.ClientSession, error) {
	if p == n.host.ID() {
		return n.dialSelf(ctx, server)
	}
	ctx = network.WithDialPeerTimeout(ctx, n.cfg.dialTimeout)
	s, err := n.host.NewStream(mcpStream(ctx), p, transport.ProtocolID(server))
	if err != nil {
		var notSupported multistream.ErrNotSupported[protocol.ID]
		if errors.As(err, &notSupported) {
			return nil, fmt.Errorf("peer %s shares no server named %q (it shares: %s)", p, server, strings.Join(n.serversOf(p), ", "))
		}
		return nil, n.dialError(p, err)
	}
	cs, err := n.client.Connect(ctx, n.clientTransport(&transport.StreamTransport{Stream: s, MaxMessageSize: n.cfg.maxMessageSize, Signs: n.signs(s)}),
		&sdkmcp.ClientSessionOptions{ProtocolVersion: n.cfg.protocolVersion})
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("open mcp session to %s/%s: %w", p, server, err)
	}
	n.trackRelayed(p, server, s, cs)
	return cs, nil
}

// clientTransport is t for the node's client: the task layer counts the
// progress its connections read, so that a call's result waits for the
// progress read before it (see tracker.Observe).
func (n *Node) clientTransport(t sdkmcp.Transport) sdkmcp.Transport {
	return sdkcompat.WatchReads(t, n.tasks.Observe)
}

// dialSelf connects the node's client to one of its own servers in
// memory, so that a node's own tools are called like anyone else's.
func (n *Node) dialSelf(ctx context.Context, server string) (*sdkmcp.ClientSession, error) {
	conn, err := n.dialOwnServer(ctx, server)
	if err != nil {
		return nil, err
	}
	cs, err := n.client.Connect(ctx, n.clientTransport(transport.Connected(conn)), &sdkmcp.ClientSessionOptions{ProtocolVersion: n.cfg.protocolVersion})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect to own server %s: %w", server, err)
	}
	n.self.Store(cs, server)
	return cs, nil
}

// Session returns the open MCP client session to the server called server
// on peer p, opening one if needed. The session is shared: do not close it.
// Use it for anything the node has no shortcut for (resources, prompts,
// completion). p may be the node itself.
func (n *Node) Session(ctx context.Context, p lpeer.ID, server string) (*sdkmcp.ClientSession, error) {
	if err := transport.ValidateServerName(server); err != nil {
		return nil, err
	}
	return n.pool.Get(ctx, sessions.Key{Peer: p, Server: server}, func() (context.Context, context.CancelFunc) {
		// The dial serves every waiter: it runs on the node's context, with
		// clean values (the session keeps them for its whole life).
		return context.WithTimeout(identity.WithRemote(n.ctx, p), n.cfg.dialTimeout)
	})
}

// Servers lists the names of the servers peer p shares, connecting to it
// first if needed.
func (n *Node) Servers(ctx context.Context, p lpeer.ID) ([]string, error) {
	if p == n.host.ID() {
		return n.Shared(), nil
	}
	if n.host.Network().Connectedness(p) != network.Connected {
		if err := n.ConnectAddr(ctx, lpeer.AddrInfo{ID: p}); err != nil {
			return nil, err
		}
	}
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if ids, ok := n.host.(interface{ IDService() identify.IDService }); ok {
			select {
			case <-ids.IDService().IdentifyWait(c):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	servers := n.serversOf(p)
	if len(servers) == 0 {
		servers = n.awaitServers(ctx, p)
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("peer %s shares no MCP server (is it an mcpmesh node?)", p)
	}
	return servers, nil
}

// announceWait bounds how long Servers waits for a peer that listed no
// server in identify to announce some.
const announceWait = time.Second

// awaitServers waits, at most announceWait, for peer p to announce servers.
// A node that has just started can answer identify before it shares its
// servers; libp2p then pushes the new protocols at once (identify push),
// which this waits for.
func (n *Node) awaitServers(ctx context.Context, p lpeer.ID) []string {
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerProtocolsUpdated))
	if err != nil {
		return nil
	}
	defer sub.Close()
	t := time.NewTimer(announceWait)
	defer t.Stop()
	for {
		// Checked after subscribing, so that no push is missed in between.
		if servers := n.serversOf(p); len(servers) > 0 {
			return servers
		}
		select {
		case e := <-sub.Out():
			if e.(event.EvtPeerProtocolsUpdated).Peer != p {
				continue
			}
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// serversOf reads p's servers from the protocols it announced (identify).
func (n *Node) serversOf(p lpeer.ID) []string {
	protos, _ := n.host.Peerstore().GetProtocols(p)
	var names []string
	for _, id := range protos {
		if name, ok := transport.ServerName(id); ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// ListTools lists the tools of every server peer p shares.
func (n *Node) ListTools(ctx context.Context, p lpeer.ID) ([]iface.RemoteTool, error) {
	servers, err := n.Servers(ctx, p)
	if err != nil {
		return nil, err
	}
	var all []iface.RemoteTool
	for _, server := range servers {
		tools, err := n.serverTools(ctx, p, server)
		if err != nil {
			return nil, err
		}
		for _, t := range tools {
			all = append(all, iface.RemoteTool{Server: server, Tool: t})
		}
	}
	return all, nil
}

// serverTools returns the tools of one server, from the cache while the
// session lives and the server has not announced a change.
func (n *Node) serverTools(ctx context.Context, p lpeer.ID, server string) ([]*sdkmcp.Tool, error) {
	cs, err := n.Session(ctx, p, server)
	if err != nil {
		return nil, err
	}
	if tools, ok := n.tools.get(cs); ok {
		return tools, nil
	}
	var tools []*sdkmcp.Tool
	for t, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return nil, fmt.Errorf("list tools of %s/%s: %w", p, server, err)
		}
		tools = append(tools, t)
	}
	n.tools.put(cs, tools)
	return tools, nil
}

// ResolveTool finds the tool that ref names on peer p. ref is TOOL, found
// among all of p's servers (an error if none or several have it), or
// SERVER/TOOL.
//
// Tool lists are cached until the peer says they changed; a name not found
// in the cache is looked up once more in fresh lists, as the notification
// of a tool just added may still be on its way.
func (n *Node) ResolveTool(ctx context.Context, p lpeer.ID, ref string) (iface.RemoteTool, error) {
	t, err := n.resolveTool(ctx, p, ref)
	if !errors.Is(err, errNoSuchTool) {
		return t, err
	}
	for _, server := range n.serversOf(p) {
		if cs, err := n.Session(ctx, p, server); err == nil {
			n.tools.invalidate(cs)
		}
	}
	return n.resolveTool(ctx, p, ref)
}

// errNoSuchTool marks a tool name a peer does not list.
var errNoSuchTool = iface.ErrNoSuchTool

// unsaid wraps an error for errors.Is without adding to the message.
type unsaid struct{ err error }

func (unsaid) Error() string   { return "" }
func (u unsaid) Unwrap() error { return u.err }

// SplitRef splits a tool ref written SERVER/TOOL into its server and tool.
// ok is false for a bare TOOL, or a first part that is no valid server name:
// such a ref is looked up among the tools a peer lists (see ResolveTool).
func SplitRef(ref string) (server, tool string, ok bool) {
	server, tool, ok = strings.Cut(ref, "/")
	if !ok || transport.ValidateServerName(server) != nil {
		return "", ref, false
	}
	return server, tool, true
}

func (n *Node) resolveTool(ctx context.Context, p lpeer.ID, ref string) (iface.RemoteTool, error) {
	if server, tool, ok := SplitRef(ref); ok {
		tools, err := n.serverTools(ctx, p, server)
		if err != nil {
			return iface.RemoteTool{}, err
		}
		for _, t := range tools {
			if t.Name == tool {
				return iface.RemoteTool{Server: server, Tool: t}, nil
			}
		}
		// A closed node lists only what its policy grants this node: the
		// tool may be there, and refused.
		return iface.RemoteTool{}, fmt.Errorf("server %s on peer %s lists no tool named %q to this node: it has none, or its policy does not grant it to this node (its owner can ask it: 'mcpmesh policy check %s %s/%s')%w",
			server, p, tool, n.host.ID(), server, tool, unsaid{errNoSuchTool})
	}
	all, err := n.ListTools(ctx, p)
	if err != nil {
		return iface.RemoteTool{}, err
	}
	var found []iface.RemoteTool
	for _, t := range all {
		if t.Name == ref {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if len(all) == 0 {
			// Closed nodes list nothing to peers they grant nothing.
			return iface.RemoteTool{}, fmt.Errorf("peer %s lists no tools to this node, so none named %q: its policy may grant this node nothing (its owner can ask it: 'mcpmesh policy check %s SERVER/%s')%w", p, ref, n.host.ID(), ref, unsaid{errNoSuchTool})
		}
		names := make([]string, 0, len(all))
		for _, t := range all {
			names = append(names, t.Ref())
		}
		return iface.RemoteTool{}, fmt.Errorf("peer %s has no tool named %q (it has: %s)%w", p, ref, strings.Join(names, ", "), unsaid{errNoSuchTool})
	default:
		refs := make([]string, len(found))
		for i, t := range found {
			refs[i] = t.Ref()
		}
		return iface.RemoteTool{}, fmt.Errorf("tool name %q is ambiguous on peer %s: name one of %s%w", ref, p, strings.Join(refs, ", "), unsaid{iface.ErrAmbiguousTool})
	}
}

// CallTool calls the tool that ref names on peer p (see ResolveTool) with
// args, any value that marshals to a JSON object (nil for none). A tool that
// fails returns a result with IsError set and a nil error; err is for
// failures to reach the tool at all.
//
// A SERVER/TOOL ref is called as it is, listed or not: a tool the peer's
// policy does not show this node may still be granted to it when it acts
// for another peer, and one that is not granted gets the peer's "not
// permitted" answer rather than a guess from here.
func (n *Node) CallTool(ctx context.Context, p lpeer.ID, ref string, args any) (*sdkmcp.CallToolResult, error) {
	if server, tool, ok := SplitRef(ref); ok {
		return n.CallServerTool(ctx, p, server, tool, args)
	}
	t, err := n.ResolveTool(ctx, p, ref)
	if err != nil {
		return nil, err
	}
	return n.CallServerTool(ctx, p, t.Server, t.Name, args)
}

// CallServerTool calls tool on the server called server on peer p, with no
// lookup of the tool first.
func (n *Node) CallServerTool(ctx context.Context, p lpeer.ID, server, tool string, args any) (*sdkmcp.CallToolResult, error) {
	m := n.cfg.trust.metrics
	if m == nil {
		return n.callTracked(ctx, p, server, tool, args)
	}
	start := time.Now()
	res, err := n.callTracked(ctx, p, server, tool, args)
	outcome := "ok"
	switch {
	case err != nil:
		outcome = "error"
	case res.IsError:
		outcome = "tool_error"
	}
	m.OutboundCall(n.names.Of(p), server, tool, outcome, time.Since(start))
	return res, err
}

// callTracked makes the call with the delegation the trust layer gives it,
// as a task of the tree (see tasks.go).
func (n *Node) callTracked(ctx context.Context, p lpeer.ID, server, tool string, args any) (*sdkmcp.CallToolResult, error) {
	call, err := n.delegatedCall(ctx, p, server, tool)
	if err != nil {
		return nil, err
	}
	return n.tasks.Call(ctx, p, server, tool, args, call)
}

// delegatedCall returns the call to make to tool on server of p: one that
// carries the delegation the trust layer gives it, if any.
func (n *Node) delegatedCall(ctx context.Context, p lpeer.ID, server, tool string) (tracker.CallFunc, error) {
	deleg, err := n.trust.DelegationFor(ctx, p, server, tool)
	if err != nil || deleg == nil {
		return n.callServerTool, err
	}
	return func(ctx context.Context, p lpeer.ID, server, tool string, args any, meta sdkmcp.Meta) (*sdkmcp.CallToolResult, error) {
		if meta == nil {
			meta = sdkmcp.Meta{}
		}
		meta[delegation.MetaKey] = deleg
		return n.callServerTool(ctx, p, server, tool, args, meta)
	}, nil
}

// callServerTool makes the call, with meta as the request's _meta.
func (n *Node) callServerTool(ctx context.Context, p lpeer.ID, server, tool string, args any, meta sdkmcp.Meta) (*sdkmcp.CallToolResult, error) {
	if raw, ok := args.(json.RawMessage); ok && len(raw) == 0 {
		args = nil
	}
	key := sessions.Key{Peer: p, Server: server}
	params := &sdkmcp.CallToolParams{Meta: meta, Name: tool, Arguments: args}
	reckoned := time.Now() // when the task context's time left was reckoned (just before this call)
	for attempt := 0; ; attempt++ {
		cs, err := n.Session(ctx, p, server)
		if err != nil {
			return nil, err
		}
		// The callee's time counts from the call's arrival: what opening
		// the session took comes off it, so that the callee still gives up
		// before this hop does.
		if now := time.Now(); now.Sub(reckoned) >= time.Millisecond {
			tasks.Spend(params.Meta, now.Sub(reckoned))
			reckoned = now
		}
		end := n.moves.Begin(cs)
		res, err := cs.CallTool(ctx, params)
		end()
		if err == nil {
			return res, nil
		}
		if ctx.Err() == nil && isConnectionLoss(err) {
			n.pool.Drop(key, cs)
			// A session found closing never sent the request: one more try
			// on a fresh session is safe.
			if attempt == 0 && errors.Is(err, sdkmcp.ErrConnectionClosed) {
				continue
			}
			return nil, fmt.Errorf("call %s/%s on %s: connection lost%s: %w", server, tool, p, n.lostWhy(p), err)
		}
		return nil, fmt.Errorf("call %s/%s on %s: %w", server, tool, p, err)
	}
}

// isConnectionLoss reports whether err means the session is gone (the
// stream was reset or cut, or a frame broke it), not that the call failed.
func isConnectionLoss(err error) bool {
	var se *network.StreamError
	return errors.As(err, &se) ||
		errors.Is(err, network.ErrReset) ||
		errors.Is(err, sdkmcp.ErrConnectionClosed) ||
		errors.Is(err, transport.ErrFrameTooLarge) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// toolIndex caches each client session's tool list until the session ends
// or its server announces a change.
type toolIndex struct {
	mu sync.Mutex
	m  map[*sdkmcp.ClientSession][]*sdkmcp.Tool
}

func newToolIndex() *toolIndex {
	return &toolIndex{m: map[*sdkmcp.ClientSession][]*sdkmcp.Tool{}}
}

func (x *toolIndex) get(cs *sdkmcp.ClientSession) ([]*sdkmcp.Tool, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	t, ok := x.m[cs]
	return t, ok
}

func (x *toolIndex) put(cs *sdkmcp.ClientSession, tools []*sdkmcp.Tool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.m[cs] = tools
}

func (x *toolIndex) invalidate(cs *sdkmcp.ClientSession) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.m, cs)
}

// ServersKnown lists the servers peer p announced, without contacting it.
func (n *Node) ServersKnown(p lpeer.ID) []string { return n.serversOf(p) }
