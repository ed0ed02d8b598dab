// Package gateway makes the mesh usable from any MCP host.
//
// In mesh mode (NewMeshServer) a host sees a small fixed set of tools —
// search the mesh, describe one tool, call it — whatever the size of the
// mesh, plus the remote tools the user pins. In transparent mode a host sees
// exactly one server that a remote node shares, relayed without decoding.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/events/inbox"
	"github.com/mcpmesh/mcpmesh/node/iface"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/proto/cardpb"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// Pin exposes one remote tool as a first-class tool of the mesh-mode server.
type Pin struct {
	Peer   lpeer.ID
	Server string // empty: wherever the tool is on Peer
	Tool   string
	// As is the name the host sees; empty means "LABEL.TOOL", LABEL being
	// the peer's name (its card's) made a valid tool name, or the end of its
	// ID if it has none or another pinned peer has the same.
	As string
}

// ParsePin reads a pin as users write it: [AS=]PEER/[SERVER/]TOOL, PEER a
// peer ID.
func ParsePin(s string) (Pin, error) {
	var p Pin
	as, ref, ok := strings.Cut(s, "=")
	if !ok {
		ref, as = s, ""
	}
	parts := strings.Split(ref, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return p, fmt.Errorf("pin %q: want [NAME=]PEER/[SERVER/]TOOL", s)
	}
	info, err := identity.ParseTarget(parts[0])
	if err != nil {
		return p, fmt.Errorf("pin %q: %w", s, err)
	}
	if as != "" {
		if err := validToolName(as); err != nil {
			return p, fmt.Errorf("pin %q: NAME: %w", s, err)
		}
	}
	p.Peer, p.As, p.Tool = info.ID, as, parts[len(parts)-1]
	if p.Tool == "" {
		return p, fmt.Errorf("pin %q: no TOOL after the last /", s)
	}
	if len(parts) == 3 {
		p.Server = parts[1]
	}
	return p, nil
}

// MeshOptions configures the mesh-mode server and a Mesh.
type MeshOptions struct {
	// Pins are remote tools the mesh-mode server lists as its own.
	Pins []Pin
	// OnPin, if set, hears what becomes of each pin: listed, or not yet and
	// why (said again only when the reason changes). Unset, the package's
	// log says it (info when listed, warn when not).
	OnPin func(PinEvent)
	// PinWait bounds how long a host's first tools/list waits for every
	// pin's first try to end (listed, or said why not): many hosts list
	// tools once and ignore list_changed. Default 5s; a pin still being
	// tried then is said (OnPin), and listed with list_changed later.
	PinWait time.Duration
	// PinRetry, if set, is the wait between tries of a pin that does not
	// resolve while no peer connects; default a backoff from 1s to 30s. A
	// peer connecting is always a new try.
	PinRetry time.Duration
	// SearchTimeout bounds one search of the mesh. Default 3s.
	SearchTimeout time.Duration
	// Allow, if set, limits the tools that searches find and that describe
	// and call reach: a tool for which it returns an error is neither found
	// nor reached, and the error says why to whoever asked.
	Allow func(ToolInfo) error
	// Callable, if set, makes Search check each tool it would return with
	// the tool's peer, as a call would (the tools the peer lists to this
	// node, then Allow), and leave out those this node may not call or
	// cannot reach, saying why in SearchOut.Skipped: a hit is then one the
	// node may call. It costs a dial of each hit's peer not connected and a
	// tools/list of each server (cached), each within SearchTimeout. Off by
	// default: a host's search stays a lookup of cards.
	Callable bool
	// Events adds mesh_subscribe and mesh_events (package events/inbox),
	// if the node has events: a host waits for the mesh's events with one
	// call. Off by default: two more tools in every host's context.
	Events bool
}

// ToolInfo is a tool of the mesh as MeshOptions.Allow sees it.
type ToolInfo struct {
	Peer   lpeer.ID
	Server string
	Tool   string
	// Tags are the tool's own tags and its node's (from its card, when it
	// is known).
	Tags []string
}

// MeshServer is the MCP server of mesh mode. It resolves its pins on
// goroutines of its own, which Close stops and waits for.
type MeshServer struct {
	*sdkmcp.Server
	cancel context.CancelFunc
	pins   sync.WaitGroup
	inbox  *inbox.Inbox // with MeshOptions.Events
}

// Close stops resolving pins and waits until it has stopped, and ends the
// event subscriptions. The server stays usable.
func (s *MeshServer) Close() {
	s.cancel()
	s.pins.Wait()
	if s.inbox != nil {
		s.inbox.Close()
	}
}

// NewMeshServer returns the MCP server of mesh mode, acting through n.
// Pinned tools are added as they are resolved (a peer may not be reachable
// yet); the server announces each with listChanged. A host's first
// tools/list waits for each pin's first try (within MeshOptions.PinWait).
// Resolving stops when ctx ends or at Close.
func NewMeshServer(ctx context.Context, n iface.Node, opts MeshOptions) *MeshServer {
	g := NewMesh(n, opts)
	s := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "mcpmesh", Title: "mcpmesh gateway", Version: n.Version()}, &sdkmcp.ServerOptions{
		Instructions: "Tools of a peer-to-peer mesh of MCP servers. Search the mesh for what you need (mesh_search), " +
			"read the one tool's input schema (mesh_describe), then call it (mesh_call).",
		Capabilities: &sdkmcp.ServerCapabilities{Tools: &sdkmcp.ToolCapabilities{ListChanged: true}},
	})
	sdkmcp.AddTool(s, &sdkmcp.Tool{
		Name:        "mesh_search",
		Description: "Search the mesh for tools by words and tags. Returns tool refs (PEER/SERVER/TOOL) with one line each.",
		Annotations: &sdkmcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, in SearchIn) (*sdkmcp.CallToolResult, any, error) {
		out, err := g.Search(ctx, in)
		if err != nil {
			return nil, nil, err
		}
		return structured(out)
	})
	sdkmcp.AddTool(s, &sdkmcp.Tool{
		Name:        "mesh_describe",
		Description: "Get one tool's full description and input schema, by its ref from mesh_search.",
		Annotations: &sdkmcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, in RefIn) (*sdkmcp.CallToolResult, any, error) {
		out, err := g.Describe(ctx, in.Ref)
		if err != nil {
			return nil, nil, err
		}
		return structured(out)
	})
	sdkmcp.AddTool(s, &sdkmcp.Tool{
		Name:        "mesh_call",
		Description: "Call a tool by its ref (PEER/SERVER/TOOL), or by name on any peer that offers it (ref \"any/TOOL\").",
	}, func(ctx context.Context, req *sdkmcp.CallToolRequest, in CallIn) (*sdkmcp.CallToolResult, any, error) {
		var args any
		if in.Arguments != nil {
			args = in.Arguments
		}
		res, err := g.Call(withHostProgress(ctx, req), in.Ref, args)
		return res, nil, err
	})
	ctx, cancel := context.WithCancel(ctx)
	ms := &MeshServer{Server: s, cancel: cancel}
	if en, ok := n.(inbox.Node); ok && opts.Events {
		ms.inbox = inbox.New(en)
		inbox.AddTools(s, ms.inbox)
	}
	if len(opts.Pins) > 0 {
		first := newFirstTry(opts.Pins)
		wait := opts.PinWait
		if wait <= 0 {
			wait = defaultPinWait
		}
		s.AddReceivingMiddleware(first.middleware(wait, g.reportPin))
		ms.pins.Go(func() { g.runPins(ctx, s, opts.Pins, first) })
	}
	return ms
}

// withHostProgress makes the progress of the calls made under ctx (the
// tool a host's request calls, and whatever that tool calls in turn) reach
// the host, on its request's token, when the request asked for progress.
// The node's task layer keeps it in order: every notification goes out
// before the call's result.
func withHostProgress(ctx context.Context, req *sdkmcp.CallToolRequest) context.Context {
	tok := req.Params.GetProgressToken()
	if tok == nil || req.Session == nil {
		return ctx
	}
	return tasks.WithProgress(ctx, func(p *sdkmcp.ProgressNotificationParams) {
		q := *p
		q.ProgressToken = tok
		// The handler's context: on Streamable HTTP, the SDK sends the
		// notification on the stream of the host's request.
		if err := req.Session.NotifyProgress(ctx, &q); err != nil {
			log.Debugw("progress to the host", "error", err)
		}
	})
}

// Mesh searches the mesh for tools, describes them and calls them through a
// node: what mesh mode's three tools do, as a Go API. One Mesh keeps the
// verified cards it has seen until they expire; it is safe for concurrent
// use.
type Mesh struct {
	n    iface.Node
	opts MeshOptions

	mu    sync.Mutex
	cards map[lpeer.ID]*discovery.Card // verified cards seen, until they expire
}

// NewMesh returns a Mesh acting through n. opts.Pins is not used.
func NewMesh(n iface.Node, opts MeshOptions) *Mesh {
	if opts.SearchTimeout <= 0 {
		opts.SearchTimeout = 3 * time.Second
	}
	return &Mesh{n: n, opts: opts, cards: map[lpeer.ID]*discovery.Card{}}
}

// SearchIn is the input of mesh_search.
type SearchIn struct {
	Query string   `json:"query,omitempty" jsonschema:"words to look for in tool names and descriptions"`
	Tags  []string `json:"tags,omitempty" jsonschema:"tags the tools must have"`
	Limit int      `json:"limit,omitempty" jsonschema:"most results to return (default 5)"`
}

// Hit is one result of mesh_search.
type Hit struct {
	Ref  string   `json:"ref"`
	Peer string   `json:"peer"`
	Desc string   `json:"desc,omitempty"`
	Tags []string `json:"tags,omitempty"`
}

// SearchOut is the output of mesh_search.
type SearchOut struct {
	Hits []Hit `json:"hits"`
	// Skipped are tools found that this node may not call, each with why
	// (MeshOptions.Callable), best matches first.
	Skipped []Skipped `json:"skipped,omitempty"`
}

// Skipped is a tool a search found and left out.
type Skipped struct {
	Ref string `json:"ref"`
	Why string `json:"why"`
}

// structured returns v as JSON text. Every byte a mesh-mode tool lists or
// returns is paid in the host's context, so the tools declare no output
// schema and do not repeat their answer as structured content.
func structured(v any) (*sdkmcp.CallToolResult, any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, nil, err
	}
	return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: string(b)}}}, nil, nil
}

// Search finds the tools whose names and descriptions hold the words of
// in.Query and that have every tag of in.Tags, among the cards of the peers
// the node knows and of those the DHT names, best matches first.
func (g *Mesh) Search(ctx context.Context, in SearchIn) (SearchOut, error) {
	limit := in.Limit
	if limit <= 0 || limit > 50 {
		limit = 5
	}
	found, err := g.Matches(ctx, in.Query, in.Tags)
	if err != nil {
		return SearchOut{}, err
	}
	out := SearchOut{Hits: []Hit{}}
	if g.opts.Callable {
		return g.callable(ctx, found, limit), nil
	}
	for _, m := range found {
		if len(out.Hits) == limit {
			break
		}
		out.Hits = append(out.Hits, m.hit())
	}
	return out, nil
}

func (m Match) hit() Hit {
	return Hit{
		Ref:  m.Card.Peer.String() + "/" + m.Server + "/" + m.Tool.Name,
		Peer: cardLabel(m.Card),
		Desc: m.Tool.Description,
		Tags: m.Tool.Tags,
	}
}

// maxCallableChecks bounds the tools one search checks with their peers
// (MeshOptions.Callable), past the limit of hits: a mesh full of tools
// this node may not call costs a bounded search.
const maxCallableChecks = 20

// callable returns up to limit of found that this node may call, in order,
// and those it checked and may not. It checks as many at once as it lacks
// hits, each within the search timeout, all within twice that.
func (g *Mesh) callable(ctx context.Context, found []Match, limit int) SearchOut {
	out := SearchOut{Hits: []Hit{}}
	found = found[:min(len(found), limit+maxCallableChecks)]
	ctx, cancel := context.WithTimeout(ctx, 2*g.opts.SearchTimeout)
	defer cancel()
	for len(found) > 0 && len(out.Hits) < limit && ctx.Err() == nil {
		batch := found[:min(len(found), limit-len(out.Hits))]
		found = found[len(batch):]
		errs := make([]error, len(batch))
		var wg sync.WaitGroup
		for i, m := range batch {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(ctx, g.opts.SearchTimeout)
				defer cancel()
				_, _, errs[i] = g.resolve(ctx, m.hit().Ref)
				if errs[i] != nil && ctx.Err() != nil {
					errs[i] = fmt.Errorf("peer %s did not answer within %v", m.Card.Peer, g.opts.SearchTimeout)
				}
			})
		}
		wg.Wait()
		for i, m := range batch {
			if errs[i] != nil {
				out.Skipped = append(out.Skipped, Skipped{Ref: m.hit().Ref, Why: errs[i].Error()})
				continue
			}
			out.Hits = append(out.Hits, m.hit())
		}
	}
	return out
}

// Match is one tool found by Matches.
type Match struct {
	Card   *discovery.Card // verified: the peer's own signed card
	Server string
	Tool   *cardpb.Tool
	Score  int // the higher the better: a word in the tool's name counts most
}

// Matches is Search without a limit, for callers that present the tools
// themselves (mcpmesh find): every tool whose name, title or description
// holds a word of query and that has every tag of tags (the node's tags
// count as its tools'), best matches first, within the Mesh's search
// timeout.
func (g *Mesh) Matches(ctx context.Context, query string, tags []string) ([]Match, error) {
	words := strings.Fields(strings.ToLower(query))
	if len(words) == 0 && len(tags) == 0 {
		return nil, errors.New("give a query, tags, or both")
	}
	ctx, cancel := context.WithTimeout(ctx, g.opts.SearchTimeout)
	defer cancel()
	var found []Match
	for _, c := range g.gather(ctx, words, tags) {
		for _, srv := range c.Servers {
			for _, t := range srv.Tools {
				all := append(slices.Clone(t.Tags), c.Tags...)
				if !hasAll(all, tags) {
					continue
				}
				if g.opts.Allow != nil && g.opts.Allow(ToolInfo{Peer: c.Peer, Server: srv.Name, Tool: t.Name, Tags: all}) != nil {
					continue
				}
				score := 1
				if len(words) > 0 {
					if score = matchScore(words, t.Name, t.Title, t.Description); score == 0 {
						continue
					}
				}
				found = append(found, Match{Card: c, Server: srv.Name, Tool: t, Score: score})
			}
		}
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].Score > found[j].Score })
	return found, nil
}

// gather returns the verified cards of the peers this node knows, plus those
// that the DHT names as providers of a word (as a tool name) or a tag.
func (g *Mesh) gather(ctx context.Context, words, tags []string) []*discovery.Card {
	var wg sync.WaitGroup
	if known := g.n.KnownPeers(); known != nil {
		sem := make(chan struct{}, 16) // bounds the card fetches in flight
		for _, p := range known {
			if _, ok := g.card(p); ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case sem <- struct{}{}:
					defer func() { <-sem }()
				case <-ctx.Done():
					return
				}
				c, err := g.n.Card(ctx, p)
				if err != nil {
					log.Debugw("search: no card", "peer", p, "error", err)
					return
				}
				g.remember(c)
			}()
		}
		queries := slices.Clone(words)
		for _, t := range tags {
			queries = append(queries, "tag:"+t)
		}
		for _, q := range queries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g.n.Find(ctx, q, func(f discovery.Found) { g.remember(f.Card) })
			}()
		}
	}
	wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	out := make([]*discovery.Card, 0, len(g.cards))
	for p, c := range g.cards {
		if now.After(c.Expires()) {
			delete(g.cards, p)
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

func (g *Mesh) remember(c *discovery.Card) {
	g.mu.Lock()
	g.cards[c.Peer] = c
	g.mu.Unlock()
}

// card returns p's card, if one seen has not expired.
func (g *Mesh) card(p lpeer.ID) (*discovery.Card, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.cards[p]
	if !ok || time.Now().After(c.Expires()) {
		return nil, false
	}
	return c, true
}

func cardLabel(c *discovery.Card) string {
	if c.Name != "" && c.Name != "mcpmesh" {
		return c.Name
	}
	return shortID(c.Peer)
}

func shortID(p lpeer.ID) string {
	s := p.String()
	if len(s) > 8 {
		return s[len(s)-8:]
	}
	return s
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, w) }) {
			return false
		}
	}
	return true
}

// matchScore counts the words found in a tool's texts, the name counting
// most.
func matchScore(words []string, name, title, desc string) int {
	name, title, desc = strings.ToLower(name), strings.ToLower(title), strings.ToLower(desc)
	score := 0
	for _, w := range words {
		switch {
		case name == w:
			score += 4
		case strings.Contains(name, w):
			score += 3
		case strings.Contains(title, w):
			score += 2
		case strings.Contains(desc, w):
			score++
		}
	}
	return score
}

// RefIn names one tool: PEER/SERVER/TOOL, PEER/TOOL, or any/TOOL.
type RefIn struct {
	Ref string `json:"ref" jsonschema:"the tool ref from mesh_search: PEER/SERVER/TOOL"`
}

// DescribeOut is the output of mesh_describe.
type DescribeOut struct {
	Ref         string `json:"ref"`
	Description string `json:"description,omitempty"`
	InputSchema any    `json:"inputSchema"`
}

// parseRef splits a ref into peer and the tool reference the node resolves
// (TOOL or SERVER/TOOL).
func parseRef(ref string) (p string, tool string, err error) {
	p, tool, ok := strings.Cut(ref, "/")
	if !ok || p == "" || tool == "" {
		return "", "", fmt.Errorf("ref %q: want PEER/SERVER/TOOL (from mesh_search) or any/TOOL", ref)
	}
	return p, tool, nil
}

// Describe returns the full description and input schema of the tool ref
// names (PEER/SERVER/TOOL, PEER/TOOL or any/TOOL).
func (g *Mesh) Describe(ctx context.Context, ref string) (DescribeOut, error) {
	p, t, err := g.resolve(ctx, ref)
	if err != nil {
		return DescribeOut{}, err
	}
	return DescribeOut{Ref: p.String() + "/" + t.Ref(), Description: t.Description, InputSchema: t.InputSchema}, nil
}

// resolve finds the tool ref names and checks it against Allow.
func (g *Mesh) resolve(ctx context.Context, ref string) (lpeer.ID, iface.RemoteTool, error) {
	ps, tool, err := parseRef(ref)
	if err != nil {
		return "", iface.RemoteTool{}, err
	}
	p, err := g.peerOf(ctx, ps, tool)
	if err != nil {
		return "", iface.RemoteTool{}, err
	}
	t, err := g.n.ResolveTool(ctx, p, tool)
	if err != nil {
		return "", iface.RemoteTool{}, err
	}
	if err := g.allow(p, t); err != nil {
		return "", iface.RemoteTool{}, err
	}
	return p, t, nil
}

// allow checks a resolved tool against Allow.
func (g *Mesh) allow(p lpeer.ID, t iface.RemoteTool) error {
	if g.opts.Allow == nil {
		return nil
	}
	tags := metaTags(t.Meta)
	if c, ok := g.card(p); ok {
		tags = append(tags, c.Tags...)
	}
	return g.opts.Allow(ToolInfo{Peer: p, Server: t.Server, Tool: t.Name, Tags: tags})
}

// metaTags reads a tool's tags from its _meta (discovery.TagsMetaKey).
func metaTags(meta sdkmcp.Meta) []string {
	switch v := meta[discovery.TagsMetaKey].(type) {
	case []string:
		return slices.Clone(v)
	case []any:
		var tags []string
		for _, t := range v {
			if s, ok := t.(string); ok && s != "" {
				tags = append(tags, s)
			}
		}
		return tags
	}
	return nil
}

// peerOf resolves the PEER part of a ref; "any" picks a provider of tool
// (one that Allow lets through).
func (g *Mesh) peerOf(ctx context.Context, ps, tool string) (lpeer.ID, error) {
	if ps == "any" {
		found, err := g.providers(ctx, tool, true)
		if err != nil {
			return "", err
		}
		return found[0], nil
	}
	info, err := identity.ParseTarget(ps)
	if err != nil {
		return "", err
	}
	return info.ID, nil
}

// providers looks up the peers that offer tool (TOOL or SERVER/TOOL) and
// that Allow lets through; with first, it stops at the first one.
func (g *Mesh) providers(ctx context.Context, tool string, first bool) ([]lpeer.ID, error) {
	var found []lpeer.ID
	ctx, cancel := context.WithTimeout(ctx, g.opts.SearchTimeout)
	defer cancel()
	server, name, ok := strings.Cut(tool, "/")
	if !ok {
		server, name = "", tool
	}
	var refused error
	g.n.Find(ctx, name, func(f discovery.Found) {
		g.remember(f.Card)
		for _, m := range f.Matches {
			if m.Tool == nil || (server != "" && m.Server != server) {
				continue // an event type ("any/event:NAME"), or another server's
			}
			if g.opts.Allow != nil {
				tags := append(slices.Clone(m.Tool.Tags), f.Card.Tags...)
				if err := g.opts.Allow(ToolInfo{Peer: f.Card.Peer, Server: m.Server, Tool: name, Tags: tags}); err != nil {
					refused = err
					continue
				}
			}
			found = append(found, f.Card.Peer)
			if first {
				cancel()
			}
			return
		}
	})
	if len(found) == 0 {
		if refused != nil {
			return nil, refused
		}
		return nil, fmt.Errorf("no peer in the mesh offers a tool named %q", name)
	}
	return found, nil
}

// CallIn is the input of mesh_call.
type CallIn struct {
	Ref       string         `json:"ref" jsonschema:"the tool ref: PEER/SERVER/TOOL, or any/TOOL"`
	Arguments map[string]any `json:"arguments,omitempty" jsonschema:"the tool's arguments, as its input schema says"`
}

// Call calls the tool ref names (PEER/SERVER/TOOL, PEER/TOOL, or any/TOOL:
// a provider found in the mesh) with args, a value that marshals to a JSON
// object or nil. As with node.CallTool, a tool that fails answers with
// IsError set; err is for failing to reach it. Called from a served tool's
// handler, with its context, the call is a child task of it.
func (g *Mesh) Call(ctx context.Context, ref string, args any) (*sdkmcp.CallToolResult, error) {
	ps, tool, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	if ps == "any" && g.opts.Allow == nil {
		res, err := g.n.CallAny(ctx, tool, args)
		if err != nil {
			return nil, err
		}
		return res.Result, nil
	}
	p, t, err := g.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	return g.n.CallServerTool(ctx, p, t.Server, t.Name, args)
}
