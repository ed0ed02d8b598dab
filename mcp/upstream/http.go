package upstream

// One MCP session with a Streamable HTTP server, frame by frame. The SDK's
// client transport cannot serve a passthrough: it starts the session's GET
// stream and sets the protocol version header only when its own client
// session tells it (an unexported hook), and it decodes every message. This
// client posts each frame as it is and reads what comes back as it comes.

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
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// The Streamable HTTP headers (MCP 2025-11-25 and 2026-07-28).
const (
	headerSession   = "Mcp-Session-Id"
	headerVersion   = "Mcp-Protocol-Version"
	headerMethod    = "Mcp-Method"
	headerName      = "Mcp-Name"
	headerLastEvent = "Last-Event-ID"
	// metaVersion is where a 2026-07-28 request names its version.
	metaVersion = "io.modelcontextprotocol/protocolVersion"
)

// httpConn is one session with a Streamable HTTP MCP server: each frame the
// client side writes is POSTed as it is (each in its own request, so a slow
// answer holds nothing else); the answers (a JSON body, or an SSE stream
// per POST), and what the server sends on the session's GET stream, are
// read as frames. It keeps the session's ID and protocol version from the
// initialize exchange that passes through it, and ends the session with a
// DELETE on Close.
type httpConn struct {
	url    string
	client *http.Client
	name   string // the share, for errors
	limit  int

	ctx    context.Context // ends every request of the session
	cancel context.CancelFunc
	wg     sync.WaitGroup
	in     chan []byte   // frames from the server
	failed chan struct{} // closed once the session is lost

	mu        sync.Mutex
	session   string // Mcp-Session-Id, once the server gave one
	version   string // the protocol version initialize settled on
	getOpen   bool   // the GET stream was started
	failure   error
	closeOnce sync.Once
}

func newHTTPConn(name, url string, client *http.Client, limit int) *httpConn {
	if limit <= 0 {
		limit = transport.DefaultMaxMessageSize
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &httpConn{url: url, client: client, name: name, limit: limit, ctx: ctx, cancel: cancel,
		in: make(chan []byte, 64), failed: make(chan struct{})}
}

// ReadFrame returns the next frame from the server.
func (c *httpConn) ReadFrame() ([]byte, error) {
	select {
	case f := <-c.in:
		return f, nil
	case <-c.failed:
		select { // what came before the failure first
		case f := <-c.in:
			return f, nil
		default:
		}
		return nil, c.failure
	}
}

// fail ends the session with err (the first failure wins).
func (c *httpConn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failure == nil {
		c.failure = err
		close(c.failed)
	}
}

// deliver hands a frame from the server to ReadFrame.
func (c *httpConn) deliver(frame []byte) bool {
	select {
	case c.in <- frame:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// answer delivers a JSON-RPC error as the answer to request id.
func (c *httpConn) answer(id jsonrpc.ID, code int64, msg string) {
	if !id.IsValid() {
		return
	}
	frame, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: code, Message: msg}})
	if err == nil {
		c.deliver(frame)
	}
}

// WriteFrame posts frame to the server; what it answers comes back through
// ReadFrame.
func (c *httpConn) WriteFrame(frame []byte) error {
	select {
	case <-c.failed:
		return c.failure
	default:
	}
	msg, err := sdkcompat.DecodeMessage(frame)
	if err != nil {
		return fmt.Errorf("share %s: a frame for the server does not decode: %w", c.name, err)
	}
	body := bytes.Clone(frame)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.post(msg, body)
	}()
	return nil
}

// post sends one message and reads what answers it.
func (c *httpConn) post(msg jsonrpc.Message, body []byte) {
	req, _ := msg.(*jsonrpc.Request)
	var id jsonrpc.ID
	if req != nil {
		id = req.ID
	}
	hreq, err := http.NewRequestWithContext(c.ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		c.answer(id, jsonrpc.CodeInternalError, err.Error())
		return
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json, text/event-stream")
	c.headers(hreq.Header, req)
	resp, err := c.client.Do(hreq)
	if err != nil {
		if c.ctx.Err() == nil {
			c.answer(id, jsonrpc.CodeInternalError, fmt.Sprintf("share %s: %v", c.name, err))
		}
		return
	}
	defer resp.Body.Close()
	if sid := resp.Header.Get(headerSession); sid != "" {
		c.mu.Lock()
		if c.session == "" {
			c.session = sid
		}
		c.mu.Unlock()
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && c.sessionID() != "":
		err := fmt.Errorf("share %s: the server no longer knows the session (HTTP 404)", c.name)
		c.answer(id, jsonrpc.CodeInternalError, err.Error())
		c.fail(err)
		return
	case resp.StatusCode >= 300:
		c.httpError(id, resp)
		return
	case req == nil || !req.IsCall():
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if req != nil && req.Method == "notifications/initialized" {
			c.startGET()
		}
		return
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		data, err := io.ReadAll(io.LimitReader(resp.Body, int64(c.limit)+1))
		switch {
		case err != nil:
			c.answer(id, jsonrpc.CodeInternalError, fmt.Sprintf("share %s: reading the answer: %v", c.name, err))
		case len(data) > c.limit:
			c.tooLarge(id)
		default:
			c.received(req, data)
		}
	case "text/event-stream":
		answered, lastEvent := c.readSSE(resp.Body, req)
		for attempt := 0; !answered && lastEvent != "" && attempt < 5 && c.ctx.Err() == nil; attempt++ {
			// The server ended the stream before its answer but said where
			// it was (SEP-1699): resume it.
			answered, lastEvent = c.resume(req, lastEvent)
		}
		if !answered && c.ctx.Err() == nil {
			c.answer(id, jsonrpc.CodeInternalError, fmt.Sprintf("share %s: the server's stream ended before its answer", c.name))
		}
	default:
		c.answer(id, jsonrpc.CodeInternalError, fmt.Sprintf("share %s: the server answered with content type %q", c.name, ct))
	}
}

func (c *httpConn) sessionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// headers sets the session's headers on a request for req (nil: a response
// to the server).
func (c *httpConn) headers(h http.Header, req *jsonrpc.Request) {
	c.mu.Lock()
	session, version := c.session, c.version
	c.mu.Unlock()
	if session != "" {
		h.Set(headerSession, session)
	}
	if req != nil {
		if v := requestVersion(req.Params); v != "" {
			version = v
		}
	}
	if version != "" {
		h.Set(headerVersion, version)
	}
	if req != nil && version >= "2026-07-28" {
		h.Set(headerMethod, req.Method)
		if name, ok := requestName(req.Method, req.Params); ok {
			h.Set(headerName, name)
		}
	}
}

// requestVersion reads a 2026-07-28 request's version from its _meta.
func requestVersion(params json.RawMessage) string {
	if !bytes.Contains(params, []byte(metaVersion)) {
		return ""
	}
	var p struct {
		Meta map[string]json.RawMessage `json:"_meta"`
	}
	if _, err := segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return ""
	}
	var v string
	segjson.Unmarshal(p.Meta[metaVersion], &v)
	return v
}

// requestName is what Mcp-Name carries for the methods that name what they
// act on.
func requestName(method string, params json.RawMessage) (string, bool) {
	var p struct {
		Name string `json:"name"`
		URI  string `json:"uri"`
	}
	switch method {
	case "tools/call", "prompts/get":
		if _, err := segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields); err == nil {
			return p.Name, true
		}
	case "resources/read":
		if _, err := segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields); err == nil {
			return p.URI, true
		}
	}
	return "", false
}

// received delivers a message from the server that answers req, after
// noting the protocol version an initialize settled on.
func (c *httpConn) received(req *jsonrpc.Request, data []byte) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return
	}
	if req != nil && req.Method == "initialize" && bytes.Contains(data, []byte(`"protocolVersion"`)) {
		var r struct {
			Result struct {
				ProtocolVersion string `json:"protocolVersion"`
			} `json:"result"`
		}
		if _, err := segjson.Parse(data, &r, segjson.DontMatchCaseInsensitiveStructFields); err == nil && r.Result.ProtocolVersion != "" {
			c.mu.Lock()
			c.version = r.Result.ProtocolVersion
			c.mu.Unlock()
		}
	}
	c.deliver(data)
}

// httpError answers request id with what an HTTP error says: the JSON-RPC
// error in its body, if it holds one, else the status and the body's first
// line.
func (c *httpConn) httpError(id jsonrpc.ID, resp *http.Response) {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if msg, err := sdkcompat.DecodeMessage(bytes.TrimSpace(data)); err == nil {
		if r, ok := msg.(*jsonrpc.Response); ok && r.ID == id {
			c.deliver(bytes.TrimSpace(data))
			return
		}
	}
	text, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	c.answer(id, jsonrpc.CodeInternalError, fmt.Sprintf("share %s: HTTP %d from the server: %s", c.name, resp.StatusCode, text))
}

func (c *httpConn) tooLarge(id jsonrpc.ID) {
	c.answer(id, transport.CodeMessageTooLarge, fmt.Sprintf("the answer is over the message size limit of %s (%d bytes) on the way from %s",
		transport.SizeText(c.limit), c.limit, c.name))
}

// readSSE delivers the events of an SSE stream until it ends. It reports
// whether the answer to req came, and the last event ID the server gave.
func (c *httpConn) readSSE(body io.Reader, req *jsonrpc.Request) (answered bool, lastEvent string) {
	r := bufio.NewReaderSize(body, 16<<10)
	var data []byte
	over := false
	for {
		line, err := readLine(r, c.limit+64)
		switch {
		case len(line) == 0 && err == nil: // the end of an event
			if over {
				over = false
				if req != nil && !answered {
					c.tooLarge(req.ID)
					answered = true
				}
			} else if len(data) > 0 {
				if req != nil && answers(data, req.ID) {
					answered = true
				}
				c.received(req, data)
			}
			data = nil
		case bytes.HasPrefix(line, []byte("data:")):
			d := bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))
			if len(data)+len(d) > c.limit || over {
				over, data = true, nil
				continue
			}
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, d...)
		case bytes.HasPrefix(line, []byte("id:")):
			lastEvent = strings.TrimSpace(string(bytes.TrimPrefix(line, []byte("id:"))))
		}
		if err != nil {
			return answered, lastEvent
		}
	}
}

// answers reports whether frame is the answer to id.
func answers(frame []byte, id jsonrpc.ID) bool {
	msg, err := sdkcompat.DecodeMessage(frame)
	if err != nil {
		return false
	}
	r, ok := msg.(*jsonrpc.Response)
	return ok && r.ID == id
}

// readLine reads one line without its end (\n or \r\n); a line longer than
// limit is cut there (the rest dropped).
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) <= limit {
			line = append(line, chunk...)
		} else if len(line) < limit {
			line = append(line, chunk[:limit-len(line)]...)
		}
		if err == nil || !errors.Is(err, bufio.ErrBufferFull) {
			line = bytes.TrimRight(line, "\r\n")
			return line, err
		}
	}
}

// resume reopens the stream of req's answer after lastEvent, with a GET.
func (c *httpConn) resume(req *jsonrpc.Request, lastEvent string) (bool, string) {
	hreq, err := http.NewRequestWithContext(c.ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return false, ""
	}
	hreq.Header.Set("Accept", "text/event-stream")
	hreq.Header.Set(headerLastEvent, lastEvent)
	c.headers(hreq.Header, nil)
	resp, err := c.client.Do(hreq)
	if err != nil {
		return false, ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, ""
	}
	return c.readSSE(resp.Body, req)
}

// getRetry bounds how often the GET stream is reopened after it ends.
const getRetry = time.Second

// startGET opens the session's GET stream once, for what the server sends
// outside any request (list changes, resource updates, its own requests),
// and keeps it open while the session lasts. A server without one (405) is
// left alone. 2026-07-28 sessions have none.
func (c *httpConn) startGET() {
	c.mu.Lock()
	if c.getOpen || c.version >= "2026-07-28" {
		c.mu.Unlock()
		return
	}
	c.getOpen = true
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		lastEvent := ""
		for c.ctx.Err() == nil {
			hreq, err := http.NewRequestWithContext(c.ctx, http.MethodGet, c.url, nil)
			if err != nil {
				return
			}
			hreq.Header.Set("Accept", "text/event-stream")
			if lastEvent != "" {
				hreq.Header.Set(headerLastEvent, lastEvent)
			}
			c.headers(hreq.Header, nil)
			resp, err := c.client.Do(hreq)
			if err == nil {
				ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
				switch {
				case resp.StatusCode == http.StatusNotFound:
					resp.Body.Close()
					c.fail(fmt.Errorf("share %s: the server no longer knows the session (HTTP 404)", c.name))
					return
				case resp.StatusCode != http.StatusOK || ct != "text/event-stream":
					resp.Body.Close()
					return // no GET stream on this server
				}
				_, last := c.readSSE(resp.Body, nil)
				resp.Body.Close()
				if last != "" {
					lastEvent = last
				}
			}
			t := time.NewTimer(getRetry)
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
}

// Close ends the session: a DELETE tells the server (when it gave the
// session an ID), and every request of it stops.
func (c *httpConn) Close() error {
	c.closeOnce.Do(func() {
		if sid := c.sessionID(); sid != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.url, nil); err == nil {
				c.headers(req.Header, nil)
				if resp, err := c.client.Do(req); err == nil {
					resp.Body.Close()
				}
			}
			cancel()
		}
		c.cancel()
		c.fail(io.EOF)
		c.wg.Wait()
	})
	return nil
}
