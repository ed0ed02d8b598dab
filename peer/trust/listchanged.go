package trust

import (
	"context"
	"slices"
	"sync"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// When the policy changes, a peer may see more or less of a shared server
// than it was last shown. Each session served (or relayed, for a re-shared
// server) remembers the names it was last listed (before filtering), so that
// a new policy tells exactly which peers' lists changed, and of what kind:
// those peers get the MCP list_changed notification and list again. A peer
// that never listed a kind has nothing to refresh and is not told.

// Session is the trust layer's record of one session a shared server
// serves, or a re-shared server relays, to a peer: what its lists showed.
type Session struct {
	server string
	caller lpeer.ID
	// Notify sends the peer a notification. Set it before Track.
	Notify func(method string) error

	mu     sync.Mutex
	listed map[string]*listedNames // by list method
}

// NewSession returns the record of a session that the server called server
// serves to caller. Put it on the session's context (WithSession) and Track
// it once its Notify is set; Untrack it when the session ends.
func NewSession(server string, caller lpeer.ID) *Session {
	return &Session{server: server, caller: caller}
}

// WithSession returns the session context of a served session, which its
// requests' contexts derive from, with s on it.
func WithSession(ctx context.Context, s *Session) context.Context {
	return context.WithValue(ctx, servedKey{}, s)
}

// Track adds s to the sessions a policy change tells of list changes.
func (g *Guard) Track(s *Session) {
	g.mu.Lock()
	g.sessions[s] = struct{}{}
	g.mu.Unlock()
}

// Untrack forgets s.
func (g *Guard) Untrack(s *Session) {
	g.mu.Lock()
	delete(g.sessions, s)
	g.mu.Unlock()
}

// listedNames are the names in a session's last full answer to one list
// method, unfiltered.
type listedNames struct {
	names   []string
	tooMany bool // past maxListedNames: not kept, the peer is told of every change
}

type servedKey struct{}

func sessionServed(ctx context.Context) *Session {
	s, _ := ctx.Value(servedKey{}).(*Session)
	return s
}

// maxListedNames bounds what one session remembers per list method; a
// server listing more is told of every policy change.
const maxListedNames = 10000

// remember records the names in a list answer, before the policy filters
// it: a first page (asked with no cursor) starts over, later pages add to it.
func (s *Session) remember(method string, firstPage bool, res sdkmcp.Result) {
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
	s.rememberNames(method, firstPage, names)
}

// rememberNames records the names in a list answer (see remember).
func (s *Session) rememberNames(method string, firstPage bool, names []string) {
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
var kindOfList = map[string]policy.Kind{
	"tools/list":               policy.Tool,
	"prompts/list":             policy.Prompt,
	"resources/list":           policy.Resource,
	"resources/templates/list": policy.Resource,
}

// changedLists returns the notifications the session's peer needs when the
// policy goes from old to new: one per kind whose shown names differ.
func (s *Session) changedLists(old, new *policy.Policy) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var notes []string
	for method, l := range s.listed {
		a := policy.Access{Caller: s.caller, Server: s.server, Kind: kindOfList[method]}
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
// guard waits for (Close): a peer that does not read must not hold up
// SetPolicy.
func (g *Guard) notifyListChanges(old, new *policy.Policy) {
	g.mu.Lock()
	type notice struct {
		s     *Session
		notes []string
	}
	var todo []notice
	for s := range g.sessions {
		if notes := s.changedLists(old, new); len(notes) > 0 && s.Notify != nil {
			todo = append(todo, notice{s, notes})
		}
	}
	g.mu.Unlock()
	for _, t := range todo {
		g.group.Go(func() {
			for _, method := range t.notes {
				if err := t.s.Notify(method); err != nil {
					trustLog.Debugw("list_changed", "peer", t.s.caller, "server", t.s.server, "error", err)
					return
				}
			}
			trustLog.Debugw("list_changed", "peer", t.s.caller, "server", t.s.server, "lists", t.notes)
		})
	}
}
