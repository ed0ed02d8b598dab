package control

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	logging "github.com/ipfs/go-log/v2"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/events/trigger"
	"github.com/mcpmesh/mcpmesh/internal/loopback"
	"github.com/mcpmesh/mcpmesh/internal/owner"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/tasks"
)

var log = logging.Logger("mcpmesh/control")

// maxBody bounds a request body: tool arguments are the only large part.
const maxBody = 8 << 20

// Server serves a node's control API.
type Server struct {
	node  *node.Node
	home  string
	token string
	ln    net.Listener
	srv   *http.Server
	done  chan error

	ctx    context.Context // ends on Close: host sessions taken over from HTTP end too
	cancel context.CancelFunc
	group  owner.Group // host sessions (POST /v1/mcp), which Shutdown does not track

	triggers atomic.Pointer[trigger.Engine] // see events.go

	closeOnce sync.Once
	closeErr  error

	console   atomic.Pointer[string] // the web console's login URL, if any
	daemon    atomic.Pointer[Daemon] // what the command running the node says of it (status.go)
	names     names                  // peers' card names (names.go)
	questions questions              // open questions of streamed calls (questions.go)
	reload    reloader               // POST /v1/config/reload (reload.go)
	pins      pinSessions            // what became of host sessions' pins (pins.go)
	pid       int
}

// Listen starts the control API of n on addr (a loopback address; port 0
// picks a free one) and writes the API file into home.
func Listen(n *node.Node, home, addr string) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("control address %q: %w", addr, err)
	}
	if !loopback.Host(host) {
		return nil, fmt.Errorf("control address %q: must be a loopback address (127.0.0.1 or ::1)", addr)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for control API on %s: %w", addr, err)
	}
	s := &Server{node: n, home: home, token: hex.EncodeToString(tok), ln: ln, done: make(chan error, 1), pid: os.Getpid()}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.srv = &http.Server{Handler: s.routes()}
	if err := s.writeEndpoint(); err != nil {
		ln.Close()
		return nil, err
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// SetConsoleURL makes GET /v1/console answer with the web console's login
// URL, for 'mcpmesh ui' (see console.go).
func (s *Server) SetConsoleURL(url string) { s.console.Store(&url) }

// Addr returns the address the API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

func (s *Server) writeEndpoint() error {
	data, err := json.Marshal(Endpoint{Addr: s.Addr(), Token: s.token, PID: s.pid})
	if err != nil {
		return err
	}
	path := filepath.Join(s.home, APIFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Close stops the API and removes the API file (if it is still ours).
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		path := filepath.Join(s.home, APIFile)
		if ep, err := readEndpoint(s.home); err == nil && ep.Token == s.token {
			os.Remove(path)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2e9)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
			err = serveErr
		}
		s.group.Stop()
		s.cancel()
		s.group.Wait()
		s.closeErr = err
	})
	return s.closeErr
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/id", s.handleID)
	mux.HandleFunc("GET /v1/peers", s.handlePeers)
	mux.HandleFunc("GET /v1/status", s.handleStatus) // see status.go
	mux.HandleFunc("POST /v1/connect", s.handleConnect)
	mux.HandleFunc("POST /v1/tools", s.handleTools)
	mux.HandleFunc("POST /v1/call", s.handleCall)
	mux.HandleFunc("POST /v1/call/answer", s.handleAnswer) // see questions.go
	mux.HandleFunc("POST /v1/find", s.handleFind)
	mux.HandleFunc("POST /v1/card", s.handleCard)
	mux.HandleFunc("POST /v1/mcp", s.handleGateway)
	mux.HandleFunc("GET /v1/mcp/{session}/pins", s.handlePins) // see pins.go
	s.taskRoutes(mux)                                          // see tasks.go
	s.auditRoutes(mux)                                         // see audit.go
	s.policyRoutes(mux)                                        // see policy.go
	mux.HandleFunc("GET /v1/console", s.handleConsole)         // see console.go
	s.eventRoutes(mux)                                         // see events.go
	s.reloadRoutes(mux)                                        // see reload.go
	return s.auth(mux)
}

// auth admits requests that carry the token, and only with a loopback Host
// and Origin (no DNS rebinding or cross-origin request from a browser page).
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := loopback.CheckRequest(r); err != nil {
			writeError(w, http.StatusForbidden, err)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) != 1 {
			writeError(w, http.StatusUnauthorized, errors.New("missing or wrong token (read it from the daemon's api file)"))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Debugw("write answer", "error", err)
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(Error{Error: err.Error()})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
		return false
	}
	return true
}

func (s *Server) handleID(w http.ResponseWriter, r *http.Request) {
	n := s.node
	id := Identity{
		ID:       n.ID().String(),
		Name:     n.Name(),
		Version:  n.Version(),
		Servers:  n.Shared(),
		Programs: n.Programs(),
		State:    s.daemonInfo().State,
	}
	for _, a := range n.Addrs() {
		id.Addrs = append(id.Addrs, a.String())
	}
	writeJSON(w, id)
}

func (s *Server) handlePeers(w http.ResponseWriter, r *http.Request) {
	h := s.node.Host()
	peers := []Peer{}
	ids := h.Network().Peers()
	named := s.namesOf(r.Context(), ids)
	for _, p := range ids {
		entry := Peer{ID: p.String(), Name: named[p], Servers: s.node.ServersKnown(p), Latency: h.Peerstore().LatencyEWMA(p)}
		for _, c := range h.Network().ConnsToPeer(p) {
			entry.Addrs = append(entry.Addrs, c.RemoteMultiaddr().String())
		}
		if v, err := h.Peerstore().Get(p, "AgentVersion"); err == nil {
			entry.Agent, _ = v.(string)
		}
		peers = append(peers, entry)
	}
	writeJSON(w, peers)
}

func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	var req ConnectRequest
	if !readJSON(w, r, &req) {
		return
	}
	if info, err := identity.ParseTarget(req.Peer); err == nil {
		s.retryNow(info.ID)
	}
	d, err := s.node.Dial(r.Context(), req.Peer)
	if err != nil {
		writeError(w, http.StatusBadGateway, err)
		return
	}
	res := ConnectResponse{ID: d.ID.String(), Already: d.Already, Tried: d.Tried}
	if d.Addr != nil {
		res.Addr = d.Addr.String()
	}
	writeJSON(w, res)
}

// retryNow forgets the swarm's dial backoff for p: a person asked to reach
// it now. A peer that restarted is reachable at once, and the backoff (5 s
// and more after a failed dial) would fail the request with "dial backoff"
// meanwhile. Dials the node makes on its own keep their backoff.
func (s *Server) retryNow(p lpeer.ID) {
	if sw, ok := s.node.Host().Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
		sw.Backoff().Clear(p)
	}
}

// target resolves a peer argument, connecting when it carries an address.
func (s *Server) target(ctx context.Context, arg string) (lpeer.ID, error) {
	info, err := identity.ParseTarget(arg)
	if err != nil {
		return "", err
	}
	s.retryNow(info.ID)
	if len(info.Addrs) > 0 {
		if err := s.node.ConnectAddr(ctx, info); err != nil {
			return "", err
		}
	}
	return info.ID, nil
}

func (s *Server) handleTools(w http.ResponseWriter, r *http.Request) {
	var req ToolsRequest
	if !readJSON(w, r, &req) {
		return
	}
	p, err := s.target(r.Context(), req.Peer)
	if err != nil {
		writeError(w, http.StatusBadGateway, err)
		return
	}
	tools, err := s.node.ListTools(r.Context(), p)
	if err != nil {
		writeError(w, http.StatusBadGateway, err)
		return
	}
	out := make([]Tool, len(tools))
	for i, t := range tools {
		out[i] = Tool{Server: t.Server, Tool: t.Tool}
	}
	writeJSON(w, out)
}

func (s *Server) handleCall(w http.ResponseWriter, r *http.Request) {
	var req CallRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !req.Progress {
		res, status, err := s.call(r.Context(), req)
		if err != nil {
			writeError(w, status, err)
			return
		}
		writeJSON(w, res)
		return
	}
	// The answer is a stream of events: progress and questions as they
	// come, then the result or the error.
	ev := newEventStream(w)
	ctx := tasks.WithProgress(r.Context(), func(p *sdkmcp.ProgressNotificationParams) {
		ev.send(CallEvent{Progress: &Progress{Progress: p.Progress, Total: p.Total, Message: p.Message}})
	})
	ctx = tasks.WithUser(ctx, s.callUser(r.Context(), ev, req.Questions))
	res, _, err := s.call(ctx, req)
	if err != nil {
		ev.end(CallEvent{Error: err.Error()})
		return
	}
	ev.end(CallEvent{Result: &res})
}

// call makes the call req asks for; status is the HTTP status of its
// failure.
func (s *Server) call(ctx context.Context, req CallRequest) (res CallResponse, status int, err error) {
	if len(req.Args) > 0 {
		var obj map[string]any
		if err := json.Unmarshal(req.Args, &obj); err != nil || obj == nil {
			return res, http.StatusBadRequest, fmt.Errorf("tool arguments must be a JSON object, like {\"text\": \"hi\"}")
		}
	}
	var args any
	if len(req.Args) > 0 {
		args = req.Args
	}
	if req.Peer == AnyPeer {
		return s.callAny(ctx, req.Tool, args)
	}
	p, err := s.target(ctx, req.Peer)
	if err != nil {
		return res, http.StatusBadGateway, err
	}
	// SERVER/TOOL is called as named: the peer answers, "not permitted"
	// included; a bare TOOL is looked up among what the peer lists.
	server, tool, named := node.SplitRef(req.Tool)
	if !named {
		t, err := s.node.ResolveTool(ctx, p, req.Tool)
		if err != nil {
			return res, http.StatusNotFound, err
		}
		server, tool = t.Server, t.Name
	}
	result, err := s.node.CallServerTool(ctx, p, server, tool, args)
	if err != nil {
		return res, http.StatusBadGateway, err
	}
	return CallResponse{Peer: p.String(), Server: server, Tool: tool, Result: result}, 0, nil
}

// eventStream writes JSON lines, each flushed as it is written, until its
// end event: what comes after (progress arriving late) is dropped, since
// the handler has returned by then.
type eventStream struct {
	mu    sync.Mutex
	w     http.ResponseWriter
	enc   *json.Encoder
	ended bool
}

func newEventStream(w http.ResponseWriter) *eventStream {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	return &eventStream{w: w, enc: json.NewEncoder(w)}
}

func (e *eventStream) send(ev CallEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return
	}
	if err := e.enc.Encode(ev); err != nil {
		log.Debugw("write call event", "error", err)
		return
	}
	if f, ok := e.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (e *eventStream) end(ev CallEvent) {
	e.send(ev)
	e.mu.Lock()
	e.ended = true
	e.mu.Unlock()
}
