package relay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	logging "github.com/ipfs/go-log/v2"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/linger"
	"github.com/mcpmesh/mcpmesh/internal/owner"
	"github.com/mcpmesh/mcpmesh/mcp/ask"
)

var mirrorLog = logging.Logger("mcpmesh/share")

// ErrUpstreamDown is returned to callers while a mirrored server is not
// running (between a program's exit and its restart).
var ErrUpstreamDown = errors.New("shared server is not running")

// Mirror shares an MCP server that the node reaches as a client (a stdio
// program, say) as an SDK server of its own: the upstream server's tools,
// resources, resource templates and prompts, with their names unchanged, and
// calls, reads and progress forwarded both ways.
//
// The upstream session may come and go (a program restarting): Attach a new
// one and the mirror re-reads what it offers, announcing changes to every
// session open on the mirror.
type Mirror struct {
	name   string
	server *sdkmcp.Server

	mu        sync.Mutex
	up        *sdkmcp.ClientSession
	tools     map[string]bool
	resources map[string]bool
	templates map[string]bool
	prompts   map[string]bool

	subs  map[string]int // resource URI → sessions subscribed to it
	level sdkmcp.LoggingLevel

	callers   sync.Map // call id → *sdkmcp.ServerSession of a call in flight
	callSeq   atomic.Int64
	progress  *linger.Map[string, progressRoute] // upstream progress token → route
	nextToken atomic.Uint64

	ctx    context.Context // ends with Close: re-reads after a change stop
	cancel context.CancelFunc
	group  owner.Group // re-reads in flight
}

// progressGrace is how long progress from upstream is still relayed after
// the call it belongs to has returned.
const progressGrace = 2 * time.Second

type progressRoute struct {
	session *sdkmcp.ServerSession
	token   any
}

// NewMirror returns a mirror whose server presents itself as impl.
func NewMirror(name string, impl *sdkmcp.Implementation) *Mirror {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mirror{
		name:      name,
		progress:  linger.New[string, progressRoute](progressGrace),
		ctx:       ctx,
		cancel:    cancel,
		tools:     map[string]bool{},
		subs:      map[string]int{},
		resources: map[string]bool{},
		templates: map[string]bool{},
		prompts:   map[string]bool{},
	}
	m.server = sdkmcp.NewServer(impl, &sdkmcp.ServerOptions{
		Capabilities: &sdkmcp.ServerCapabilities{
			Tools:       &sdkmcp.ToolCapabilities{ListChanged: true},
			Resources:   &sdkmcp.ResourceCapabilities{ListChanged: true, Subscribe: true},
			Prompts:     &sdkmcp.PromptCapabilities{ListChanged: true},
			Completions: &sdkmcp.CompletionCapabilities{},
			Logging:     &sdkmcp.LoggingCapabilities{},
		},
		CompletionHandler: func(ctx context.Context, req *sdkmcp.CompleteRequest) (*sdkmcp.CompleteResult, error) {
			up, err := m.upstream()
			if err != nil {
				return nil, err
			}
			return up.Complete(ctx, req.Params)
		},
		SubscribeHandler: func(ctx context.Context, req *sdkmcp.SubscribeRequest) error {
			return m.subscribe(ctx, req.Params.URI, +1)
		},
		UnsubscribeHandler: func(ctx context.Context, req *sdkmcp.UnsubscribeRequest) error {
			return m.subscribe(ctx, req.Params.URI, -1)
		},
	})
	// A caller's logging level is passed on: the upstream sends what the
	// most verbose caller asked for, and each session gets what it asked for.
	m.server.AddReceivingMiddleware(func(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
		return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
			if p, ok := req.GetParams().(*sdkmcp.SetLoggingLevelParams); ok && method == "logging/setLevel" {
				if err := m.setLevel(ctx, p.Level); err != nil {
					return nil, err
				}
			}
			return next(ctx, method, req)
		}
	})
	return m
}

// Server returns the server to share.
func (m *Mirror) Server() *sdkmcp.Server { return m.server }

// ClientOptions returns the options for the client whose session is given to
// Attach: they follow the upstream's list changes, relay its progress
// notifications, and pass its questions (elicitation, sampling) to the
// caller whose call is in flight.
func (m *Mirror) ClientOptions() *sdkmcp.ClientOptions {
	return &sdkmcp.ClientOptions{
		Capabilities: &sdkmcp.ClientCapabilities{},
		ToolListChangedHandler: func(ctx context.Context, r *sdkmcp.ToolListChangedRequest) {
			m.resync(r.Session)
		},
		ResourceListChangedHandler: func(ctx context.Context, r *sdkmcp.ResourceListChangedRequest) {
			m.resync(r.Session)
		},
		PromptListChangedHandler: func(ctx context.Context, r *sdkmcp.PromptListChangedRequest) {
			m.resync(r.Session)
		},
		ResourceUpdatedHandler: func(ctx context.Context, r *sdkmcp.ResourceUpdatedNotificationRequest) {
			if err := m.server.ResourceUpdated(ctx, r.Params); err != nil {
				mirrorLog.Debugw("relay resource update", "server", m.name, "error", err)
			}
		},
		LoggingMessageHandler: func(ctx context.Context, r *sdkmcp.LoggingMessageRequest) {
			for ss := range m.server.Sessions() {
				ss.Log(ctx, r.Params) // the SDK drops what is below the session's level
			}
		},
		ProgressNotificationHandler: func(ctx context.Context, r *sdkmcp.ProgressNotificationClientRequest) {
			tok, _ := r.Params.ProgressToken.(string)
			pr, ok := m.progress.Get(tok)
			if !ok {
				return
			}
			p := *r.Params
			p.ProgressToken = pr.token
			if err := pr.session.NotifyProgress(ctx, &p); err != nil {
				mirrorLog.Debugw("relay progress", "server", m.name, "error", err)
			}
		},
		ElicitationHandler: func(ctx context.Context, r *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
			if inRequest(ctx) {
				return ask.Elicit(ctx, r.Params)
			}
			ss, err := m.soleCaller()
			if err != nil {
				return nil, err
			}
			return ss.Elicit(ctx, r.Params)
		},
		CreateMessageHandler: func(ctx context.Context, r *sdkmcp.CreateMessageRequest) (*sdkmcp.CreateMessageResult, error) {
			if inRequest(ctx) {
				return ask.Sample(ctx, r.Params)
			}
			ss, err := m.soleCaller()
			if err != nil {
				return nil, err
			}
			return ss.CreateMessage(ctx, r.Params)
		},
	}
}

// inRequest reports whether ctx is that of a request the mirror forwards: an
// upstream on protocol 2026-07-28 asks for input in its result, and the
// client answers it on the forwarding call's context, so the question can go
// to exactly that call's caller.
func inRequest(ctx context.Context) bool { return ask.CanAsk(ctx) }

// resync re-reads the upstream's lists after it announced a change. Handlers
// must not block the session's reader, so the re-read runs on a goroutine of
// the mirror's own; it is bounded, fails at once if the session ends, and
// stops with Close.
func (m *Mirror) resync(cs *sdkmcp.ClientSession) {
	m.group.Go(func() {
		ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
		defer cancel()
		if err := m.sync(ctx, cs); err != nil {
			mirrorLog.Warnw("re-read shared server after a change", "server", m.name, "error", err)
		}
	})
}

// Close stops the mirror's re-reads and waits for them. The server stays
// usable (calls fail while no upstream is attached).
func (m *Mirror) Close() {
	m.group.Stop()
	m.cancel()
	m.group.Wait()
}

// soleCaller returns the session of the one call in flight: a request that an
// upstream on an older protocol sends on its own names no call it belongs to, so with several calls in flight it
// cannot be routed safely, and asking the wrong user is worse than failing.
func (m *Mirror) soleCaller() (*sdkmcp.ServerSession, error) {
	var sessions []*sdkmcp.ServerSession
	m.callers.Range(func(_, v any) bool {
		sessions = append(sessions, v.(*sdkmcp.ServerSession))
		return len(sessions) < 2
	})
	switch len(sessions) {
	case 1:
		return sessions[0], nil
	case 0:
		return nil, fmt.Errorf("shared server %s asked for input outside any call", m.name)
	default:
		return nil, fmt.Errorf("shared server %s asked for input while several calls are in flight: cannot tell whose user to ask", m.name)
	}
}

// Attach makes cs the upstream session and re-reads everything it offers.
// Subscriptions and the logging level callers asked for are set again on
// it (a restarted program knows nothing of them).
func (m *Mirror) Attach(ctx context.Context, cs *sdkmcp.ClientSession) error {
	m.mu.Lock()
	m.up = cs
	var uris []string
	for uri := range m.subs {
		uris = append(uris, uri)
	}
	level := m.level
	m.mu.Unlock()
	var errs []error
	for _, uri := range uris {
		if err := cs.Subscribe(ctx, &sdkmcp.SubscribeParams{URI: uri}); err != nil {
			errs = append(errs, fmt.Errorf("subscribe %s again: %w", uri, err))
		}
	}
	if level != "" {
		if err := cs.SetLoggingLevel(ctx, &sdkmcp.SetLoggingLevelParams{Level: level}); err != nil {
			errs = append(errs, fmt.Errorf("set logging level again: %w", err))
		}
	}
	return errors.Join(append(errs, m.sync(ctx, cs))...)
}

// subscribe counts the callers subscribed to uri and subscribes upstream
// for the first, unsubscribes after the last.
func (m *Mirror) subscribe(ctx context.Context, uri string, delta int) error {
	up, err := m.upstream()
	if err != nil {
		return err
	}
	m.mu.Lock()
	before := m.subs[uri]
	after := max(before+delta, 0)
	if after == 0 {
		delete(m.subs, uri)
	} else {
		m.subs[uri] = after
	}
	m.mu.Unlock()
	switch {
	case before == 0 && after > 0:
		return up.Subscribe(ctx, &sdkmcp.SubscribeParams{URI: uri})
	case before > 0 && after == 0:
		return up.Unsubscribe(ctx, &sdkmcp.UnsubscribeParams{URI: uri})
	}
	return nil
}

// logLevels orders MCP's logging levels, most verbose first.
var logLevels = []sdkmcp.LoggingLevel{"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}

// setLevel asks the upstream for level if it is more verbose than what it
// was asked for so far.
func (m *Mirror) setLevel(ctx context.Context, level sdkmcp.LoggingLevel) error {
	up, err := m.upstream()
	if err != nil {
		return err
	}
	m.mu.Lock()
	cur := m.level
	if cur != "" && slices.Index(logLevels, level) >= slices.Index(logLevels, cur) {
		m.mu.Unlock()
		return nil
	}
	m.level = level
	m.mu.Unlock()
	return up.SetLoggingLevel(ctx, &sdkmcp.SetLoggingLevelParams{Level: level})
}

// Detach forgets the upstream session cs (if it is still the current one):
// what it offered stays listed, and calls fail with ErrUpstreamDown until
// the next Attach.
func (m *Mirror) Detach(cs *sdkmcp.ClientSession) {
	m.mu.Lock()
	if m.up == cs {
		m.up = nil
	}
	m.mu.Unlock()
}

func (m *Mirror) upstream() (*sdkmcp.ClientSession, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.up == nil {
		return nil, fmt.Errorf("%w: %s is restarting, try again shortly", ErrUpstreamDown, m.name)
	}
	return m.up, nil
}

// Counts reports how many tools, resources (with templates) and prompts the
// mirror lists now.
func (m *Mirror) Counts() (tools, resources, prompts int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tools), len(m.resources) + len(m.templates), len(m.prompts)
}

// sync re-reads the upstream's lists and brings the server in line.
func (m *Mirror) sync(ctx context.Context, cs *sdkmcp.ClientSession) error {
	caps := cs.InitializeResult().Capabilities
	if caps == nil {
		caps = &sdkmcp.ServerCapabilities{}
	}
	var errs []error
	if caps.Tools != nil {
		tools, err := collect(cs.Tools(ctx, nil))
		if err != nil {
			errs = append(errs, fmt.Errorf("list tools: %w", err))
		} else {
			m.syncTools(tools)
		}
	}
	if caps.Resources != nil {
		resources, err := collect(cs.Resources(ctx, nil))
		if err != nil {
			errs = append(errs, fmt.Errorf("list resources: %w", err))
		} else {
			m.syncResources(resources)
		}
		templates, err := collect(cs.ResourceTemplates(ctx, nil))
		if err != nil {
			errs = append(errs, fmt.Errorf("list resource templates: %w", err))
		} else {
			m.syncTemplates(templates)
		}
	}
	if caps.Prompts != nil {
		prompts, err := collect(cs.Prompts(ctx, nil))
		if err != nil {
			errs = append(errs, fmt.Errorf("list prompts: %w", err))
		} else {
			m.syncPrompts(prompts)
		}
	}
	return errors.Join(errs...)
}

func collect[T any](seq func(func(T, error) bool)) ([]T, error) {
	var out []T
	for v, err := range seq {
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// stale returns the keys of have that are not in keep.
func stale(have map[string]bool, keep map[string]bool) []string {
	var out []string
	for k := range have {
		if !keep[k] {
			out = append(out, k)
		}
	}
	return out
}

func (m *Mirror) syncTools(tools []*sdkmcp.Tool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := map[string]bool{}
	for _, t := range tools {
		if err := addToolSafely(m.server, t, m.forwardTool); err != nil {
			mirrorLog.Warnw("skip tool the shared server offers", "server", m.name, "tool", t.Name, "error", err)
			continue
		}
		keep[t.Name] = true
	}
	if gone := stale(m.tools, keep); len(gone) > 0 {
		m.server.RemoveTools(gone...)
	}
	m.tools = keep
}

// addToolSafely adds t, turning the SDK's panic on a malformed tool (an
// upstream's bad schema) into an error: one bad tool must not take the node
// down.
func addToolSafely(s *sdkmcp.Server, t *sdkmcp.Tool, h sdkmcp.ToolHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	s.AddTool(t, h)
	return nil
}

func (m *Mirror) syncResources(resources []*sdkmcp.Resource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := map[string]bool{}
	for _, r := range resources {
		m.server.AddResource(r, m.forwardRead)
		keep[r.URI] = true
	}
	if gone := stale(m.resources, keep); len(gone) > 0 {
		m.server.RemoveResources(gone...)
	}
	m.resources = keep
}

func (m *Mirror) syncTemplates(templates []*sdkmcp.ResourceTemplate) {
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := map[string]bool{}
	for _, t := range templates {
		if err := addTemplateSafely(m.server, t, m.forwardRead); err != nil {
			mirrorLog.Warnw("skip resource template the shared server offers", "server", m.name, "template", t.URITemplate, "error", err)
			continue
		}
		keep[t.URITemplate] = true
	}
	if gone := stale(m.templates, keep); len(gone) > 0 {
		m.server.RemoveResourceTemplates(gone...)
	}
	m.templates = keep
}

func addTemplateSafely(s *sdkmcp.Server, t *sdkmcp.ResourceTemplate, h sdkmcp.ResourceHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	s.AddResourceTemplate(t, h)
	return nil
}

func (m *Mirror) syncPrompts(prompts []*sdkmcp.Prompt) {
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := map[string]bool{}
	for _, p := range prompts {
		m.server.AddPrompt(p, m.forwardPrompt)
		keep[p.Name] = true
	}
	if gone := stale(m.prompts, keep); len(gone) > 0 {
		m.server.RemovePrompts(gone...)
	}
	m.prompts = keep
}

// track records a call in flight for the caller's session, so that input
// requests and progress from upstream find their way back.
func (m *Mirror) track(ss *sdkmcp.ServerSession, meta sdkmcp.Meta, token any) (sdkmcp.Meta, func()) {
	id := m.callSeq.Add(1)
	m.callers.Store(id, ss)
	m.mu.Lock()
	level := m.level
	m.mu.Unlock()
	_, hasLevel := meta[sdkmcp.MetaKeyLogLevel]
	addLevel := level != "" && !hasLevel
	if token == nil && !addLevel {
		return meta, func() { m.callers.Delete(id) }
	}
	meta = maps.Clone(meta)
	if meta == nil {
		meta = sdkmcp.Meta{}
	}
	if addLevel {
		// An upstream on 2026-07-28 reads the level of each request.
		meta[sdkmcp.MetaKeyLogLevel] = level
	}
	if token == nil {
		return meta, func() { m.callers.Delete(id) }
	}
	// Tokens are the caller's; several callers may pick the same one, so
	// upstream sees one of ours.
	up := fmt.Sprintf("mcpmesh-%d", m.nextToken.Add(1))
	m.progress.Put(up, progressRoute{session: ss, token: token})
	meta["progressToken"] = up
	return meta, func() {
		m.callers.Delete(id)
		// The client hands notifications to handlers concurrently, so the
		// last ones may be handled after the result: keep the route a while.
		m.progress.Release(up)
	}
}

func (m *Mirror) forwardTool(ctx context.Context, req *sdkmcp.CallToolRequest) (*sdkmcp.CallToolResult, error) {
	up, err := m.upstream()
	if err != nil {
		return nil, err
	}
	meta, done := m.track(req.Session, req.Params.Meta, req.Params.GetProgressToken())
	defer done()
	return up.CallTool(ctx, &sdkmcp.CallToolParams{Meta: meta, Name: req.Params.Name, Arguments: req.Params.Arguments})
}

func (m *Mirror) forwardRead(ctx context.Context, req *sdkmcp.ReadResourceRequest) (*sdkmcp.ReadResourceResult, error) {
	up, err := m.upstream()
	if err != nil {
		return nil, err
	}
	meta, done := m.track(req.Session, req.Params.Meta, req.Params.GetProgressToken())
	defer done()
	return up.ReadResource(ctx, &sdkmcp.ReadResourceParams{Meta: meta, URI: req.Params.URI})
}

func (m *Mirror) forwardPrompt(ctx context.Context, req *sdkmcp.GetPromptRequest) (*sdkmcp.GetPromptResult, error) {
	up, err := m.upstream()
	if err != nil {
		return nil, err
	}
	meta, done := m.track(req.Session, req.Params.Meta, req.Params.GetProgressToken())
	defer done()
	return up.GetPrompt(ctx, &sdkmcp.GetPromptParams{Meta: meta, Name: req.Params.Name, Arguments: req.Params.Arguments})
}
