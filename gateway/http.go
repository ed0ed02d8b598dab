package gateway

// The daemon's Streamable HTTP endpoint: transparent sessions relayed to a
// peer's server, and the mesh-mode server.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/loopback"
	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node/iface"
)

// log is declared in log.go, shared by the package.

// HTTPOptions configures the HTTP gateway.
type HTTPOptions struct {
	// MeshServer, if not nil, is served at /mcp (mesh mode) with the SDK's
	// Streamable HTTP handler, on every protocol version: with sessions
	// before 2026-07-28, without from it on. Without it /mcp answers 404.
	MeshServer *sdkmcp.Server
	// SessionTimeout closes a transparent session that has seen no request
	// for this long (its stream to the peer with it). Zero means 30 minutes;
	// negative, never.
	SessionTimeout time.Duration
	// MaxRequestBodyBytes bounds one POST body, on every path; zero means
	// 4 MiB, the mesh's default message limit. A body over it is answered
	// with a JSON-RPC error naming the limit (HTTP 413).
	MaxRequestBodyBytes int64
	// EventStore, if set, lets clients resume a transparent session's SSE
	// streams (Last-Event-ID), as with the SDK's own handler.
	EventStore sdkmcp.EventStore
}

// HTTPHandler serves the gateway's Streamable HTTP endpoints:
//
//   - /mcp/PEER/SERVER: transparent mode, the server SERVER that peer PEER
//     shares, exactly, relayed message by message;
//   - /mcp: mesh mode (HTTPOptions.MeshServer).
//
// Every request whose Host is not a loopback name or address, or whose
// Origin (when present) is not a loopback origin, is refused with 403
// (DNS-rebinding protection). Close ends every transparent session.
type HTTPHandler struct {
	n                   iface.Node
	opts                HTTPOptions
	mesh, meshStateless http.Handler // the SDK's handlers: sessions (before 2026-07-28), none (from it on)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*session
	closed   bool
}

// NewHTTPHandler returns the gateway's HTTP handler for n.
func NewHTTPHandler(n iface.Node, opts HTTPOptions) *HTTPHandler {
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = 30 * time.Minute
	}
	if opts.MaxRequestBodyBytes <= 0 {
		opts.MaxRequestBodyBytes = sdkmcp.DefaultMaxRequestBodyBytes
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &HTTPHandler{n: n, opts: opts, ctx: ctx, cancel: cancel, sessions: map[string]*session{}}
	if opts.MeshServer != nil {
		srv := opts.MeshServer
		serve := func(*http.Request) *sdkmcp.Server { return srv }
		h.mesh = sdkmcp.NewStreamableHTTPHandler(serve, &sdkmcp.StreamableHTTPOptions{MaxRequestBodyBytes: opts.MaxRequestBodyBytes})
		// The SDK serves 2026-07-28 (no sessions) only from a stateless
		// handler, and answers server/discover without it from a stateful
		// one: each version goes to the handler that speaks it.
		h.meshStateless = sdkmcp.NewStreamableHTTPHandler(serve, &sdkmcp.StreamableHTTPOptions{Stateless: true, MaxRequestBodyBytes: opts.MaxRequestBodyBytes})
	}
	return h
}

// Close ends every transparent session and waits for their relays.
func (h *HTTPHandler) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	return nil
}

// Sessions returns the number of open transparent sessions.
func (h *HTTPHandler) Sessions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := loopback.CheckRequest(r); err != nil {
		http.Error(w, "Forbidden: "+err.Error(), http.StatusForbidden)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/mcp")
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Every message is bounded on every path, and one over the limit is
	// answered as JSON-RPC, naming the limit, whatever the protocol version.
	var body []byte
	if r.Method == http.MethodPost {
		if body, ok = h.readBody(w, r); !ok {
			return
		}
	}
	if rest == "" || rest == "/" {
		if h.mesh == nil {
			http.Error(w, "mesh mode is not served here; use /mcp/PEER/SERVER", http.StatusNotFound)
			return
		}
		if sessionless(r) {
			h.meshStateless.ServeHTTP(w, r)
			return
		}
		h.mesh.ServeHTTP(w, r)
		return
	}
	ps, server, ok := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	p, err := lpeer.Decode(ps)
	if !ok || err != nil || transport.ValidateServerName(server) != nil {
		http.Error(w, "not found: want /mcp/PEER/SERVER (PEER a peer ID, SERVER a server name)", http.StatusNotFound)
		return
	}
	h.serveTransparent(w, r, p, server, body)
}

// readBody reads a POST's body, bounded by MaxRequestBodyBytes, and puts it
// back for the handlers. A body over the limit is answered with a JSON-RPC
// error naming the limit (for the request the body starts with, when its
// head says which): ok is false then.
func (h *HTTPHandler) readBody(w http.ResponseWriter, r *http.Request) (body []byte, ok bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxRequestBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			http.Error(w, "failed to read body", http.StatusBadRequest)
			return nil, false
		}
		id, method := head(body)
		what := "a request"
		if method != "" {
			what = "a " + method + " request"
		}
		lerr := &transport.LimitError{Message: what, Limit: int(mbe.Limit), Request: true}
		writeJSONRPCError(w, http.StatusRequestEntityTooLarge, id, lerr.JSONRPC())
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, true
}

const (
	headerSession  = "Mcp-Session-Id"
	headerProtocol = "Mcp-Protocol-Version"
	// statelessFrom is the first protocol version without sessions.
	statelessFrom = "2026-07-28"
)

// session is one transparent MCP session: an HTTP session on one side, a
// stream to the peer's server on the other.
type session struct {
	id        string
	peer      lpeer.ID
	server    string
	transport *sdkmcp.StreamableServerTransport
	conn      *relay.RoutedConn
	sent      *relay.CountingConn // the peer's side
	end       context.CancelFunc
	timer     *time.Timer // idle timeout, nil without one
}

func (h *HTTPHandler) serveTransparent(w http.ResponseWriter, r *http.Request, p lpeer.ID, server string, body []byte) {
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	version := r.Header.Get(headerProtocol)
	if version != "" && version < statelessFrom && !knownVersion(version) {
		http.Error(w, fmt.Sprintf("Bad Request: Unsupported protocol version (supported versions: %s)",
			strings.Join(sdkmcp.SupportedProtocolVersions(), ",")), http.StatusBadRequest)
		return
	}
	// The SDK's transport reads the protocol version header from the
	// request context, where its own handler puts it.
	r = r.WithContext(sdkcompat.RequestContext(r.Context(), version, jsonrpc.ID{}))

	if id := r.Header.Get(headerSession); id != "" {
		h.mu.Lock()
		s := h.sessions[id]
		h.mu.Unlock()
		if s == nil || s.peer != p || s.server != server {
			http.Error(w, "session not found", http.StatusNotFound)
			return
		}
		h.touch(s)
		switch r.Method {
		case http.MethodDelete:
			h.endSession(s)
			w.WriteHeader(http.StatusNoContent)
		case http.MethodGet:
			if !accepts(r, "text/event-stream") {
				http.Error(w, "Accept must contain 'text/event-stream' for GET requests", http.StatusBadRequest)
				return
			}
			s.transport.ServeHTTP(w, r)
		default:
			s.transport.ServeHTTP(w, r)
		}
		return
	}

	if r.Method != http.MethodPost {
		if version >= statelessFrom {
			w.Header().Set("Allow", "POST")
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		http.Error(w, fmt.Sprintf("Bad Request: %s requires an %s header", r.Method, headerSession), http.StatusBadRequest)
		return
	}
	// A POST without a session: a new session for an initialize, else a
	// session for this request alone (stateless, or a request that comes
	// before any session, such as a ping).
	first, isInit, count := peekRequest(body)
	stateless := version >= statelessFrom
	persistent := isInit && !stateless

	t := &sdkmcp.StreamableServerTransport{Stateless: stateless, EventStore: h.opts.EventStore}
	if persistent {
		t.SessionID = crand.Text()
	}
	s, err := h.open(r.Context(), t, p, server)
	if err != nil {
		// The peer cannot be reached: answer the request itself, so that
		// the client shows why.
		log.Debugw("transparent session", "peer", p, "server", server, "error", err)
		writeJSONRPCError(w, http.StatusBadGateway, first, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()})
		return
	}
	if !persistent {
		t.ServeHTTP(w, r)
		// A body of notifications alone is answered (202) before the relay
		// has passed it on: let it finish before the session ends.
		s.sent.Wait(count, 2*time.Second)
		h.endSession(s)
		return
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.endSession(s)
		http.Error(w, "gateway closed", http.StatusServiceUnavailable)
		return
	}
	h.sessions[s.id] = s
	if h.opts.SessionTimeout > 0 {
		s.timer = time.AfterFunc(h.opts.SessionTimeout, func() { h.endSession(s) })
	}
	h.mu.Unlock()
	t.ServeHTTP(w, r)
}

// open connects a new session: the HTTP transport t on one side, a new
// stream to server on p on the other, relayed by a Pump until either ends.
func (h *HTTPHandler) open(ctx context.Context, t *sdkmcp.StreamableServerTransport, p lpeer.ID, server string) (*session, error) {
	up, err := h.n.DialServer(ctx, p, server)
	if err != nil {
		return nil, err
	}
	down, err := t.Connect(h.ctx)
	if err != nil {
		up.Close()
		return nil, err
	}
	sent := relay.NewCountingConn(up)
	rc := relay.NewRoutedConn(down, up)
	pctx, end := context.WithCancel(h.ctx)
	s := &session{id: t.SessionID, peer: p, server: server, transport: t, conn: rc, sent: sent, end: end}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		err := Relay(pctx, rc, sent, p.String()+"/"+server)
		log.Debugw("transparent session ended", "session", s.id, "peer", p, "server", server, "error", err)
		h.forget(s)
	}()
	return s, nil
}

// endSession ends s: its Pump closes both sides.
func (h *HTTPHandler) endSession(s *session) {
	h.forget(s)
	s.end()
}

func (h *HTTPHandler) forget(s *session) {
	h.mu.Lock()
	if s.id != "" && h.sessions[s.id] == s {
		delete(h.sessions, s.id)
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	h.mu.Unlock()
}

func (h *HTTPHandler) touch(s *session) {
	h.mu.Lock()
	if s.timer != nil {
		s.timer.Reset(h.opts.SessionTimeout)
	}
	h.mu.Unlock()
}

// sessionless reports whether a request to mesh mode speaks 2026-07-28 or
// later (no sessions), as its Mcp-Protocol-Version header says: every
// request of that version carries it, server/discover included.
func sessionless(r *http.Request) bool {
	return r.Header.Get(headerProtocol) >= statelessFrom
}

func knownVersion(v string) bool {
	for _, s := range sdkmcp.SupportedProtocolVersions() {
		if s == v {
			return true
		}
	}
	return false
}

func accepts(r *http.Request, media string) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			base, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			base = strings.ToLower(strings.TrimSpace(base))
			if base == media || base == "*/*" || base == strings.Split(media, "/")[0]+"/*" {
				return true
			}
		}
	}
	return false
}

// peekRequest returns the ID of the first request in a POST body (for an
// error answer), whether the body holds an initialize, and how many
// messages it holds.
func peekRequest(body []byte) (jsonrpc.ID, bool, int) {
	var one struct {
		ID     any    `json:"id"`
		Method string `json:"method"`
	}
	var many []struct {
		ID     any    `json:"id"`
		Method string `json:"method"`
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if json.Unmarshal(trimmed, &many) != nil || len(many) == 0 {
			return jsonrpc.ID{}, false, 0
		}
		one = many[0]
	} else if json.Unmarshal(trimmed, &one) != nil {
		return jsonrpc.ID{}, false, 0
	}
	id, _ := jsonrpc.MakeID(one.ID)
	init := one.Method == "initialize"
	for _, m := range many {
		init = init || m.Method == "initialize"
	}
	return id, init, max(len(many), 1)
}

// writeJSONRPCError answers a POST with a JSON-RPC error for request id,
// or with "id": null when the request's ID could not be read, as JSON-RPC
// asks.
func writeJSONRPCError(w http.ResponseWriter, status int, id jsonrpc.ID, e *jsonrpc.Error) {
	var data []byte
	var err error
	if id.IsValid() {
		data, err = jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: e})
	} else {
		data, err = json.Marshal(struct {
			JSONRPC string         `json:"jsonrpc"`
			ID      any            `json:"id"`
			Error   *jsonrpc.Error `json:"error"`
		}{"2.0", nil, e})
	}
	if err != nil {
		http.Error(w, e.Message, status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(data)
}

// head reads the ID and method of the first message of a body that may be
// cut short (read up to a limit), without reading the rest: "id" and
// "method" may come in any order, and after params.
func head(body []byte) (id jsonrpc.ID, method string) {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err == nil && tok == json.Delim('[') { // a batch: its first message
		tok, err = dec.Token()
	}
	if err != nil || tok != json.Delim('{') {
		return id, ""
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return id, method
		}
		switch key {
		case "id":
			var v any
			if dec.Decode(&v) != nil {
				return id, method
			}
			id, _ = jsonrpc.MakeID(v)
		case "method":
			if dec.Decode(&method) != nil {
				return id, ""
			}
		default:
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return id, method
			}
		}
	}
	return id, method
}
