package passthrough

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// maxFrame bounds what the scripted client reads as one message: above the
// mesh's 4 MiB limit, so that the limit tests see what the mesh sends.
const maxFrame = 16 << 20

// conn carries raw JSON-RPC messages between the scripted client and an MCP
// server: a program's stdin/stdout, or a Streamable HTTP endpoint. Every
// message the server sends, on any stream, arrives on in.
type conn interface {
	send(msg []byte) error
	in() <-chan []byte
	// sessionID of an HTTP session; "" otherwise.
	sessionID() string
	close() error
}

// stdioConn runs a program and speaks newline-delimited JSON-RPC with it.
type stdioConn struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	msgs   chan []byte
	stderr *syncBuffer
	done   chan struct{} // closed when the reader ends
	mu     sync.Mutex
}

func startStdio(t testing.TB, env []string, args ...string) *stdioConn {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if env != nil {
		cmd.Env = env
	}
	c := &stdioConn{cmd: cmd, msgs: make(chan []byte, 1024), stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	go func() {
		defer close(c.done)
		defer close(c.msgs)
		r := bufio.NewReaderSize(stdout, 64<<10)
		for {
			line, err := readLine(r, maxFrame)
			if len(bytes.TrimSpace(line)) > 0 {
				c.msgs <- line
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { c.close() })
	return c
}

// readLine reads one line of at most limit bytes (a longer one is cut).
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if len(line)+len(chunk) <= limit {
			line = append(line, chunk...)
		}
		if err != nil || !isPrefix {
			return line, err
		}
	}
}

func (c *stdioConn) send(msg []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.stdin.Write(append(append([]byte(nil), msg...), '\n'))
	return err
}

func (c *stdioConn) in() <-chan []byte { return c.msgs }
func (c *stdioConn) sessionID() string { return "" }

// close ends stdin and waits for the program to exit (killing it after 5s).
func (c *stdioConn) close() error {
	c.mu.Lock()
	c.stdin.Close()
	c.mu.Unlock()
	if c.cmd.ProcessState != nil {
		return nil
	}
	exited := make(chan error, 1)
	go func() { <-c.done; exited <- c.cmd.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		return <-exited
	}
}

// exitCode waits for the program to exit by itself (up to d) and returns its
// exit code, or -1 if it is still running.
func (c *stdioConn) exitCode(d time.Duration) int {
	select {
	case <-c.done:
	case <-time.After(d):
		return -1
	}
	exited := make(chan struct{})
	go func() { c.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
		return c.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}

// httpConn is a Streamable HTTP client written from the transport's spec:
// every message is a POST; a response is JSON or an SSE stream; with a
// session, a GET stream carries what the server sends outside a request.
type httpConn struct {
	url     string
	client  *http.Client
	version string // the Mcp-Protocol-Version header once negotiated
	msgs    chan []byte
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	session string
	getOpen bool
	// statuses records the HTTP status of every POST, in order.
	statuses []int
}

func newHTTPConn(t testing.TB, url, version string) *httpConn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &httpConn{url: url, client: &http.Client{Transport: &http.Transport{}}, version: version,
		msgs: make(chan []byte, 1024), ctx: ctx, cancel: cancel}
	t.Cleanup(func() { c.close() })
	return c
}

func (c *httpConn) in() <-chan []byte { return c.msgs }

func (c *httpConn) sessionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

func (c *httpConn) header(req *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
	}
	if c.version != "" {
		req.Header.Set("Mcp-Protocol-Version", c.version)
	}
}

// send POSTs msg; what comes back is read in the background onto in.
func (c *httpConn) send(msg []byte) error {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodPost, c.url, bytes.NewReader(msg))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	c.header(req)
	if req.Header.Get("Mcp-Protocol-Version") >= v20260728 {
		standardHeaders(req.Header, msg)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.statuses = append(c.statuses, resp.StatusCode)
	if id := resp.Header.Get("Mcp-Session-Id"); id != "" && c.session == "" {
		c.session = id
	}
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer resp.Body.Close()
		c.readBody(resp, msg)
	}()
	return nil
}

// standardHeaders sets the headers 2026-07-28 requires on a request's POST:
// Mcp-Method, and Mcp-Name for the methods that name what they act on.
func standardHeaders(h http.Header, msg []byte) {
	var env struct {
		Method string `json:"method"`
		ID     any    `json:"id"`
		Params struct {
			Name string `json:"name"`
			URI  string `json:"uri"`
		} `json:"params"`
	}
	if json.Unmarshal(msg, &env) != nil || env.Method == "" || env.ID == nil {
		return
	}
	h.Set("Mcp-Method", env.Method)
	switch env.Method {
	case "tools/call", "prompts/get":
		h.Set("Mcp-Name", env.Params.Name)
	case "resources/read":
		h.Set("Mcp-Name", env.Params.URI)
	}
}

// readBody puts the messages of one HTTP response on in. A response that is
// not MCP (an HTTP error with a text body) becomes a synthetic message
// {"httpStatus": N, "body": "..."} so that the test sees it.
func (c *httpConn) readBody(resp *http.Response, sent []byte) {
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode == http.StatusAccepted:
		io.Copy(io.Discard, resp.Body)
	case ct == "text/event-stream":
		c.readSSE(resp.Body)
	case ct == "application/json":
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxFrame))
		c.deliver(body)
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var id any
		var env struct {
			ID any `json:"id"`
		}
		if json.Unmarshal(sent, &env) == nil {
			id = env.ID
		}
		synthetic, _ := json.Marshal(map[string]any{"httpStatus": resp.StatusCode, "body": strings.TrimSpace(string(body)), "id": id})
		c.deliver(synthetic)
	}
}

func (c *httpConn) readSSE(body io.Reader) {
	r := bufio.NewReaderSize(body, 64<<10)
	var data []byte
	for {
		line, err := readLine(r, maxFrame)
		switch {
		case len(line) == 0:
			if len(data) > 0 {
				c.deliver(data)
				data = nil
			}
		case bytes.HasPrefix(line, []byte("data:")):
			d := bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, d...)
		}
		if err != nil {
			if len(data) > 0 {
				c.deliver(data)
			}
			return
		}
	}
}

func (c *httpConn) deliver(msg []byte) {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 {
		return
	}
	select {
	case c.msgs <- append([]byte(nil), msg...):
	case <-c.ctx.Done():
	}
}

// openGET opens the session's GET stream, whose messages go to in too. It
// returns the HTTP status (200 when the stream is open).
func (c *httpConn) openGET() (int, error) {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "text/event-stream")
	c.header(req)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	c.mu.Lock()
	c.getOpen = true
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer resp.Body.Close()
		c.readSSE(resp.Body)
	}()
	return resp.StatusCode, nil
}

// close DELETEs the session (if any) and stops every reader.
func (c *httpConn) close() error {
	if id := c.sessionID(); id != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, c.url, nil)
		c.header(req)
		if resp, err := c.client.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
		c.mu.Lock()
		c.session = ""
		c.mu.Unlock()
	}
	c.cancel()
	c.wg.Wait()
	c.client.CloseIdleConnections()
	return nil
}

var errNoResponse = errors.New("no response")

func describeMsg(m []byte) string {
	if len(m) > 300 {
		return fmt.Sprintf("%s… (%d bytes)", m[:300], len(m))
	}
	return string(m)
}
