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
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer"
)

// Pin exposes one remote tool as a first-class tool of the mesh-mode server.
type Pin struct {
	Peer   lpeer.ID
	Server string // empty: wherever the tool is on Peer
	Tool   string
	// As is the name the host sees; empty means "<label>.<tool>", label
	// being the peer's card name or the end of its ID.
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
	info, err := peer.ParseTarget(parts[0])
	if err != nil {
		return p, fmt.Errorf("pin %q: %w", s, err)
	}
	p.Peer, p.As, p.Tool = info.ID, as, parts[len(parts)-1]
	if len(parts) == 3 {
		p.Server = parts[1]
	}
	return p, nil
}

// MeshOptions configures the mesh-mode server.
type MeshOptions struct {
	Pins []Pin
	// SearchTimeout bounds one search of the mesh. Default 3s.
	SearchTimeout time.Duration
}

// NewMeshServer returns the MCP server of mesh mode, acting through n.
// Pinned tools are added as they are resolved (a peer may not be reachable
// yet); the server announces each with listChanged. ctx bounds that
// resolving.
func NewMeshServer(ctx context.Context, n *node.Node, opts MeshOptions) *sdkmcp.Server {
	if opts.SearchTimeout <= 0 {
		opts.SearchTimeout = 3 * time.Second
	}
	g := &mesh{n: n, opts: opts, cards: map[lpeer.ID]*discovery.Card{}}
	s := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "mcpmesh", Title: "mcpmesh gateway", Version: n.Version()}, &sdkmcp.ServerOptions{
		Instructions: "Tools of a peer-to-peer mesh of MCP servers. Search the mesh for what you need (mesh_search), " +
			"read the one tool's input schema (mesh_describe), then call it (mesh_call).",
		Capabilities: &sdkmcp.ServerCapabilities{Tools: &sdkmcp.ToolCapabilities{ListChanged: true}},
	})
	sdkmcp.AddTool(s, &sdkmcp.Tool{
		Name:        "mesh_search",
		Description: "Search the mesh for tools by words and tags. Returns tool refs (PEER/SERVER/TOOL) with one line each.",
		Annotations: &sdkmcp.ToolAnnotations{ReadOnlyHint: true},
	}, g.search)
	sdkmcp.AddTool(s, &sdkmcp.Tool{
		Name:        "mesh_describe",
		Description: "Get one tool's full description and input schema, by its ref from mesh_search.",
		Annotations: &sdkmcp.ToolAnnotations{ReadOnlyHint: true},
	}, g.describe)
	sdkmcp.AddTool(s, &sdkmcp.Tool{
		Name:        "mesh_call",
		Description: "Call a tool by its ref (PEER/SERVER/TOOL), or by name on any peer that offers it (ref \"any/TOOL\").",
	}, g.call)
	for _, p := range opts.Pins {
		go g.pin(ctx, s, p)
	}
	return s
}

type mesh struct {
	n    *node.Node
	opts MeshOptions

	mu    sync.Mutex
	cards map[lpeer.ID]*discovery.Card // verified cards seen, until they expire
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

func (g *mesh) search(ctx context.Context, _ *sdkmcp.CallToolRequest, in SearchIn) (*sdkmcp.CallToolResult, any, error) {
	words := strings.Fields(strings.ToLower(in.Query))
	if len(words) == 0 && len(in.Tags) == 0 {
		return nil, nil, errors.New("give a query, tags, or both")
	}
	limit := in.Limit
	if limit <= 0 || limit > 50 {
		limit = 5
	}
	ctx, cancel := context.WithTimeout(ctx, g.opts.SearchTimeout)
	defer cancel()
	cards := g.gather(ctx, words, in.Tags)

	type scored struct {
		hit   Hit
		score int
	}
	var found []scored
	for _, c := range cards {
		label := cardLabel(c)
		for _, srv := range c.Servers {
			for _, t := range srv.Tools {
				tags := append(slices.Clone(t.Tags), c.Tags...)
				if !hasAll(tags, in.Tags) {
					continue
				}
				score := 1
				if len(words) > 0 {
					score = matchScore(words, t.Name, t.Title, t.Description)
					if score == 0 {
						continue
					}
				}
				found = append(found, scored{Hit{
					Ref:  c.Peer.String() + "/" + srv.Name + "/" + t.Name,
					Peer: label,
					Desc: t.Description,
					Tags: t.Tags,
				}, score})
			}
		}
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].score > found[j].score })
	out := SearchOut{Hits: []Hit{}}
	for i := 0; i < len(found) && i < limit; i++ {
		out.Hits = append(out.Hits, found[i].hit)
	}
	return structured(out)
}

// gather returns the verified cards of the peers this node knows, plus those
// that the DHT names as providers of a word (as a tool name) or a tag.
func (g *mesh) gather(ctx context.Context, words, tags []string) []*discovery.Card {
	var wg sync.WaitGroup
	add := func(c *discovery.Card) {
		g.mu.Lock()
		g.cards[c.Peer] = c
		g.mu.Unlock()
	}
	if g.n.Discovery() != nil {
		known := g.n.Host().Peerstore().Peers()
		if rt := g.n.Discovery().DHT().RoutingTable(); rt != nil {
			known = append(known, rt.ListPeers()...)
		}
		known = append(known, g.n.ID())
		sem := make(chan struct{}, 16) // bounds the card fetches in flight
		for _, p := range known {
			g.mu.Lock()
			c, ok := g.cards[p]
			g.mu.Unlock()
			if ok && time.Now().Before(c.Expires()) {
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
				if c, err := g.n.Card(ctx, p); err == nil {
					add(c)
				}
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
				g.n.Find(ctx, q, func(f discovery.Found) { add(f.Card) })
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

func (g *mesh) describe(ctx context.Context, _ *sdkmcp.CallToolRequest, in RefIn) (*sdkmcp.CallToolResult, any, error) {
	ps, tool, err := parseRef(in.Ref)
	if err != nil {
		return nil, nil, err
	}
	p, err := g.peerOf(ctx, ps, tool)
	if err != nil {
		return nil, nil, err
	}
	t, err := g.n.ResolveTool(ctx, p, tool)
	if err != nil {
		return nil, nil, err
	}
	return structured(DescribeOut{Ref: p.String() + "/" + t.Ref(), Description: t.Description, InputSchema: t.InputSchema})
}

// peerOf resolves the PEER part of a ref; "any" picks a provider of tool.
func (g *mesh) peerOf(ctx context.Context, ps, tool string) (lpeer.ID, error) {
	if ps == "any" {
		var found lpeer.ID
		ctx, cancel := context.WithTimeout(ctx, g.opts.SearchTimeout)
		defer cancel()
		name := tool
		if _, t, ok := strings.Cut(tool, "/"); ok {
			name = t
		}
		g.n.Find(ctx, name, func(f discovery.Found) {
			if found == "" {
				found = f.Card.Peer
				cancel()
			}
		})
		if found == "" {
			return "", fmt.Errorf("no peer in the mesh offers a tool named %q", name)
		}
		return found, nil
	}
	info, err := peer.ParseTarget(ps)
	if err != nil {
		return "", err
	}
	return info.ID, nil
}

// CallIn is the input of mesh_call.
type CallIn struct {
	Ref       string         `json:"ref" jsonschema:"the tool ref: PEER/SERVER/TOOL, or any/TOOL"`
	Arguments map[string]any `json:"arguments,omitempty" jsonschema:"the tool's arguments, as its input schema says"`
}

func (g *mesh) call(ctx context.Context, _ *sdkmcp.CallToolRequest, in CallIn) (*sdkmcp.CallToolResult, any, error) {
	ps, tool, err := parseRef(in.Ref)
	if err != nil {
		return nil, nil, err
	}
	var args any
	if in.Arguments != nil {
		args = in.Arguments
	}
	if ps == "any" {
		res, err := g.n.CallAny(ctx, tool, args)
		if err != nil {
			return nil, nil, err
		}
		return res.Result, nil, nil
	}
	info, err := peer.ParseTarget(ps)
	if err != nil {
		return nil, nil, err
	}
	res, err := g.n.CallTool(ctx, info.ID, tool, args)
	if err != nil {
		return nil, nil, err
	}
	return res, nil, nil
}

// pin resolves p and adds it to s as a tool of its own, retrying until the
// peer answers or ctx ends.
func (g *mesh) pin(ctx context.Context, s *sdkmcp.Server, p Pin) {
	ref := p.Tool
	if p.Server != "" {
		ref = p.Server + "/" + p.Tool
	}
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		t, err := g.n.ResolveTool(ctx, p.Peer, ref)
		if err == nil {
			name := p.As
			if name == "" {
				label := shortID(p.Peer)
				if c, err := g.n.Card(ctx, p.Peer); err == nil {
					label = cardLabel(c)
				}
				name = label + "." + t.Name
			}
			tool := *t.Tool
			tool.Name = name
			server := t.Server
			s.AddTool(&tool, func(ctx context.Context, req *sdkmcp.CallToolRequest) (*sdkmcp.CallToolResult, error) {
				var args any
				if len(req.Params.Arguments) > 0 {
					args = json.RawMessage(req.Params.Arguments)
				}
				return g.n.CallServerTool(ctx, p.Peer, server, t.Name, args)
			})
			log.Infow("pinned", "tool", name, "peer", p.Peer)
			return
		}
		log.Warnf("pin %s on %s: %v; retrying in %v", ref, p.Peer, err, wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}
