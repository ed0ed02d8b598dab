// Package upstream keeps alive the MCP servers a node shares from outside
// the mesh: a stdio program it starts and restarts, or a Streamable HTTP
// endpoint it reconnects to. A [Supervisor] opens one session to the
// upstream at a time and hands it to a [Sink] (today relay.Mirror), which
// serves it to peers; when the session ends it opens the next, with
// backoff, until stopped.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

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
// can write a command as they would in a terminal (quotes, variables). The
// shell execs the program, so the node supervises the program itself.
func ShellCommand(line string) Command {
	return Command{Args: []string{"/bin/sh", "-c", "exec " + line}, Line: line}
}

// ShareStatus describes one server shared from a program.
type ShareStatus struct {
	Name      string    `json:"name"`
	Command   string    `json:"command"`
	Running   bool      `json:"running"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"lastError,omitempty"`
	Since     time.Time `json:"since"`
	Tools     int       `json:"tools"`
	Resources int       `json:"resources"`
	Prompts   int       `json:"prompts"`
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

// Open opens one session's transport to an upstream: a program started
// anew, or a remote endpoint. proc is the program, if any; done runs when
// the session has ended.
type Open func() (t sdkmcp.Transport, proc *exec.Cmd, done func())

// Program returns how to start the stdio program cmd, shared as name, and
// cmd with its defaults filled in (Stderr, Line).
func Program(name string, cmd Command) (Open, Command, error) {
	if len(cmd.Args) == 0 {
		return nil, cmd, fmt.Errorf("share %s: empty command", name)
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if cmd.Line == "" {
		cmd.Line = strings.Join(cmd.Args, " ")
	}
	open := func() (sdkmcp.Transport, *exec.Cmd, func()) {
		c := exec.Command(cmd.Args[0], cmd.Args[1:]...)
		c.Env, c.Dir = cmd.Env, cmd.Dir
		stderr := newPrefixWriter(cmd.Stderr, "["+name+"] ")
		c.Stderr = stderr
		return &sdkmcp.CommandTransport{Command: c, TerminateDuration: 2 * time.Second}, c, stderr.Flush
	}
	return open, cmd, nil
}

// Endpoint returns how to reach the Streamable HTTP server r, shared as
// name, and the Command that describes it: its URL (without query or user,
// which may hold secrets) and r's backoffs.
func Endpoint(name string, r Remote) (Open, Command, error) {
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, Command{}, fmt.Errorf("share %s: %q is not an http(s) URL", name, r.URL)
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
	open := func() (sdkmcp.Transport, *exec.Cmd, func()) {
		return &sdkmcp.StreamableClientTransport{Endpoint: r.URL, HTTPClient: client}, nil, func() {}
	}
	shown := *u
	shown.RawQuery, shown.User = "", nil
	return open, Command{Line: shown.String(), MinBackoff: r.MinBackoff, MaxBackoff: r.MaxBackoff}, nil
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

// Sink receives the sessions a Supervisor opens, one at a time.
type Sink interface {
	// Attach takes cs as the upstream's session.
	Attach(ctx context.Context, cs *sdkmcp.ClientSession) error
	// Detach forgets cs, which has ended.
	Detach(cs *sdkmcp.ClientSession)
	// Counts reports what the upstream offers, for status.
	Counts() (tools, resources, prompts int)
}

// startTimeout bounds how long a program or server may take to answer
// MCP's initialize, each time it starts.
const startTimeout = 30 * time.Second

// ErrStopped is what Ready returns for a Supervisor stopped before its
// first start.
var ErrStopped = errors.New("share stopped")

// Supervisor keeps one upstream shared: it opens a session with client,
// hands it to the sink, waits for it to end, and opens the next after a
// backoff, until Stop. Its goroutine is its own: Stop ends it and waits.
type Supervisor struct {
	name   string
	cmd    Command // Line and backoffs; Args only for programs
	open   Open
	client *sdkmcp.Client
	sink   Sink
	first  chan error // the outcome of the first start
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has ended

	mu      sync.Mutex
	status  ShareStatus
	started bool
	stopped bool
}

// New returns the supervisor of the upstream that open reaches, shared as
// name and described by cmd (Line, backoffs). It starts nothing before
// Start.
func New(name string, cmd Command, open Open, client *sdkmcp.Client, sink Sink) *Supervisor {
	if cmd.MinBackoff <= 0 {
		cmd.MinBackoff = 500 * time.Millisecond
	}
	if cmd.MaxBackoff <= 0 {
		cmd.MaxBackoff = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Supervisor{
		name: name, cmd: cmd, open: open, client: client, sink: sink,
		first: make(chan error, 1), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		status: ShareStatus{Name: name, Command: cmd.Line, Since: time.Now()},
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
	backoff := retry.Backoff(s.cmd.MinBackoff, s.cmd.MaxBackoff)
	for attempt := 0; ; attempt++ {
		started := time.Now()
		err := s.runOnce(ctx, first)
		first = nil
		if ctx.Err() != nil {
			return
		}
		// A program that ran a while was healthy: start over with short waits.
		if time.Since(started) > 2*s.cmd.MaxBackoff {
			backoff.Reset()
		}
		s.update(func(st *ShareStatus) {
			st.Running, st.PID, st.Restarts, st.Since = false, 0, attempt+1, time.Now()
			if err != nil {
				st.LastError = err.Error()
			}
		})
		wait := backoff.Delay()
		shareLog.Warnf("shared server %s exited (%v); restarting in %v", s.name, err, wait.Round(time.Millisecond))
		if !retry.Sleep(ctx, wait) {
			return
		}
	}
}

// runOnce starts the program, attaches it to the sink, and waits for it
// to end. It reports the start's outcome on first, if not nil.
func (s *Supervisor) runOnce(ctx context.Context, first chan<- error) error {
	report := func(err error) {
		if first != nil {
			first <- err
		}
	}
	t, c, done := s.open()
	defer done()
	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cs, err := s.client.Connect(startCtx, t, nil)
	if err != nil {
		if ctx.Err() == nil && startCtx.Err() != nil {
			// Not "context deadline exceeded": say what did not happen.
			hint := "is the URL an MCP Streamable HTTP endpoint?"
			if len(s.cmd.Args) > 0 {
				hint = "is it an MCP server on stdio? a first `npx -y` may still be downloading its package"
			}
			err = fmt.Errorf("no answer to MCP's initialize within %v (%s): %w", startTimeout, hint, err)
		}
		err = fmt.Errorf("start %q: %w", s.cmd.Line, err)
		report(fmt.Errorf("share %s: %w (the node keeps retrying)", s.name, err))
		return err
	}
	// Stopping the share closes the session, which ends the program.
	stopWatch := context.AfterFunc(ctx, func() { cs.Close() })
	defer stopWatch()

	pid := 0
	if c != nil && c.Process != nil {
		pid = c.Process.Pid
	}
	s.update(func(st *ShareStatus) { st.Running, st.PID, st.Since = true, pid, time.Now() })
	if err := s.sink.Attach(startCtx, cs); err != nil {
		shareLog.Warnw("read what the shared server offers", "server", s.name, "error", err)
	}
	tools, resources, prompts := s.sink.Counts()
	shareLog.Infof("sharing %s (%s, pid %d): %d tools, %d resources, %d prompts", s.name, s.cmd.Line, pid, tools, resources, prompts)
	report(nil)

	err = cs.Wait()
	cs.Close() // ends the SDK's subscriptions/listen goroutine, see sessions.Pool
	s.sink.Detach(cs)
	if err == nil && c != nil && c.ProcessState != nil && !c.ProcessState.Success() {
		err = fmt.Errorf("program %s", c.ProcessState)
	}
	if err == nil {
		err = fmt.Errorf("the session ended")
	}
	return err
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
