package trust

import (
	"context"
	"slices"
	"sync"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/peer"
)

// When the policy changes, a peer may see more or less of a shared server
// than it was last shown. Each session served (or relayed, for a re-shared
// server) remembers the names it was last listed (before filtering), so that
// a new policy tells exactly which peers' lists changed, and of what kind:
// those peers get the MCP list_changed notification and list again. A peer
// that never listed a kind has nothing to refresh and is not told.

// servedSession is one session a shared server serves, or a re-shared
// server relays, to a peer.
type servedSession struct {
	server string
	caller lpeer.ID
	notify func(method string) error // sends the peer a notification; set before the session is registered

	mu     sync.Mutex
	listed map[string]*listedNames // by list method
}

// listedNames are the names in a session's last full answer to one list
// method, unfiltered.
type listedNames struct {
	names   []string
	tooMany bool // past maxListedNames: not kept, the peer is told of every change
}

type servedKey struct{}

func sessionServed(ctx context.Context) *servedSession {
	s, _ := ctx.Value(servedKey{}).(*servedSession)
	return s
}

// capturingTransport keeps the connection it makes, so that the node can
// write notifications the SDK has no call for to the session's peer (the
// connection's writes are serialized).
type capturingTransport struct {
	sdkmcp.Transport
	into *servedSession
}

func (t capturingTransport) Connect(ctx context.Context) (sdkmcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err == nil {
		t.into.notify = func(method string) error { return c.Write(ctx, &jsonrpc.Request{Method: method}) }
	}
	return c, err
}

// maxListedNames bounds what one session remembers per list method; a
// server listing more is told of every policy change.
const maxListedNames = 10000

// remember records the names in a list answer, before the policy filters
// it: a first page (asked with no cursor) starts over, later pages add to it.
func (s *servedSession) remember(method string, firstPage bool, res sdkmcp.Result) {
	var names []string
	switch r := res.(type) {
	case *sdkmcp.ListToolsResult:
		names = namesOf(r.Tools, func(t *sdkmcp.Tool) string { return t.Name })
	case *sdkmcp.ListPromptsResult:
		names = namesOf(r.Prompts, func(p *sdkmcp.Prompt) string { return p.Name })
	case *sdkmcp.ListResourcesResult:
		names = namesOf(r.Resources, func(x *sdkmcp.Resource) string { return x.URI })
	case *sdkmcp.ListResourceTemplatesResult:
		names = namesOf(r.ResourceTemplates, func(x *sdkmcp.ResourceTemplate) string { return x.URITemplate })
	default:
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listed == nil {
		s.listed = map[string]*listedNames{}
	}
	l := s.listed[method]
	if l == nil || firstPage {
		l = &listedNames{}
		s.listed[method] = l
	}
	if len(l.names)+len(names) > maxListedNames {
		l.names, l.tooMany = nil, true
	} else if !l.tooMany {
		l.names = append(l.names, names...)
	}
}

func namesOf[T any](items []T, name func(T) string) []string {
	names := make([]string, len(items))
	for i, x := range items {
		names[i] = name(x)
	}
	return names
}

// listCursor is the cursor of a list request's params.
func listCursor(p sdkmcp.Params) string {
	switch p := p.(type) {
	case *sdkmcp.ListToolsParams:
		return p.Cursor
	case *sdkmcp.ListPromptsParams:
		return p.Cursor
	case *sdkmcp.ListResourcesParams:
		return p.Cursor
	case *sdkmcp.ListResourceTemplatesParams:
		return p.Cursor
	}
	return ""
}

// listChangedNotice is the notification that tells a client to list a kind
// again, by the list method that shows it.
var listChangedNotice = map[string]string{
	"tools/list":               "notifications/tools/list_changed",
	"prompts/list":             "notifications/prompts/list_changed",
	"resources/list":           "notifications/resources/list_changed",
	"resources/templates/list": "notifications/resources/list_changed",
}

// kindOfList is what each list method lists: the requests whose answers
// are filtered and remembered.
var kindOfList = map[string]peer.Kind{
	"tools/list":               peer.Tool,
	"prompts/list":             peer.Prompt,
	"resources/list":           peer.Resource,
	"resources/templates/list": peer.Resource,
}

// changedLists returns the notifications the session's peer needs when the
// policy goes from old to new: one per kind whose shown names differ.
func (s *servedSession) changedLists(old, new *peer.Policy) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var notes []string
	for method, l := range s.listed {
		a := peer.Access{Caller: s.caller, Server: s.server, Kind: kindOfList[method]}
		differs := l.tooMany
		for _, name := range l.names {
			a.Name = name
			if old.Shows(a) != new.Shows(a) {
				differs = true
				break
			}
		}
		if differs {
			notes = append(notes, listChangedNotice[method])
		}
	}
	slices.Sort(notes)
	return slices.Compact(notes)
}

// notifyListChanges tells each served peer whose lists the policy change
// from old to new alters to list again. The writes run on goroutines the
// node waits for: a peer that does not read must not hold up SetPolicy.
func (n *Node) notifyListChanges(old, new *peer.Policy) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	type notice struct {
		s     *servedSession
		notes []string
	}
	var todo []notice
	add := func(s *servedSession) {
		if notes := s.changedLists(old, new); len(notes) > 0 && s.notify != nil {
			todo = append(todo, notice{s, notes})
		}
	}
	for _, s := range n.inbound {
		add(s)
	}
	for s := range n.relayed {
		add(s)
	}
	n.wg.Add(len(todo))
	n.mu.Unlock()
	for _, t := range todo {
		go func() {
			defer n.wg.Done()
			for _, method := range t.notes {
				if err := t.s.notify(method); err != nil {
					trustLog.Debugw("list_changed", "peer", t.s.caller, "server", t.s.server, "error", err)
					return
				}
			}
			trustLog.Debugw("list_changed", "peer", t.s.caller, "server", t.s.server, "lists", t.notes)
		}()
	}
}
