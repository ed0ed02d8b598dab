// Package upstream keeps alive the MCP servers a node shares from outside
// the mesh, a stdio program it starts or a Streamable HTTP endpoint, and
// opens sessions with them as raw frame connections ([Conn]), which the
// relay passes through as they are:
//
//   - a [Supervisor] keeps one session open (the node's own: its index of
//     what the server offers, or the one session every caller shares),
//     opening the next with backoff when it ends, and reports its status;
//   - a [Pool] gives each caller session a session of its own (a process of
//     its own, one started ahead so that the first call does not wait for
//     it), bounded per caller and in all, idle ones ended.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	logging "github.com/ipfs/go-log/v2"

	"github.com/mcpmesh/mcpmesh/internal/retry"
)

var shareLog = logging.Logger("mcpmesh/share")

// Command describes a stdio MCP server program to share.
type Command struct {
	// Args is the program and its arguments. ShellCommand builds one from a
	// command line.
	Args []string
	// Line is how the command is shown to people; empty means Args joined.
	Line string
	// Env, if not nil, is the program's environment (else the node's).
	Env []string
	// Dir is the program's working folder (else the node's).
	Dir string
	// Stderr receives the program's standard error, each line prefixed with
	// the server's name. Nil means the node's standard error.
	Stderr io.Writer
	// MinBackoff and MaxBackoff bound the wait before a restart, which
	// doubles (with jitter) after each quick failure. Zero means 500ms and
	// 30s.
	MinBackoff, MaxBackoff time.Duration
}

// ShellCommand returns a Command that runs line with /bin/sh, so that users
// can write a command as they would in a terminal (quotes, variables,
// leading NAME=value assignments for the program's environment). The shell
// execs the program, so the node supervises the program itself.
func ShellCommand(line string) Command {
	run := "exec "
	if f := strings.Fields(line); len(f) > 0 && isAssignment(f[0]) {
		// "exec VAR=x prog" would exec "VAR=x"; env sets the variables
		// the shell has parsed (quotes and all) and execs prog in turn.
		run = "exec env "
	}
	return Command{Args: []string{"/bin/sh", "-c", run + line}, Line: line}
}

// ShareStatus describes one server shared from a program or an endpoint.
type ShareStatus struct {
	Name    string `json:"name"`
	Command string `json:"command"`
	// Mode is how callers share the upstream: "isolated" (a session, and for
	// a program a process, of its own each) or "shared" (one for all).
	Mode string `json:"mode,omitempty"`
	// Running, PID, Restarts and LastError are about the node's own session
	// (its index; in shared mode, every caller's too).
	Running   bool      `json:"running"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"lastError,omitempty"`
	Since     time.Time `json:"since"`
	// StartDeadline, while the session starts, is when the node gives up
	// on this start if the program shows no more sign of life.
	StartDeadline time.Time `json:"startDeadline,omitzero"`
	// Sessions counts the callers' sessions open (isolated mode), Spares
	// the processes started ahead for the next ones.
	Sessions  int `json:"sessions"`
	Spares    int `json:"spares,omitempty"`
	Tools     int `json:"tools"`
	Resources int `json:"resources"`
	Prompts   int `json:"prompts"`
}

// Remote describes a Streamable HTTP MCP server to share.
type Remote struct {
	// URL is the server's MCP endpoint.
	URL string
	// Header is sent with every request, e.g. an Authorization bearer token.
	Header http.Header
	// MinBackoff and MaxBackoff bound the wait before reconnecting after the
	// session is lost, as for Command.
	MinBackoff, MaxBackoff time.Duration
	// HTTPClient, if not nil, makes the requests (its transport gets Header).
	HTTPClient *http.Client
}

// Upstream is a server to share: how to open a session with it, and how it
// is shown.
type Upstream struct {
	Name string
	// Line is the command line or the URL (without query or user), as shown.
	Line string
	// Open opens a new session: a program started anew, or a new HTTP
	// session (which costs nothing until its first request).
	Open func() (*Session, error)
	// Process is set for programs: a session costs a process, worth
	// starting ahead of its caller.
	Process bool
	// MinBackoff and MaxBackoff bound the wait before reopening the
	// supervised session.
	MinBackoff, MaxBackoff time.Duration
	// StartTimeout bounds how long a session may take to be ready (to
	// answer MCP's initialize) while it shows no sign of life: a program's
	// every line on standard error pushes the limit back, up to
	// MaxStartTimeout in all. Zero means DefaultStartTimeout.
	StartTimeout time.Duration
	// FirstStartTimeout, if longer, replaces StartTimeout until the first
	// start succeeds: Program sets it for launchers (npx, uvx, …) whose
	// first run may download the package, silently.
	FirstStartTimeout time.Duration
}

// Start timeouts (see Upstream.StartTimeout).
const (
	DefaultStartTimeout  = 30 * time.Second
	LauncherStartTimeout = 3 * time.Minute // a launcher's first start: see Launcher
	MaxStartTimeout      = 10 * time.Minute
)

// launchers are the programs that fetch what they run on first use.
var launchers = []string{"npx", "pnpx", "bunx", "uvx", "pipx", "uv", "docker", "podman", "deno", "go"}

// Launcher reports whether the command line runs a program that may
// download what it runs on first use (npx, uvx, docker run, …), which can
// take minutes without a word.
func Launcher(line string) bool {
	prog := ProgramOf(line)
	return prog != "" && slices.Contains(launchers, filepath.Base(prog))
}

// ProgramOf returns the program a shell command line runs: its first word
// after any NAME=value assignments, or "" if that is not a plain word (a
// variable, a quote, a shell construct).
func ProgramOf(line string) string {
	for _, w := range strings.Fields(line) {
		if isAssignment(w) {
			continue
		}
		if strings.ContainsAny(w, "=$;|&()<>'\"`\\") {
			return ""
		}
		return w
	}
	return ""
}

// isAssignment reports whether a shell word starts with NAME=.
func isAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" || (name[0] >= '0' && name[0] <= '9') {
		return false
	}
	for _, r := range name {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Program returns the upstream of the stdio program cmd, shared as name;
// maxMessageSize bounds one frame it sends (0: the default).
func Program(name string, cmd Command, maxMessageSize int) (*Upstream, error) {
	if len(cmd.Args) == 0 {
		return nil, fmt.Errorf("share %s: empty command", name)
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if cmd.Line == "" {
		cmd.Line = strings.Join(cmd.Args, " ")
	}
	stderr := newPrefixWriter(cmd.Stderr, "["+name+"] ")
	up := &Upstream{
		Name: name, Line: cmd.Line, Process: true,
		MinBackoff: cmd.MinBackoff, MaxBackoff: cmd.MaxBackoff,
		Open: func() (*Session, error) { return startProgram(name, cmd, maxMessageSize, stderr) },
	}
	if Launcher(cmd.Line) {
		up.FirstStartTimeout = LauncherStartTimeout
	}
	return up, nil
}

// Endpoint returns the upstream of the Streamable HTTP server r, shared as
// name; maxMessageSize bounds one message it sends (0: the default).
func Endpoint(name string, r Remote, maxMessageSize int) (*Upstream, error) {
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("share %s: %q is not an http(s) URL", name, r.URL)
	}
	client := &http.Client{}
	if r.HTTPClient != nil {
		c := *r.HTTPClient
		client = &c
	}
	if len(r.Header) > 0 {
		base := client.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		client.Transport = headerTransport{base: base, header: r.Header}
	}
	shown := *u
	shown.RawQuery, shown.User = "", nil
	return &Upstream{
		Name: name, Line: shown.String(), MinBackoff: r.MinBackoff, MaxBackoff: r.MaxBackoff,
		Open: func() (*Session, error) {
			return &Session{Conn: newHTTPConn(name, r.URL, client, maxMessageSize)}, nil
		},
	}, nil
}

// headerTransport adds fixed headers to every request.
type headerTransport struct {
	base   http.RoundTripper
	header http.Header
}

func (t headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for k, vs := range t.header {
		req.Header[k] = vs
	}
	return t.base.RoundTrip(req)
}

// Sink serves the sessions a Supervisor opens, one at a time.
type Sink interface {
	// Serve uses s until it ends or ctx is done, and returns why. It calls
	// ready once s has answered as an MCP server should (the start's
	// outcome); a Serve that returns without calling it failed to start.
	Serve(ctx context.Context, s *Session, ready func()) error
	// Counts reports what the upstream offers, for status.
	Counts() (tools, resources, prompts int)
}

// ErrStopped is what Ready returns for a Supervisor stopped before its
// first start.
var ErrStopped = errors.New("share stopped")

// Supervisor keeps one session with an upstream open: it opens a session,
// hands it to the sink, waits for it to end, and opens the next after a
// backoff, until Stop. Its goroutine is its own: Stop ends it and waits.
type Supervisor struct {
	up     *Upstream
	sink   Sink
	first  chan error // the outcome of the first start
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has ended

	mu      sync.Mutex
	status  ShareStatus
	started bool
	stopped bool
	wasUp   bool // a start has succeeded: FirstStartTimeout no longer applies
}

// New returns the supervisor of up, whose sessions go to sink. It starts
// nothing before Start.
func New(up *Upstream, sink Sink) *Supervisor {
	if up.MinBackoff <= 0 {
		up.MinBackoff = 500 * time.Millisecond
	}
	if up.MaxBackoff <= 0 {
		up.MaxBackoff = 30 * time.Second
	}
	if up.StartTimeout <= 0 {
		up.StartTimeout = DefaultStartTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Supervisor{
		up: up, sink: sink,
		first: make(chan error, 1), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		status: ShareStatus{Name: up.Name, Command: up.Line, Since: time.Now()},
	}
}

// Start starts the upstream and keeps it running. It does nothing after
// Stop, or a second time.
func (s *Supervisor) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return
	}
	s.started = true
	go func() {
		defer close(s.done)
		s.supervise(s.first)
	}()
}

// Ready waits for the outcome of the first start: nil once the upstream is
// first ready, else why it failed (the supervisor keeps retrying).
func (s *Supervisor) Ready(ctx context.Context) error {
	select {
	case err := <-s.first:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop ends the session (and so the program) and the supervision, and
// waits for them.
func (s *Supervisor) Stop() {
	s.mu.Lock()
	started := s.started
	s.stopped = true
	s.mu.Unlock()
	s.cancel()
	if !started {
		select {
		case s.first <- ErrStopped:
		default:
		}
		return
	}
	<-s.done
}

// Status reports on the upstream.
func (s *Supervisor) Status() ShareStatus {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	st.Tools, st.Resources, st.Prompts = s.sink.Counts()
	return st
}

func (s *Supervisor) update(f func(*ShareStatus)) {
	s.mu.Lock()
	f(&s.status)
	s.mu.Unlock()
}

// supervise runs the upstream until Stop, restarting it with backoff. The
// outcome of the first start goes to first.
func (s *Supervisor) supervise(first chan<- error) {
	ctx := s.ctx
	backoff := retry.Backoff(s.up.MinBackoff, s.up.MaxBackoff)
	for attempt := 0; ; attempt++ {
		started := time.Now()
		err := s.runOnce(ctx, first)
		first = nil
		if ctx.Err() != nil {
			return
		}
		// A program that ran a while was healthy: start over with short waits.
		if time.Since(started) > 2*s.up.MaxBackoff {
			backoff.Reset()
		}
		s.update(func(st *ShareStatus) {
			st.Running, st.PID, st.Restarts, st.Since = false, 0, attempt+1, time.Now()
			if err != nil {
				st.LastError = err.Error()
			}
		})
		wait := backoff.Delay()
		shareLog.Warnf("shared server %s exited (%v); restarting in %v", s.up.Name, err, wait.Round(time.Millisecond))
		if !retry.Sleep(ctx, wait) {
			return
		}
	}
}

// runOnce opens a session, hands it to the sink, and waits for it to end.
// It reports the start's outcome on first, if not nil.
func (s *Supervisor) runOnce(ctx context.Context, first chan<- error) error {
	var once sync.Once
	var ready atomic.Bool
	report := func(err error) {
		once.Do(func() {
			if first != nil {
				first <- err // buffered
			}
		})
	}
	sess, err := s.up.Open()
	if err != nil {
		report(fmt.Errorf("share %s: %w (the node keeps retrying)", s.up.Name, err))
		return err
	}
	defer sess.Close()
	// Running once it answers initialize: until then the share is starting
	// (what status shows), though its process runs.
	s.update(func(st *ShareStatus) { st.PID, st.Since = sess.PID, time.Now() })
	// A program that does not answer in time is given up on (and restarted).
	window := s.up.StartTimeout
	s.mu.Lock()
	if !s.wasUp {
		window = max(window, s.up.FirstStartTimeout)
	}
	s.mu.Unlock()
	startCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	began := time.Now()
	stopWatch, watched := make(chan struct{}), make(chan struct{})
	var stopWatchOnce sync.Once
	endWatch := func() { stopWatchOnce.Do(func() { close(stopWatch) }) }
	var gaveUpAfter atomic.Int64 // how long the start had taken when given up on
	go func() {
		defer close(watched)
		s.watchStart(sess, began, window, stopWatch, func() {
			gaveUpAfter.Store(int64(time.Since(began)))
			cancel()
		})
	}()
	defer func() { endWatch(); <-watched }()
	err = s.sink.Serve(startCtx, sess, func() {
		ready.Store(true)
		endWatch()
		s.mu.Lock()
		s.wasUp = true
		s.status.Running, s.status.StartDeadline = true, time.Time{}
		s.mu.Unlock()
		tools, resources, prompts := s.sink.Counts()
		shareLog.Infof("sharing %s (%s, pid %d): %d tools, %d resources, %d prompts", s.up.Name, s.up.Line, sess.PID, tools, resources, prompts)
		report(nil)
	})
	endWatch()
	sess.Close()
	if ctx.Err() == nil && (err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.Canceled)) {
		err = exitError(sess)
	}
	if !ready.Load() {
		if err == nil {
			err = errors.New("no answer")
		}
		if ctx.Err() == nil && startCtx.Err() != nil {
			// Not "context canceled": say what did not happen.
			hint := "is the URL an MCP Streamable HTTP endpoint?"
			if s.up.Process {
				hint = "is it an MCP server on stdio?"
				if s.up.FirstStartTimeout > 0 {
					hint += " a launcher's first run (npx -y, uvx) may still be downloading its package"
				}
			}
			err = fmt.Errorf("no answer to MCP's initialize within %v (%v without a sign of life; %s): %w",
				time.Duration(gaveUpAfter.Load()).Round(time.Second), window, hint, err)
		}
		err = fmt.Errorf("start %q: %w", s.up.Line, err)
		report(fmt.Errorf("share %s: %w (the node keeps retrying)", s.up.Name, err))
	}
	return err
}

// watchStart calls cancel once sess has shown no sign of life (a line on
// standard error) for window, or has taken MaxStartTimeout in all, unless
// stop is closed first (the session is ready, or has ended). The deadline
// it waits for is in the share's status.
func (s *Supervisor) watchStart(sess *Session, began time.Time, window time.Duration, stop <-chan struct{}, cancel func()) {
	defer s.update(func(st *ShareStatus) { st.StartDeadline = time.Time{} })
	limit := began.Add(max(MaxStartTimeout, window))
	for {
		deadline := began.Add(window)
		if last := sess.lastActivity(); last.After(began) {
			deadline = last.Add(window)
		}
		if deadline.After(limit) {
			deadline = limit
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			cancel()
			return
		}
		s.update(func(st *ShareStatus) { st.StartDeadline = deadline })
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return
		}
	}
}

// prefixWriter writes whole lines, each with a prefix.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func newPrefixWriter(w io.Writer, prefix string) *prefixWriter {
	return &prefixWriter{w: w, prefix: prefix}
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		if _, err := io.WriteString(p.w, p.prefix+string(p.buf[:i+1])); err != nil {
			return len(b), nil // a broken log sink must not break the program
		}
		p.buf = p.buf[i+1:]
	}
	if len(p.buf) > 64<<10 { // a very long line without newline: flush it
		io.WriteString(p.w, p.prefix+string(p.buf)+"\n")
		p.buf = p.buf[:0]
	}
	return len(b), nil
}

// Flush writes a last partial line.
func (p *prefixWriter) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		io.WriteString(p.w, p.prefix+string(p.buf)+"\n")
		p.buf = nil
	}
}
