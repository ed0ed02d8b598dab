package upstream

import (
	"context"
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

	"github.com/mcpmesh/mcpmesh/mcp"
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
	// doubles after each quick failure. Zero means 500ms and 30s.
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

// upstream opens one session's transport to a shared server: a program
// started anew, or a remote endpoint. proc is the program, if any; done
// runs when the session has ended.
type upstream func() (t sdkmcp.Transport, proc *exec.Cmd, done func())

// programShare supervises one server shared from a program or a remote
// endpoint.
type programShare struct {
	name   string
	cmd    Command // Line and backoffs; Args only for programs
	open   upstream
	mirror *mcp.Mirror
	client *sdkmcp.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	status ShareStatus
}

// ShareCommand starts the stdio MCP server program cmd and shares its tools,
// resources and prompts under name, names unchanged. The node keeps it
// running: if it exits or fails to start, the node logs why and restarts it
// with backoff until the share ends (Unshare or Close). ShareCommand returns
// once the program is first ready or has first failed; the share stays in
// place either way.
func (n *Node) ShareCommand(ctx context.Context, name string, cmd Command) error {
	if len(cmd.Args) == 0 {
		return fmt.Errorf("share %s: empty command", name)
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
	return n.shareUpstream(ctx, name, cmd, open)
}

// ShareHTTP shares the Streamable HTTP MCP server r under name, names
// unchanged, as ShareCommand does a program: if the session is lost, the
// node reconnects with backoff.
func (n *Node) ShareHTTP(ctx context.Context, name string, r Remote) error {
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("share %s: %q is not an http(s) URL", name, r.URL)
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
	// The URL is shown in status and logs; its query may hold a secret.
	shown := *u
	shown.RawQuery, shown.User = "", nil
	return n.shareUpstream(ctx, name, Command{Line: shown.String(), MinBackoff: r.MinBackoff, MaxBackoff: r.MaxBackoff}, open)
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

// shareUpstream shares the server that open reaches, supervising it.
func (n *Node) shareUpstream(ctx context.Context, name string, cmd Command, open upstream) error {
	if cmd.MinBackoff <= 0 {
		cmd.MinBackoff = 500 * time.Millisecond
	}
	if cmd.MaxBackoff <= 0 {
		cmd.MaxBackoff = 30 * time.Second
	}
	ps := &programShare{
		name:   name,
		cmd:    cmd,
		open:   open,
		mirror: mcp.NewMirror(name, &sdkmcp.Implementation{Name: name, Version: n.cfg.version}),
		done:   make(chan struct{}),
		status: ShareStatus{Name: name, Command: cmd.Line, Since: time.Now()},
	}
	ps.client = sdkmcp.NewClient(n.implementation(), ps.mirror.ClientOptions())
	runCtx, cancel := context.WithCancel(n.ctx)
	ps.cancel = cancel
	stop := func() {
		cancel()
		<-ps.done
	}
	if err := n.share(name, ps.mirror.Server(), stop); err != nil {
		cancel()
		return err
	}
	n.mu.Lock()
	n.programs[name] = ps
	n.wg.Add(1)
	n.mu.Unlock()

	first := make(chan error, 1)
	go func() {
		defer n.wg.Done()
		defer close(ps.done)
		ps.supervise(runCtx, first)
	}()
	select {
	case err := <-first:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Programs reports on the servers shared from programs.
func (n *Node) Programs() []ShareStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]ShareStatus, 0, len(n.programs))
	for _, ps := range n.programs {
		ps.mu.Lock()
		st := ps.status
		ps.mu.Unlock()
		st.Tools, st.Resources, st.Prompts = ps.mirror.Counts()
		out = append(out, st)
	}
	return out
}

func (ps *programShare) update(f func(*ShareStatus)) {
	ps.mu.Lock()
	f(&ps.status)
	ps.mu.Unlock()
}

// supervise runs the program until ctx ends, restarting it with backoff.
// The outcome of the first start goes to first.
func (ps *programShare) supervise(ctx context.Context, first chan<- error) {
	backoff := ps.cmd.MinBackoff
	for attempt := 0; ; attempt++ {
		started := time.Now()
		err := ps.runOnce(ctx, first)
		first = nil
		if ctx.Err() != nil {
			return
		}
		// A program that ran a while was healthy: start over with short waits.
		if time.Since(started) > 2*ps.cmd.MaxBackoff {
			backoff = ps.cmd.MinBackoff
		}
		ps.update(func(s *ShareStatus) {
			s.Running, s.PID, s.Restarts, s.Since = false, 0, attempt+1, time.Now()
			if err != nil {
				s.LastError = err.Error()
			}
		})
		shareLog.Warnf("shared server %s exited (%v); restarting in %v", ps.name, err, backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, ps.cmd.MaxBackoff)
	}
}

// runOnce starts the program, attaches it to the mirror, and waits for it
// to end. It reports the start's outcome on first, if not nil.
func (ps *programShare) runOnce(ctx context.Context, first chan<- error) error {
	report := func(err error) {
		if first != nil {
			first <- err
		}
	}
	t, c, done := ps.open()
	defer done()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cs, err := ps.client.Connect(startCtx, t, nil)
	if err != nil {
		err = fmt.Errorf("start %q: %w", ps.cmd.Line, err)
		report(fmt.Errorf("share %s: %w (the node keeps retrying)", ps.name, err))
		return err
	}
	// Stopping the share closes the session, which ends the program.
	stopWatch := context.AfterFunc(ctx, func() { cs.Close() })
	defer stopWatch()

	pid := 0
	if c != nil && c.Process != nil {
		pid = c.Process.Pid
	}
	ps.update(func(s *ShareStatus) { s.Running, s.PID, s.Since = true, pid, time.Now() })
	if err := ps.mirror.Attach(startCtx, cs); err != nil {
		shareLog.Warnw("read what the shared server offers", "server", ps.name, "error", err)
	}
	tools, resources, prompts := ps.mirror.Counts()
	shareLog.Infof("sharing %s (%s, pid %d): %d tools, %d resources, %d prompts", ps.name, ps.cmd.Line, pid, tools, resources, prompts)
	report(nil)

	err = cs.Wait()
	cs.Close() // ends the SDK's subscriptions/listen goroutine, see peer.Sessions
	ps.mirror.Detach(cs)
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
