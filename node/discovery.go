package node

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/node/iface"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/peer/reach"
	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

// ErrNoDiscovery is returned by lookups on a node started without
// WithDiscovery.
var ErrNoDiscovery = errors.New("discovery is off on this node (start it with node.WithDiscovery)")

func (n *Node) startDiscovery() error {
	if n.cfg.discovery == nil {
		return nil
	}
	cfg := *n.cfg.discovery
	if n.cfg.psk != nil {
		// A private mesh announces itself on mDNS only under a name
		// derived from its key.
		cfg.MeshKey = n.cfg.psk
	}
	// The DHT may use relayed connections: see reach.AllowLimited.
	svc, err := discovery.New(reach.AllowLimited(n.host), n.host.Peerstore().PrivKey(n.host.ID()), cfg)
	if err != nil {
		return err
	}
	n.disc = svc
	svc.Start(n.buildCard)
	return nil
}

// changed tells discovery that what the node shares may have changed.
func (n *Node) changed() {
	if n.disc != nil {
		n.disc.Changed()
	}
}

// Discovery returns the node's discovery service, or nil.
func (n *Node) Discovery() *discovery.Service { return n.disc }

// buildCard lists what every shared server offers, through the node's own
// in-memory sessions to them.
func (n *Node) buildCard(ctx context.Context) (*cardpb.Card, error) {
	card := &cardpb.Card{
		Name:        n.cfg.name,
		Description: n.cfg.description,
		Version:     n.cfg.version,
		Tags:        n.cfg.tags,
	}
	for _, a := range n.host.Addrs() {
		card.Addrs = append(card.Addrs, a.Bytes())
	}
	for _, name := range n.Shared() {
		lists, err := n.ownLists(ctx, name)
		if err != nil {
			return nil, err
		}
		srv := &cardpb.Server{Name: name}
		tools := lists.Tools
		// The card shows what the policy lets some peer see (and does not
		// hide); each peer's own lists show what it may use.
		tools = slices.DeleteFunc(slices.Clone(tools), func(t *sdkmcp.Tool) bool { return !n.trust.Advertised(name, policy.Tool, t.Name) })
		slices.SortFunc(tools, func(a, b *sdkmcp.Tool) int { return strings.Compare(a.Name, b.Name) })
		full, err := json.Marshal(tools)
		if err != nil {
			return nil, fmt.Errorf("hash tools of %s: %w", name, err)
		}
		sum := sha256.Sum256(full)
		srv.ToolsHash = sum[:]
		for _, t := range tools {
			srv.Tools = append(srv.Tools, &cardpb.Tool{Name: t.Name, Title: t.Title, Description: summary(t.Description), Tags: toolTags(t)})
		}
		for _, r := range lists.Resources {
			if n.trust.Advertised(name, policy.Resource, r.URI) {
				srv.Resources = append(srv.Resources, &cardpb.Resource{Uri: r.URI, Name: r.Name, Title: r.Title, Description: summary(r.Description), MimeType: r.MIMEType})
			}
		}
		for _, r := range lists.Templates {
			if n.trust.Advertised(name, policy.Resource, r.URITemplate) {
				srv.ResourceTemplates = append(srv.ResourceTemplates, &cardpb.ResourceTemplate{UriTemplate: r.URITemplate, Name: r.Name, Title: r.Title, Description: summary(r.Description)})
			}
		}
		for _, p := range lists.Prompts {
			if n.trust.Advertised(name, policy.Prompt, p.Name) {
				srv.Prompts = append(srv.Prompts, &cardpb.Prompt{Name: p.Name, Title: p.Title, Description: summary(p.Description)})
			}
		}
		card.Servers = append(card.Servers, srv)
	}
	n.cardEvents(card)
	n.cardBuilt(card)
	return card, nil
}

// ownLists lists what one of the node's own servers offers: a program's or
// an endpoint's from the node's index session of it (never a caller's
// process), the others through the node's own in-memory session.
func (n *Node) ownLists(ctx context.Context, name string) (relay.Lists, error) {
	n.mu.Lock()
	s := n.servers[name]
	n.mu.Unlock()
	if s != nil && s.share != nil {
		return s.share.Lists(), nil
	}
	self := n.host.ID()
	cs, err := n.Session(ctx, self, name)
	if err != nil {
		return relay.Lists{}, fmt.Errorf("list own server %s: %w", name, err)
	}
	l := relay.Lists{Capabilities: cs.InitializeResult().Capabilities}
	if l.Tools, err = n.serverTools(ctx, self, name); err != nil {
		return l, err
	}
	caps := l.Capabilities
	if caps != nil && caps.Resources != nil {
		for r, err := range cs.Resources(ctx, nil) {
			if err != nil {
				return l, fmt.Errorf("list resources of %s: %w", name, err)
			}
			l.Resources = append(l.Resources, r)
		}
		for r, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				return l, fmt.Errorf("list resource templates of %s: %w", name, err)
			}
			l.Templates = append(l.Templates, r)
		}
	}
	if caps != nil && caps.Prompts != nil {
		for p, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				return l, fmt.Errorf("list prompts of %s: %w", name, err)
			}
			l.Prompts = append(l.Prompts, p)
		}
	}
	return l, nil
}

// summary keeps a description's first sentence, at most 160 characters:
// cards carry enough to choose, the schema is fetched on demand.
func summary(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, ". "); i >= 0 {
		s = s[:i+1]
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		cut := 157
		for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func toolTags(t *sdkmcp.Tool) []string {
	raw, ok := t.Meta[discovery.TagsMetaKey].([]any)
	if !ok {
		if ss, ok := t.Meta[discovery.TagsMetaKey].([]string); ok {
			return ss
		}
		return nil
	}
	var tags []string
	for _, v := range raw {
		if s, ok := v.(string); ok && s != "" {
			tags = append(tags, s)
		}
	}
	return tags
}

// Card returns p's verified card from the DHT.
func (n *Node) Card(ctx context.Context, p lpeer.ID) (*discovery.Card, error) {
	if n.disc == nil {
		return nil, ErrNoDiscovery
	}
	return n.disc.Card(ctx, p)
}

// Find looks up the peers that offer query (a tool name, or "tag:NAME")
// and calls found for each, as they are verified, until the lookup ends or
// ctx is done.
func (n *Node) Find(ctx context.Context, query string, found func(discovery.Found)) error {
	if n.disc == nil {
		return ErrNoDiscovery
	}
	c, err := discovery.ParseQuery(query)
	if err != nil {
		return err
	}
	m := n.cfg.trust.metrics
	if m == nil {
		return n.disc.Find(ctx, c, found)
	}
	start, hit := time.Now(), false
	err = n.disc.Find(ctx, c, func(f discovery.Found) {
		hit = true
		found(f)
	})
	if err != nil && !hit {
		m.LookupFailed(time.Since(start))
	} else {
		m.Lookup(hit, time.Since(start))
	}
	return err
}

// findWindow is how long CallAny keeps collecting providers after the
// first one, before choosing.
const findWindow = 300 * time.Millisecond

// CallAny finds the providers of tool and calls one: a peer already
// connected first, then the lowest measured latency. If the chosen peer
// fails before answering (unreachable, refused, connection lost), it tries
// the next. A tool that answers with an error result has answered.
func (n *Node) CallAny(ctx context.Context, tool string, args any) (iface.AnyResult, error) {
	if n.disc == nil {
		return iface.AnyResult{}, ErrNoDiscovery
	}
	type candidate struct {
		peer   lpeer.ID
		server string
	}
	var cands []candidate
	// "Already connected" means before the lookup, which itself connects
	// to the peers it asks.
	net := n.host.Network()
	connected := map[lpeer.ID]bool{n.host.ID(): true}
	for _, p := range net.Peers() {
		connected[p] = true
	}
	findCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var window *time.Timer // from the first provider found: the lookup ends findWindow later
	err := n.disc.Find(findCtx, discovery.Capability{Kind: "tool", Name: tool}, func(f discovery.Found) {
		for _, m := range f.Matches {
			cands = append(cands, candidate{peer: f.Card.Peer, server: m.Server})
		}
		if window == nil {
			window = time.AfterFunc(findWindow, cancel)
		}
	})
	if window != nil {
		window.Stop()
	}
	if len(cands) == 0 {
		if err != nil && ctx.Err() != nil {
			return iface.AnyResult{}, err
		}
		return iface.AnyResult{}, fmt.Errorf("no peer in the mesh offers a tool named %q", tool)
	}
	// Connected peers first, then the rest; each group by measured latency,
	// unmeasured last.
	rank := func(p lpeer.ID) (int, time.Duration) {
		group := 1
		if connected[p] {
			group = 0
		}
		l := n.host.Peerstore().LatencyEWMA(p)
		if l <= 0 {
			l = time.Hour
		}
		return group, l
	}
	slices.SortStableFunc(cands, func(a, b candidate) int {
		ga, la := rank(a.peer)
		gb, lb := rank(b.peer)
		if ga != gb {
			return ga - gb
		}
		return int(la - lb)
	})

	out := iface.AnyResult{}
	for _, c := range cands {
		// A provider whose tool takes other arguments (same name, another
		// tool) is not called: the next one may fit.
		if err := n.argsFit(ctx, c.peer, c.server, tool, args); err != nil {
			out.Tried = append(out.Tried, err)
			continue
		}
		res, err := n.CallServerTool(ctx, c.peer, c.server, tool, args)
		if err == nil {
			out.Peer, out.Server, out.Result = c.peer, c.server, res
			return out, nil
		}
		if ctx.Err() != nil {
			return out, err
		}
		out.Tried = append(out.Tried, err)
	}
	return out, fmt.Errorf("every provider of %q failed: %w", tool, errors.Join(out.Tried...))
}

// argsFit says whether args fit the input schema that p lists for
// server/tool. A provider that cannot be asked, or whose schema cannot be
// read, fits: the call itself will say what is wrong.
func (n *Node) argsFit(ctx context.Context, p lpeer.ID, server, tool string, args any) error {
	tools, err := n.serverTools(ctx, p, server)
	if err != nil {
		return nil
	}
	var schema any
	for _, t := range tools {
		if t.Name == tool {
			schema = t.InputSchema
		}
	}
	if schema == nil {
		return nil
	}
	raw, err := json.Marshal(schema)
	if err != nil {
		return nil
	}
	var js jsonschema.Schema
	if json.Unmarshal(raw, &js) != nil {
		return nil
	}
	resolved, err := js.Resolve(nil)
	if err != nil {
		return nil
	}
	var instance any = map[string]any{}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil || json.Unmarshal(b, &instance) != nil {
			return nil
		}
	}
	if err := resolved.Validate(instance); err != nil {
		return fmt.Errorf("%s/%s/%s: the arguments do not fit its input schema: %v", p, server, tool, err)
	}
	return nil
}

// KnownPeers lists the peers whose cards a search of the mesh reads: those
// in the node's peerstore and DHT routing table, and the node itself. It is
// nil without discovery, where no card can be read.
func (n *Node) KnownPeers() []lpeer.ID {
	if n.disc == nil {
		return nil
	}
	known := n.host.Peerstore().Peers()
	if rt := n.disc.DHT().RoutingTable(); rt != nil {
		known = append(known, rt.ListPeers()...)
	}
	return append(known, n.host.ID())
}
