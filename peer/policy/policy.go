// Package policy decides who may see and use what a node shares: grants of
// tools, resources and prompts to peers and groups of peers, directly or on
// another peer's behalf, compiled once (groups expanded, patterns compiled)
// so that a check costs a few map lookups and no allocation.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/internal/pattern"
)

// Anyone stands for any principal in [Policy.AllowsServer].
const Anyone lpeer.ID = "*"

// Kind is the kind of capability an [Access] asks for.
type Kind int

// The kinds of capability a policy grants.
const (
	Tool Kind = iota + 1
	Resource
	Prompt
	// Event is subscribing to the node's events of a name (events/stream,
	// events/poll, events/list). Events are the node's, not a server's.
	Event
)

// String returns "tool", "resource", "prompt" or "event".
func (k Kind) String() string {
	switch k {
	case Tool:
		return "tool"
	case Resource:
		return "resource"
	case Prompt:
		return "prompt"
	case Event:
		return "event"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Access is one request to check against a [Policy]: a caller asking, for
// itself or on someone's behalf, for one tool, resource or prompt of one of
// the node's servers.
type Access struct {
	// Caller is the authenticated peer on the other end of the connection.
	Caller lpeer.ID
	// For is the principal of a verified delegation chain the caller
	// presented; "" (or Caller itself) for the caller's own call.
	For lpeer.ID
	// Server is the name of the server asked.
	Server string
	// Kind is what is asked for.
	Kind Kind
	// Name is the tool name, the resource URI (or a resource template's URI
	// template), the prompt name, or the event name.
	Name string
}

// Policy says which peers may see and use which capabilities of a node's
// servers. It is closed by default: a peer sees and calls only what a grant
// gives it. A Policy is immutable once built and safe for concurrent use;
// a nil *Policy grants nothing.
//
// Its JSON form, in a node's config file:
//
//	{
//	  "groups": {"team": ["12D3KooW...", "12D3KooW..."], "ops": ["team", "12D3KooW..."]},
//	  "grants": [
//	    {"peers": ["team"], "server": "node", "tools": ["*"]},
//	    {"peers": ["12D3KooWB..."], "for": ["12D3KooWA..."], "server": "files",
//	     "tools": ["read_*"], "resources": ["file:///pub/*"], "prompts": ["*"]},
//	    {"peers": ["*"], "tools": ["echo"], "hidden": true}
//	  ]
//	}
//
// or the string "open" for a policy that allows everything to everyone.
// See [Parse] for the meaning of each field.
type Policy struct {
	open   bool
	self   lpeer.ID
	src    policyJSON // as parsed, for MarshalJSON
	grants []*grant
	// byPeer lists, for each peer named by a grant's peers (directly or
	// through a group), the grants that name it; anyPeer the grants to "*".
	byPeer  map[lpeer.ID][]*grant
	anyPeer []*grant
}

// policyJSON is the JSON form of a Policy.
type policyJSON struct {
	Groups map[string][]string `json:"groups,omitempty"`
	Grants []grantJSON         `json:"grants"`
}

type grantJSON struct {
	Peers     []string `json:"peers"`
	For       []string `json:"for,omitempty"`
	Server    string   `json:"server,omitempty"`
	Tools     []string `json:"tools,omitempty"`
	Resources []string `json:"resources,omitempty"`
	Prompts   []string `json:"prompts,omitempty"`
	Events    []string `json:"events,omitempty"`
	Hidden    bool     `json:"hidden,omitempty"`
}

// grant is a compiled grantJSON.
type grant struct {
	server  string // "" for any server
	forAny  bool   // "*": on anyone's behalf, direct calls included
	forSelf bool   // "self": direct calls
	forSet  map[lpeer.ID]struct{}
	hidden  bool
	kinds   [Event + 1][]pattern.Pattern // by Kind
}

const (
	anyName  = pattern.Any
	selfName = "self"
	openName = "open"
)

// Open returns a policy that allows everything to everyone.
func Open() *Policy { return &Policy{open: true} }

// Closed returns a policy that allows nothing to anyone, except to the
// node itself once given by [Policy.WithSelf].
func Closed() *Policy { return &Policy{} }

// Parse reads a policy in its JSON form (see [Policy]). Empty input or
// "null" is the closed policy; the string "open" the open one.
//
// The fields of a grant:
//   - peers (required): who calls, the authenticated connection peer: peer
//     IDs, group names, or "*" for anyone.
//   - for: on whose behalf, the principal of a verified delegation chain:
//     peer IDs, group names, "*" (anyone, direct calls included) or "self"
//     (direct calls, made on no one else's behalf). Absent or empty means
//     ["self"], so a grant covers delegated calls only if it says so.
//   - server: a server name, or "*" (the default) for all.
//   - tools, prompts: name patterns; resources: URI patterns, also matched
//     against resource templates' URI templates. A "*" in a pattern matches
//     any run of characters ("/" included); everything else is literal.
//   - events: event name patterns: the caller may subscribe to the node's
//     events of those names (events are the node's, so a grant with events
//     names no server). Closed like the rest: no grant, no subscription.
//   - A grant must grant at least one of the four.
//   - hidden: leave the grant's capabilities out of the node's public card.
//
// Groups map a name to peer IDs and other groups' names. Unknown fields,
// unknown group names, group cycles and malformed peer IDs are errors, each
// naming the grant (counted from 1) or group at fault.
func Parse(data []byte) (*Policy, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || string(data) == "null" {
		return Closed(), nil
	}
	if data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		if s != openName {
			return nil, fmt.Errorf("policy: %q: want %q or an object with grants", s, openName)
		}
		return Open(), nil
	}
	// The grants are decoded one by one, so that an error names the grant.
	var top struct {
		Groups map[string][]string `json:"groups"`
		Grants []json.RawMessage   `json:"grants"`
	}
	if err := decodeStrict(data, &top); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	src := policyJSON{Groups: top.Groups, Grants: make([]grantJSON, len(top.Grants))}
	for i, g := range top.Grants {
		if err := decodeStrict(g, &src.Grants[i]); err != nil {
			return nil, fmt.Errorf("policy: grant %d: %w", i+1, err)
		}
	}
	return compilePolicy(src)
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and
// anything after the value.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the value")
	}
	return nil
}

func compilePolicy(src policyJSON) (*Policy, error) {
	groups, err := resolveGroups(src.Groups)
	if err != nil {
		return nil, err
	}
	p := &Policy{src: src, byPeer: map[lpeer.ID][]*grant{}}
	for i, gj := range src.Grants {
		g, err := compileGrant(gj, groups, p)
		if err != nil {
			return nil, fmt.Errorf("policy: grant %d: %w", i+1, err)
		}
		p.grants = append(p.grants, g)
	}
	return p, nil
}

func compileGrant(gj grantJSON, groups map[string]map[lpeer.ID]struct{}, p *Policy) (*grant, error) {
	g := &grant{hidden: gj.Hidden}
	switch {
	case gj.Server == "" || gj.Server == anyName:
	case strings.Contains(gj.Server, anyName):
		return nil, fmt.Errorf("server %q: want a server name or %q", gj.Server, anyName)
	default:
		g.server = gj.Server
	}
	if len(gj.Peers) == 0 {
		return nil, errors.New(`no peers: name the callers (peer IDs, group names or "*")`)
	}
	callers, anyCaller, err := resolvePeers("peer", gj.Peers, groups, false)
	if err != nil {
		return nil, err
	}
	if len(gj.For) == 0 {
		g.forSelf = true
	} else {
		g.forSet, g.forAny, err = resolvePeers("for", gj.For, groups, true)
		if err != nil {
			return nil, err
		}
		if _, ok := g.forSet[selfSentinel]; ok {
			delete(g.forSet, selfSentinel)
			g.forSelf = true
		}
	}
	for _, k := range []struct {
		kind Kind
		what string
		pats []string
	}{{Tool, "tool", gj.Tools}, {Resource, "resource", gj.Resources}, {Prompt, "prompt", gj.Prompts}, {Event, "event", gj.Events}} {
		for _, s := range k.pats {
			if s == "" {
				return nil, fmt.Errorf("empty %s pattern", k.what)
			}
			g.kinds[k.kind] = append(g.kinds[k.kind], pattern.Compile(s))
		}
	}
	if len(gj.Tools)+len(gj.Resources)+len(gj.Prompts)+len(gj.Events) == 0 {
		return nil, errors.New("grants nothing: give tools, resources, prompts or events")
	}
	if len(gj.Events) > 0 && g.server != "" {
		return nil, fmt.Errorf("events belong to the node, not to server %q: grant them in a grant without a server", g.server)
	}
	if anyCaller {
		p.anyPeer = append(p.anyPeer, g)
	} else {
		for id := range callers {
			p.byPeer[id] = append(p.byPeer[id], g)
		}
	}
	return g, nil
}

// selfSentinel stands for "self" in a resolved "for" set while compiling;
// it is not a valid peer ID, so it never matches a real one.
const selfSentinel = lpeer.ID("\x00self")

// resolvePeers turns a list of peer IDs, group names and "*" into a set.
// allowSelf accepts "self" (put in the set as selfSentinel).
func resolvePeers(field string, names []string, groups map[string]map[lpeer.ID]struct{}, allowSelf bool) (set map[lpeer.ID]struct{}, anyone bool, err error) {
	set = map[lpeer.ID]struct{}{}
	for _, n := range names {
		switch {
		case n == anyName:
			anyone = true
		case n == selfName && allowSelf:
			set[selfSentinel] = struct{}{}
		default:
			if members, ok := groups[n]; ok {
				for id := range members {
					set[id] = struct{}{}
				}
				continue
			}
			id, err := lpeer.Decode(n)
			if err != nil {
				return nil, false, fmt.Errorf("%s %q: not a peer ID or a group name", field, n)
			}
			set[id] = struct{}{}
		}
	}
	return set, anyone, nil
}

// resolveGroups expands every group to the set of peer IDs it holds,
// following nested groups, and refuses cycles and unknown members.
func resolveGroups(defs map[string][]string) (map[string]map[lpeer.ID]struct{}, error) {
	for _, name := range slices.Sorted(maps.Keys(defs)) {
		switch {
		case name == "" || name == anyName || name == selfName || name == openName:
			return nil, fmt.Errorf("policy: group %q: reserved name", name)
		case strings.ContainsAny(name, "*/ "):
			return nil, fmt.Errorf("policy: group %q: a group name may not hold \"*\", \"/\" or spaces", name)
		}
		if _, err := lpeer.Decode(name); err == nil {
			return nil, fmt.Errorf("policy: group %q: the name is a peer ID", name)
		}
	}
	out := make(map[string]map[lpeer.ID]struct{}, len(defs))
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		if _, done := out[name]; done {
			return nil
		}
		if i := slices.Index(path, name); i >= 0 {
			return fmt.Errorf("policy: group %q: cycle %s", name, strings.Join(append(path[i:], name), " → "))
		}
		path = append(path, name)
		set := map[lpeer.ID]struct{}{}
		for _, m := range defs[name] {
			if _, isGroup := defs[m]; isGroup {
				if err := visit(m, path); err != nil {
					return err
				}
				for id := range out[m] {
					set[id] = struct{}{}
				}
				continue
			}
			if m == anyName {
				return fmt.Errorf(`policy: group %q: member "*": name "*" in the grant instead`, name)
			}
			id, err := lpeer.Decode(m)
			if err != nil {
				return fmt.Errorf("policy: group %q: member %q: not a peer ID or a group name", name, m)
			}
			set[id] = struct{}{}
		}
		out[name] = set
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(defs)) {
		if err := visit(name, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// MarshalJSON returns the policy's JSON form, as [Parse] reads it:
// "open", or the groups and grants as given. The node's own ID set by
// [Policy.WithSelf] is not part of it.
func (p *Policy) MarshalJSON() ([]byte, error) {
	switch {
	case p == nil:
		return []byte("null"), nil
	case p.open:
		return json.Marshal(openName)
	}
	src := p.src
	if src.Grants == nil {
		src.Grants = []grantJSON{}
	}
	return json.Marshal(src)
}

// UnmarshalJSON reads the policy's JSON form as [Parse] does, so a
// Policy can be a field of a config struct.
func (p *Policy) UnmarshalJSON(data []byte) error {
	q, err := Parse(data)
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

// IsOpen reports whether p allows everything to everyone.
func (p *Policy) IsOpen() bool { return p != nil && p.open }

// WithSelf returns a copy of p that also allows everything to self, the
// node's own peer ID: the owner calling its own node. A nil p gives a closed
// policy for self.
func (p *Policy) WithSelf(self lpeer.ID) *Policy {
	if p == nil {
		p = Closed()
	}
	q := *p
	q.self = self
	return &q
}

// Grants returns the number of grants in p.
func (p *Policy) Grants() int {
	if p == nil {
		return 0
	}
	return len(p.grants)
}

// Groups returns the number of groups defined in p.
func (p *Policy) Groups() int {
	if p == nil {
		return 0
	}
	return len(p.src.Groups)
}

// String summarizes p for logs: "open", or "3 grants, 2 groups".
func (p *Policy) String() string {
	if p.IsOpen() {
		return "open"
	}
	return count(p.Grants(), "grant") + ", " + count(p.Groups(), "group")
}

// count says n things: "1 grant", "3 grants".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// Allows reports whether p lets a.Caller, calling for a.For, use or see the
// capability a names. A nil policy allows nothing.
func (p *Policy) Allows(a Access) bool {
	if a.For == a.Caller {
		a.For = ""
	}
	return p.check(&a, (*grant).allows)
}

// Shows reports whether p lets a.Caller use the capability a names for
// itself or on anyone's behalf (a.For is ignored): whether the capability is
// listed to the caller. A peer sees what it may use in some capacity; each
// call is then checked with Allows.
func (p *Policy) Shows(a Access) bool {
	return p.check(&a, (*grant).covers)
}

// check reports whether a grant to a.Caller (or to anyone) passes ok.
func (p *Policy) check(a *Access, ok func(*grant, *Access) bool) bool {
	if p == nil {
		return false
	}
	if p.open || (p.self != "" && a.Caller == p.self) {
		return true
	}
	if a.Kind < Tool || a.Kind > Event {
		return false
	}
	for _, gs := range [2][]*grant{p.byPeer[a.Caller], p.anyPeer} {
		for _, g := range gs {
			if ok(g, a) {
				return true
			}
		}
	}
	return false
}

func (g *grant) allows(a *Access) bool {
	return g.coversFor(a.For) && g.covers(a)
}

// covers reports whether g names a's capability, for whomever.
func (g *grant) covers(a *Access) bool {
	if g.server != "" && g.server != a.Server {
		return false
	}
	for i := range g.kinds[a.Kind] {
		if g.kinds[a.Kind][i].Match(a.Name) {
			return true
		}
	}
	return false
}

// onServers reports whether g grants anything on servers: a grant of
// events alone opens no session.
func (g *grant) onServers() bool {
	return len(g.kinds[Tool])+len(g.kinds[Resource])+len(g.kinds[Prompt]) > 0
}

func (g *grant) coversFor(principal lpeer.ID) bool {
	switch {
	case g.forAny:
		return true
	case principal == "":
		return g.forSelf
	}
	_, ok := g.forSet[principal]
	return ok
}

// AllowsServer reports whether p grants caller, calling for forPeer ("" for
// itself), anything at all on server: whether a session to it may be opened.
//
// forPeer may be [Anyone]: any grant on server for caller, whoever it acts for.
func (p *Policy) AllowsServer(caller, forPeer lpeer.ID, server string) bool {
	if p == nil {
		return false
	}
	if p.open || (p.self != "" && caller == p.self) {
		return true
	}
	if forPeer == caller {
		forPeer = ""
	}
	ok := func(g *grant) bool {
		return (g.server == "" || g.server == server) && g.onServers() && (forPeer == Anyone || g.coversFor(forPeer))
	}
	return slices.ContainsFunc(p.byPeer[caller], ok) || slices.ContainsFunc(p.anyPeer, ok)
}

// Advertised reports whether some grant that is not hidden covers the named
// capability, whoever it is granted to: whether it goes in the node's public
// card. The open policy advertises everything.
func (p *Policy) Advertised(server string, kind Kind, name string) bool {
	if p == nil {
		return false
	}
	if p.open {
		return true
	}
	if kind < Tool || kind > Event {
		return false
	}
	for _, g := range p.grants {
		if g.hidden || (g.server != "" && g.server != server) {
			continue
		}
		for i := range g.kinds[kind] {
			if g.kinds[kind][i].Match(name) {
				return true
			}
		}
	}
	return false
}
