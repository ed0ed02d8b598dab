package control

// The web console's view of the node (console.Node), over the node's own
// methods and the gateway's search. One file, so that it can follow the
// node when its API moves.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/console"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/tasks"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

// ConsoleResponse answers GET /v1/console.
type ConsoleResponse struct {
	URL string `json:"url"` // the login URL, token included
}

func (s *Server) handleConsole(w http.ResponseWriter, _ *http.Request) {
	u := s.console.Load()
	if u == nil {
		writeError(w, http.StatusNotFound, errors.New("this daemon serves no console: start it with --ui 127.0.0.1:PORT"))
		return
	}
	writeJSON(w, ConsoleResponse{URL: *u})
}

// ConsoleURL returns the daemon's web console login URL (token included).
func (c *Client) ConsoleURL(ctx context.Context) (string, error) {
	var out ConsoleResponse
	return out.URL, c.do(ctx, http.MethodGet, "/v1/console", nil, &out)
}

// ConsoleNode returns the console's view of n. relays names the servers n
// re-shares (--share-peer NAME=PEER/SERVER: NAME → PEER/SERVER), so that
// the audit view can tell relayed calls from served ones.
func ConsoleNode(n *node.Node, relays map[string]string) console.Node {
	return &consoleNode{n: n, mesh: gateway.NewMesh(n, gateway.MeshOptions{}), relays: relays}
}

type consoleNode struct {
	n      *node.Node
	mesh   *gateway.Mesh
	relays map[string]string
}

func (c *consoleNode) Self() console.Self {
	s := console.Self{ID: c.n.ID().String(), Name: c.n.Name(), Version: c.n.Version(), Servers: c.n.Shared(), Relays: c.relays}
	for _, a := range c.n.Addrs() {
		s.Addrs = append(s.Addrs, a.String())
	}
	return s
}

func (c *consoleNode) Peers() []console.Peer {
	h := c.n.Host()
	self := h.ID()
	seen := map[lpeer.ID]bool{self: true}
	var out []console.Peer
	add := func(p lpeer.ID, state console.PeerState) {
		if seen[p] {
			return
		}
		seen[p] = true
		entry := console.Peer{ID: p.String(), State: state}
		if lim := c.n.Limits(); lim != nil {
			if until, banned := lim.Banned(p); banned {
				entry.State, entry.BannedUntil = console.Banned, until
			}
		}
		conns := h.Network().ConnsToPeer(p)
		entry.Relayed = len(conns) > 0
		for _, conn := range conns {
			entry.Addrs = append(entry.Addrs, conn.RemoteMultiaddr().String())
			if !conn.Stat().Limited {
				entry.Relayed = false
			}
		}
		if len(conns) > 0 {
			entry.Latency = h.Peerstore().LatencyEWMA(p) // stale once disconnected
		} else {
			for _, a := range h.Peerstore().Addrs(p) {
				entry.Addrs = append(entry.Addrs, a.String())
			}
		}
		if v, err := h.Peerstore().Get(p, "AgentVersion"); err == nil {
			entry.Agent, _ = v.(string)
		}
		out = append(out, entry)
	}
	for _, p := range h.Network().Peers() {
		if h.Network().Connectedness(p) == network.Connected {
			add(p, console.Connected)
		}
	}
	if d := c.n.Discovery(); d != nil {
		if rt := d.DHT().RoutingTable(); rt != nil {
			for _, p := range rt.ListPeers() {
				add(p, console.Known)
			}
		}
	}
	for _, p := range h.Peerstore().PeersWithAddrs() {
		add(p, console.Known)
	}
	return out
}

func (c *consoleNode) Card(ctx context.Context, peer string) (*discovery.Card, error) {
	p, err := lpeer.Decode(peer)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", peer, err)
	}
	return c.n.Card(ctx, p)
}

func (c *consoleNode) Search(ctx context.Context, query string, tags []string) ([]console.Hit, error) {
	res, err := c.mesh.Search(ctx, gateway.SearchIn{Query: query, Tags: tags, Limit: 50})
	if err != nil {
		return nil, err
	}
	hits := make([]console.Hit, len(res.Hits))
	for i, h := range res.Hits {
		hits[i] = console.Hit{Ref: h.Ref, Peer: h.Peer, Desc: h.Desc, Tags: h.Tags}
	}
	return hits, nil
}

func (c *consoleNode) Tasks() []tasks.Task { return c.n.Tasks() }

func (c *consoleNode) Task(id string) (tasks.Task, bool) { return c.n.Task(id) }

func (c *consoleNode) TaskTree(ctx context.Context, id string) (*console.Tree, error) {
	t, err := c.n.TaskTree(ctx, id)
	if err != nil {
		return nil, err
	}
	var convert func(*tracker.TaskTree) *console.Tree
	convert = func(t *tracker.TaskTree) *console.Tree {
		out := &console.Tree{Task: t.Task, Unreachable: t.Unreachable}
		for _, ch := range t.Children {
			out.Children = append(out.Children, convert(ch))
		}
		return out
	}
	return convert(t), nil
}

func (c *consoleNode) CancelTask(id string) error { return c.n.CancelTask(id) }

func (c *consoleNode) AuditSince(cursor uint64, max int) ([]audit.Record, uint64, bool) {
	l := c.n.Audit()
	if l == nil {
		return nil, 0, false
	}
	recs, next := l.Since(cursor, max)
	return recs, next, true
}

func (c *consoleNode) Policy() console.Policy {
	p := c.n.Policy()
	raw, err := json.Marshal(p)
	if err != nil {
		raw = []byte("null")
	}
	summary := p.String()
	if !p.IsOpen() && p.Grants() == 0 {
		summary = "closed: no grants (peers see and may call nothing)"
	}
	return console.Policy{Open: p.IsOpen(), Summary: summary, JSON: raw}
}

func (c *consoleNode) Check(a console.Access) (console.Decision, error) {
	acc, err := CheckRequest{Peer: a.Peer, For: a.For, Server: a.Server, Kind: a.Kind, Name: a.Name}.access()
	if err != nil {
		return console.Decision{}, err
	}
	p := c.n.Policy()
	return console.Decision{Allowed: p.Allows(acc), Listed: p.Shows(acc)}, nil
}

func (c *consoleNode) Tools(ctx context.Context, peer string) ([]console.Tool, error) {
	p, err := lpeer.Decode(peer)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", peer, err)
	}
	tools, err := c.n.ListTools(ctx, p)
	if err != nil {
		return nil, err
	}
	out := make([]console.Tool, len(tools))
	for i, t := range tools {
		out[i] = console.Tool{Server: t.Server, Tool: t.Tool}
	}
	return out, nil
}

func (c *consoleNode) Call(ctx context.Context, peer, server, tool string, args json.RawMessage, started func(string)) (*sdkmcp.CallToolResult, error) {
	p, err := lpeer.Decode(strings.TrimSpace(peer))
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", peer, err)
	}
	var a any
	if len(args) > 0 {
		a = args
	}
	// Asking for progress (and dropping it) makes every hop record its
	// progress on its task, for the tree view.
	ctx = tasks.WithProgress(tasks.OnRootTask(ctx, started), func(*sdkmcp.ProgressNotificationParams) {})
	return c.n.CallServerTool(ctx, p, server, tool, a)
}
