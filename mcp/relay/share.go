package relay

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/owner"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/mcp/upstream"
)

// Mode says how the callers of a server shared from a program or an
// endpoint share it.
type Mode string

const (
	// Isolated gives each caller session an upstream session of its own
	// (for a program, a process of its own): what one caller does to the
	// server's state, no other sees. The default.
	Isolated Mode = "isolated"
	// Shared carries every caller session on one upstream session (see
	// Mux): for stateless servers, or state meant to be shared.
	Shared Mode = "shared"
)

// ParseMode reads a share mode as users write it ("" is Isolated).
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", Isolated:
		return Isolated, nil
	case Shared:
		return Shared, nil
	}
	return "", fmt.Errorf("share mode %q: want %q or %q", s, Isolated, Shared)
}

// ShareConfig is how a Share serves its upstream.
type ShareConfig struct {
	Mode Mode
	// Pool bounds the callers' sessions in isolated mode.
	Pool upstream.PoolConfig
	// Init is the node's own initialize: its index session's and, in shared
	// mode, the one every caller's session is carried on.
	Init MuxInit
	// Changed is told when what the upstream offers (its lists) changed.
	Changed func()
}

// Lists is what an upstream offers, as the node's index session last read
// it.
type Lists struct {
	Capabilities *sdkmcp.ServerCapabilities
	Tools        []*sdkmcp.Tool
	Resources    []*sdkmcp.Resource
	Templates    []*sdkmcp.ResourceTemplate
	Prompts      []*sdkmcp.Prompt
}

// Share is a server the node shares from a program or an endpoint, passed
// through to its callers: each caller session is relayed, frame by frame,
// to an upstream session (Open), so the caller sees the server as it is.
// The node keeps a session of its own (its index: what the server offers,
// for the node's card and status), supervised: restarted with backoff when
// it ends.
type Share struct {
	up   *upstream.Upstream
	cfg  ShareConfig
	sup  *upstream.Supervisor
	pool *upstream.Pool // isolated mode, from Start (under mu)
	// started is closed by Start.
	started chan struct{}

	ctx    context.Context // ends with Stop
	cancel context.CancelFunc
	group  owner.Group // index re-reads

	mu    sync.Mutex
	mux   *Mux // the supervised session's
	index *sdkmcp.ClientSession
	lists Lists
}

// NewShare returns the share of up. Start starts it.
func NewShare(up *upstream.Upstream, cfg ShareConfig) *Share {
	if cfg.Mode == "" {
		cfg.Mode = Isolated
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Share{up: up, cfg: cfg, ctx: ctx, cancel: cancel, started: make(chan struct{})}
	s.sup = upstream.New(up, s)
	return s
}

// Start starts the supervised session (and, in isolated mode, the pool's
// spares).
func (s *Share) Start() {
	if s.cfg.Mode == Isolated {
		pool := upstream.NewPool(s.up, s.cfg.Pool)
		s.mu.Lock()
		s.pool = pool
		s.mu.Unlock()
	}
	close(s.started)
	s.sup.Start()
}

// isolatedPool returns the pool of an isolated share, nil until Start.
func (s *Share) isolatedPool() *upstream.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool
}

// Ready waits for the outcome of the first start (see upstream.Supervisor).
func (s *Share) Ready(ctx context.Context) error { return s.sup.Ready(ctx) }

// Stop ends every session of the share and waits.
func (s *Share) Stop() {
	s.cancel()
	s.group.Stop()
	s.sup.Stop()
	if pool := s.isolatedPool(); pool != nil {
		pool.Close()
	}
	s.group.Wait()
}

// Mode returns the share's mode.
func (s *Share) Mode() Mode { return s.cfg.Mode }

// Status reports on the share.
func (s *Share) Status() upstream.ShareStatus {
	st := s.sup.Status()
	st.Mode = string(s.cfg.Mode)
	if pool := s.isolatedPool(); pool != nil {
		var lastErr string
		st.Sessions, st.Spares, lastErr = pool.Stats()
		if st.LastError == "" {
			st.LastError = lastErr
		}
	}
	return st
}

// Lists returns what the upstream offers, as last read.
func (s *Share) Lists() Lists {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lists
}

// Counts implements upstream.Sink.
func (s *Share) Counts() (tools, resources, prompts int) {
	l := s.Lists()
	return len(l.Tools), len(l.Resources) + len(l.Templates), len(l.Prompts)
}

// An Upstream is a caller's session with a share's upstream.
type Upstream struct {
	FrameConn
	// SetBusy tells the share how to know that the session has something
	// in flight, so that it is not ended as idle meanwhile.
	SetBusy func(func() bool)
}

// ErrNotRunning is what Open returns while a shared-mode share's upstream
// is down (between a program's exit and its restart).
var ErrNotRunning = errors.New("shared server is not running")

// Open opens an upstream session for a session of caller (a peer ID): one
// of its own in isolated mode (a process, for a program), one carried on
// the shared session in shared mode. Closing it ends it.
func (s *Share) Open(ctx context.Context, caller string) (*Upstream, error) {
	if s.cfg.Mode == Isolated {
		select { // a session may come between the node's adding the share and Start
		case <-s.started:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ctx.Done():
			return nil, upstream.ErrPoolClosed
		}
		l, err := s.isolatedPool().Acquire(ctx, caller)
		if err != nil {
			return nil, err
		}
		return &Upstream{FrameConn: l, SetBusy: l.SetBusy}, nil
	}
	s.mu.Lock()
	mux := s.mux
	s.mu.Unlock()
	if mux == nil {
		return nil, fmt.Errorf("share %s: %w (restarting)", s.up.Name, ErrNotRunning)
	}
	ms, err := mux.Session()
	if err != nil {
		return nil, fmt.Errorf("share %s: %w", s.up.Name, err)
	}
	return &Upstream{FrameConn: ms, SetBusy: func(func() bool) {}}, nil
}

// Serve implements upstream.Sink: it initializes the supervised session,
// opens the node's index session on it and reads what the upstream offers,
// and in shared mode makes it the session callers are carried on, until it
// ends.
func (s *Share) Serve(ctx context.Context, sess *upstream.Session, ready func()) error {
	mux, err := StartMux(ctx, s.up.Name, sess, s.cfg.Init)
	if err != nil {
		return err
	}
	ran := make(chan error, 1)
	go func() { ran <- mux.Run() }()
	defer func() {
		mux.Close()
		<-ran
	}()
	ms, err := mux.Session()
	if err != nil {
		return err
	}
	client := sdkmcp.NewClient(s.cfg.Init.ClientInfo, &sdkmcp.ClientOptions{
		Capabilities:               &sdkmcp.ClientCapabilities{},
		ToolListChangedHandler:     func(context.Context, *sdkmcp.ToolListChangedRequest) { s.reread() },
		ResourceListChangedHandler: func(context.Context, *sdkmcp.ResourceListChangedRequest) { s.reread() },
		PromptListChangedHandler:   func(context.Context, *sdkmcp.PromptListChangedRequest) { s.reread() },
	})
	cs, err := client.Connect(ctx, transport.Connected(ms), &sdkmcp.ClientSessionOptions{ProtocolVersion: s.cfg.Init.ProtocolVersion})
	if err != nil {
		return fmt.Errorf("index session: %w", err)
	}
	defer cs.Close() // ends the SDK's subscriptions/listen goroutine, see sessions.Pool
	lists, err := readLists(ctx, cs)
	if err != nil {
		return fmt.Errorf("read what the server offers: %w", err)
	}
	s.mu.Lock()
	s.index, s.lists = cs, lists
	if s.cfg.Mode == Shared {
		s.mux = mux
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.index, s.mux = nil, nil
		s.mu.Unlock()
	}()
	if s.cfg.Changed != nil {
		s.cfg.Changed()
	}
	ready()
	select {
	case err := <-ran:
		ran <- err // for the deferred wait
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reread reads the lists again after the upstream said they changed.
func (s *Share) reread() {
	s.group.Go(func() {
		s.mu.Lock()
		cs := s.index
		s.mu.Unlock()
		if cs == nil {
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		lists, err := readLists(ctx, cs)
		if err != nil {
			log.Debugw("re-read what a shared server offers", "server", s.up.Name, "error", err)
			return
		}
		s.mu.Lock()
		if s.index == cs {
			s.lists = lists
		}
		s.mu.Unlock()
		if s.cfg.Changed != nil {
			s.cfg.Changed()
		}
	})
}

// readLists lists everything the server cs is a session with offers. A
// list the server declares but does not serve (method not found) is empty.
func readLists(ctx context.Context, cs *sdkmcp.ClientSession) (Lists, error) {
	l := Lists{Capabilities: cs.InitializeResult().Capabilities}
	caps := l.Capabilities
	if caps == nil {
		caps = &sdkmcp.ServerCapabilities{}
	}
	var err error
	if caps.Tools != nil {
		if l.Tools, err = collect(cs.Tools(ctx, nil)); err != nil {
			return l, err
		}
	}
	if caps.Resources != nil {
		if l.Resources, err = collect(cs.Resources(ctx, nil)); err != nil {
			return l, err
		}
		if l.Templates, err = collect(cs.ResourceTemplates(ctx, nil)); err != nil {
			return l, err
		}
	}
	if caps.Prompts != nil {
		if l.Prompts, err = collect(cs.Prompts(ctx, nil)); err != nil {
			return l, err
		}
	}
	return l, nil
}

// collect gathers a list's pages; a list the server does not serve is
// empty.
func collect[T any](seq iter.Seq2[T, error]) ([]T, error) {
	var out []T
	for v, err := range seq {
		if err != nil {
			var rpcErr *jsonrpc.Error
			if errors.As(err, &rpcErr) && rpcErr.Code == jsonrpc.CodeMethodNotFound {
				return nil, nil
			}
			return out, err
		}
		out = append(out, v)
	}
	return out, nil
}
