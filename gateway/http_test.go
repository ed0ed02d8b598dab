package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/internal/fixture"
	"github.com/mcpmesh/mcpmesh/node"
)

func plainNode(t testing.TB) *node.Node {
	t.Helper()
	return plainNodeWith(t)
}

func plainNodeWith(t testing.TB, opts ...node.Option) *node.Node {
	t.Helper()
	n, err := node.New(append([]node.Option{node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// farFixture starts three nodes: C shares the conformance fixture, B
// re-shares it (--share-peer), A serves the HTTP gateway. It returns the
// gateway's URL for the fixture two hops away, and the handler.
func farFixture(t testing.TB, opts gateway.HTTPOptions) (string, *gateway.HTTPHandler) {
	t.Helper()
	a, b, c := plainNode(t), plainNode(t), plainNode(t)
	if err := c.Share("fixture", fixture.NewServer()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := b.Connect(ctx, c.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	if err := b.SharePeer("fixture", c.ID(), "fixture"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Connect(ctx, b.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	h := gateway.NewHTTPHandler(a, opts)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		h.Close()
	})
	return fmt.Sprintf("%s/mcp/%s/fixture", srv.URL, b.ID()), h
}

// recorder collects what the server sends to the client.
type recorder struct {
	mu       sync.Mutex
	progress []float64
	logs     []string
	updated  chan string
}

func (r *recorder) client(t *testing.T) *sdkmcp.Client {
	return sdkmcp.NewClient(&sdkmcp.Implementation{Name: "test-host", Version: "1"}, &sdkmcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, req *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
			return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"username": "alice", "name": "alice"}}, nil
		},
		CreateMessageHandler: func(_ context.Context, req *sdkmcp.CreateMessageRequest) (*sdkmcp.CreateMessageResult, error) {
			return &sdkmcp.CreateMessageResult{Role: "assistant", Model: "test", Content: &sdkmcp.TextContent{Text: "42"}}, nil
		},
		ProgressNotificationHandler: func(_ context.Context, req *sdkmcp.ProgressNotificationClientRequest) {
			r.mu.Lock()
			r.progress = append(r.progress, req.Params.Progress)
			r.mu.Unlock()
		},
		LoggingMessageHandler: func(_ context.Context, req *sdkmcp.LoggingMessageRequest) {
			r.mu.Lock()
			r.logs = append(r.logs, fmt.Sprint(req.Params.Data))
			r.mu.Unlock()
		},
		ResourceUpdatedHandler: func(_ context.Context, req *sdkmcp.ResourceUpdatedNotificationRequest) {
			select {
			case r.updated <- req.Params.URI:
			default:
			}
		},
	})
}

// waitFor waits up to 2s for cond, which it checks under r.mu: the SDK's
// client may run notification handlers after the call that caused them
// has returned.
func (r *recorder) waitFor(cond func() bool) {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
	}
}

func text(t *testing.T, res *sdkmcp.CallToolResult) string {
	t.Helper()
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdkmcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func connect(t *testing.T, url string, r *recorder, version string, noGET bool) *sdkmcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := r.client(t).Connect(ctx, &sdkmcp.StreamableClientTransport{Endpoint: url, DisableStandaloneSSE: noGET},
		&sdkmcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// A host reaches a server two hops away as if directly: the fixture's own
// name, its tools, and every message from the server to the client
// (progress, logging, elicitation, sampling) on the POST's SSE stream,
// with no GET stream open.
func TestTransparentSessionTwoHopsAway(t *testing.T) {
	url, h := farFixture(t, gateway.HTTPOptions{})
	r := &recorder{updated: make(chan string, 1)}
	cs := connect(t, url, r, "2025-11-25", true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if got := cs.InitializeResult().ServerInfo.Name; got != "mcp-conformance-test-server" {
		t.Errorf("server name %q: the gateway is not transparent", got)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tools.Tools) < 10 {
		t.Errorf("%d tools", len(tools.Tools))
	}
	res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "test_simple_text"})
	if err != nil || text(t, res) != "This is a simple text response for testing." {
		t.Fatalf("simple text: %v %v", res, err)
	}

	params := &sdkmcp.CallToolParams{Name: "test_tool_with_progress"}
	params.SetProgressToken("tok-1")
	if res, err = cs.CallTool(ctx, params); err != nil || text(t, res) != "tok-1" {
		t.Fatalf("progress tool: %v %v", res, err)
	}
	r.waitFor(func() bool { return len(r.progress) >= 3 })
	r.mu.Lock()
	if fmt.Sprint(r.progress) != "[0 50 100]" {
		t.Errorf("progress %v, want [0 50 100]", r.progress)
	}
	r.mu.Unlock()

	if err := cs.SetLoggingLevel(ctx, &sdkmcp.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatal(err)
	}
	if _, err = cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "test_tool_with_logging"}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(func() bool { return len(r.logs) >= 3 })
	r.mu.Lock()
	if len(r.logs) != 3 {
		t.Errorf("logs %v, want 3", r.logs)
	}
	r.mu.Unlock()

	res, err = cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "test_elicitation", Arguments: map[string]any{"message": "who?"}})
	if err != nil || !strings.Contains(text(t, res), "action=accept") || !strings.Contains(text(t, res), "alice") {
		t.Fatalf("elicitation: %v %v", text(t, res), err)
	}
	res, err = cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "test_sampling", Arguments: map[string]any{"prompt": "6*7?"}})
	if err != nil || text(t, res) != "LLM response: 42" {
		t.Fatalf("sampling: %v %v", res, err)
	}
	res, err = cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "test_error_handling"})
	if err != nil || !res.IsError {
		t.Fatalf("error tool: %v %v", res, err)
	}

	if h.Sessions() != 1 {
		t.Errorf("%d sessions, want 1", h.Sessions())
	}
	cs.Close() // DELETE
	if h.Sessions() != 0 {
		t.Errorf("%d sessions after DELETE, want 0", h.Sessions())
	}
}

// Several calls in flight at once on one session each get their own
// progress, by token.
func TestTransparentConcurrentProgress(t *testing.T) {
	url, _ := farFixture(t, gateway.HTTPOptions{})
	r := &recorder{updated: make(chan string, 1)}
	cs := connect(t, url, r, "2025-11-25", true)
	defer cs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &sdkmcp.CallToolParams{Name: "test_tool_with_progress"}
			p.SetProgressToken(fmt.Sprintf("t%d", i))
			if _, err := cs.CallTool(ctx, p); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	r.waitFor(func() bool { return len(r.progress) >= 12 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.progress) != 12 {
		t.Errorf("%d progress notifications, want 12", len(r.progress))
	}
}

// A resource update reaches a subscribed client on its GET stream.
func TestTransparentSubscription(t *testing.T) {
	url, _ := farFixture(t, gateway.HTTPOptions{})
	r := &recorder{updated: make(chan string, 1)}
	cs := connect(t, url, r, "2025-11-25", false)
	defer cs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The fixture tells each new subscriber once. The client's GET stream
	// opens on its own time, and an update sent before it has opened is
	// dropped (as by the SDK's own server): subscribe again until one
	// comes, within the test's deadline.
	retry := time.NewTicker(500 * time.Millisecond)
	defer retry.Stop()
	for got := false; !got; {
		if err := cs.Subscribe(ctx, &sdkmcp.SubscribeParams{URI: fixture.WatchedResourceURI}); err != nil {
			t.Fatal(err)
		}
		select {
		case uri := <-r.updated:
			if uri != fixture.WatchedResourceURI {
				t.Errorf("updated %q", uri)
			}
			got = true
		case <-retry.C:
		case <-ctx.Done():
			t.Fatal("no notifications/resources/updated")
		}
		if err := cs.Unsubscribe(ctx, &sdkmcp.UnsubscribeParams{URI: fixture.WatchedResourceURI}); err != nil {
			t.Fatal(err)
		}
	}
}

// A client on 2026-07-28 (no sessions) is relayed one request at a time.
func TestTransparentStateless(t *testing.T) {
	url, h := farFixture(t, gateway.HTTPOptions{})
	r := &recorder{updated: make(chan string, 1)}
	cs := connect(t, url, r, "", true) // the SDK's default: 2026-07-28
	defer cs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Logf("settled on %s", v)
	}
	res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "test_simple_text"})
	if err != nil || text(t, res) != "This is a simple text response for testing." {
		t.Fatalf("simple text: %v %v", res, err)
	}
	p := &sdkmcp.CallToolParams{Name: "test_tool_with_progress"}
	p.SetProgressToken("s1")
	if _, err := cs.CallTool(ctx, p); err != nil {
		t.Fatal(err)
	}
	r.waitFor(func() bool { return len(r.progress) >= 3 })
	r.mu.Lock()
	if len(r.progress) != 3 {
		t.Errorf("progress %v", r.progress)
	}
	r.mu.Unlock()
	// Multi round-trip (SEP-2322): the question travels in the result.
	res, err = cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "test_input_required_result_elicitation"})
	if err != nil {
		t.Fatal(err)
	}
	if got := text(t, res); got != "Hello, alice!" {
		t.Errorf("input-required elicitation: %q", got)
	}
	if n := h.Sessions(); n != 0 {
		t.Errorf("%d sessions kept for a stateless client", n)
	}
}

func do(t *testing.T, h http.Handler, method, target string, header map[string]string, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Host = "127.0.0.1:8080"
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`

var postHeaders = map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

func with(extra map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range postHeaders {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// DNS rebinding: a Host or Origin that is not loopback is refused.
func TestHostAndOriginRejected(t *testing.T) {
	a := plainNode(t)
	h := gateway.NewHTTPHandler(a, gateway.HTTPOptions{})
	defer h.Close()
	target := fmt.Sprintf("/mcp/%s/node", a.ID())
	for _, tc := range []struct {
		header map[string]string
		want   int
	}{
		{with(map[string]string{"Host": "evil.example.com"}), http.StatusForbidden},
		{with(map[string]string{"Host": "evil.example.com:8080"}), http.StatusForbidden},
		{with(map[string]string{"Host": "127.0.0.1.nip.io"}), http.StatusForbidden},
		{with(map[string]string{"Origin": "http://evil.example.com"}), http.StatusForbidden},
		{with(map[string]string{"Origin": "null"}), http.StatusForbidden},
		{with(map[string]string{"Host": "localhost:3000", "Origin": "http://localhost:3000"}), http.StatusOK},
		{with(map[string]string{"Host": "[::1]:3000", "Origin": "http://127.0.0.1:3000"}), http.StatusOK},
		{with(nil), http.StatusOK},
	} {
		w := do(t, h, "POST", target, tc.header, initBody)
		if w.Code != tc.want {
			t.Errorf("%v: %d %s, want %d", tc.header, w.Code, strings.TrimSpace(w.Body.String()), tc.want)
		}
		if w.Code == http.StatusForbidden && !strings.Contains(w.Body.String(), "not a loopback") {
			t.Errorf("403 without a reason: %q", w.Body.String())
		}
		if w.Code == http.StatusOK {
			do(t, h, "DELETE", target, map[string]string{"Mcp-Session-Id": w.Header().Get("Mcp-Session-Id")}, "")
		}
	}
}

func TestTransparentErrors(t *testing.T) {
	a := plainNode(t)
	h := gateway.NewHTTPHandler(a, gateway.HTTPOptions{})
	defer h.Close()
	self := fmt.Sprintf("/mcp/%s/node", a.ID())

	if w := do(t, h, "POST", "/mcp", postHeaders, initBody); w.Code != http.StatusNotFound {
		t.Errorf("/mcp without a mesh server: %d", w.Code)
	}
	if w := do(t, h, "POST", "/mcp/notapeer/x", postHeaders, initBody); w.Code != http.StatusNotFound {
		t.Errorf("bad peer: %d", w.Code)
	}
	if w := do(t, h, "POST", self, with(map[string]string{"Mcp-Session-Id": "nope"}), initBody); w.Code != http.StatusNotFound {
		t.Errorf("unknown session: %d", w.Code)
	}
	if w := do(t, h, "GET", self, map[string]string{"Accept": "text/event-stream"}, ""); w.Code != http.StatusBadRequest {
		t.Errorf("GET without session: %d", w.Code)
	}
	if w := do(t, h, "PUT", self, nil, ""); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", w.Code)
	}
	// A peer nobody can reach: the initialize is answered with the reason.
	other := plainNode(t)
	id := other.ID()
	other.Close()
	w := do(t, h, "POST", fmt.Sprintf("/mcp/%s/fixture", id), postHeaders, initBody)
	body, _ := io.ReadAll(w.Body)
	if w.Code != http.StatusBadGateway || !strings.Contains(string(body), "unreachable") || !strings.Contains(string(body), `"id":1`) {
		t.Errorf("unreachable peer: %d %s", w.Code, body)
	}
	// A session to one server is not usable on another path.
	w = do(t, h, "POST", self, postHeaders, initBody)
	sid := w.Header().Get("Mcp-Session-Id")
	if sid == "" {
		t.Fatalf("no session: %d %s", w.Code, w.Body)
	}
	rnd, _ := lpeer.Decode("12D3KooWRvYPip2JsgAYL9dZGrKTiCV76DogjoM9YQ2Sszn4EpLm")
	if w := do(t, h, "POST", fmt.Sprintf("/mcp/%s/node", rnd), with(map[string]string{"Mcp-Session-Id": sid}), `{"jsonrpc":"2.0","id":2,"method":"ping"}`); w.Code != http.StatusNotFound {
		t.Errorf("session on another path: %d", w.Code)
	}
	if w := do(t, h, "DELETE", self, map[string]string{"Mcp-Session-Id": sid}, ""); w.Code != http.StatusNoContent {
		t.Errorf("DELETE: %d", w.Code)
	}
	if w := do(t, h, "DELETE", self, map[string]string{"Mcp-Session-Id": sid}, ""); w.Code != http.StatusNotFound {
		t.Errorf("second DELETE: %d", w.Code)
	}
}

// /mcp serves the mesh-mode server when there is one, on every protocol
// version: with sessions before 2026-07-28, without from it on (where the
// client starts with server/discover, which must list 2026-07-28).
func TestMeshEndpoint(t *testing.T) {
	a := plainNode(t)
	srv := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "mesh-under-test", Version: "1"}, nil)
	sdkmcp.AddTool(srv, &sdkmcp.Tool{Name: "hello"}, func(context.Context, *sdkmcp.CallToolRequest, any) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "hi"}}}, nil, nil
	})
	h := gateway.NewHTTPHandler(a, gateway.HTTPOptions{MeshServer: srv})
	hs := httptest.NewServer(h)
	defer func() { hs.CloseClientConnections(); hs.Close(); h.Close() }()
	for _, v := range []string{"2025-06-18", "2025-11-25", "2026-07-28"} {
		t.Run(v, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "h", Version: "1"}, nil).Connect(ctx,
				&sdkmcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, &sdkmcp.ClientSessionOptions{ProtocolVersion: v})
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if got := cs.InitializeResult().ProtocolVersion; got != v {
				t.Errorf("negotiated %q", got)
			}
			if got := cs.InitializeResult().ServerInfo; got == nil || got.Name != "mesh-under-test" {
				t.Errorf("server %+v", got)
			}
			res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "hello"})
			if err != nil || text(t, res) != "hi" {
				t.Fatalf("hello: %v %+v", err, res)
			}
		})
	}
	// A client probing with server/discover (as mark3labs/mcp-go does by
	// default) learns that the gateway speaks 2026-07-28.
	w := do(t, h, "POST", "/mcp", with(map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"}),
		`{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"probe","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`)
	if !strings.Contains(w.Body.String(), `"2026-07-28"`) {
		t.Errorf("server/discover: %d %q", w.Code, w.Body.String())
	}
}

// A peer that goes away mid-call fails the call at once, not by timeout,
// and ends the HTTP session.
func TestTransparentPeerLost(t *testing.T) {
	a, c := plainNode(t), plainNode(t)
	slow := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "slow", Version: "1"}, nil)
	started := make(chan struct{})
	sdkmcp.AddTool(slow, &sdkmcp.Tool{Name: "wait"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		close(started)
		<-ctx.Done()
		return nil, nil, ctx.Err()
	})
	if err := c.Share("slow", slow); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Connect(ctx, c.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	h := gateway.NewHTTPHandler(a, gateway.HTTPOptions{})
	hs := httptest.NewServer(h)
	defer func() { hs.CloseClientConnections(); hs.Close(); h.Close() }()
	cs := connect(t, fmt.Sprintf("%s/mcp/%s/slow", hs.URL, c.ID()), &recorder{}, "2025-11-25", true)
	defer cs.Close()
	go func() {
		<-started
		c.Close()
	}()
	start := time.Now()
	_, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "wait"})
	if err == nil || !strings.Contains(err.Error(), "the session to "+c.ID().String()+"/slow ended before it answered") {
		t.Errorf("call on a lost peer: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
	for deadline := time.Now().Add(2 * time.Second); h.Sessions() != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if h.Sessions() != 0 {
		t.Errorf("%d sessions left", h.Sessions())
	}
}

// A message over the limit is answered as JSON-RPC, naming the limit, on
// every path and protocol version: a POST body over MaxRequestBodyBytes
// with 413 and the error for the request the body starts with (id null when
// the ID comes after what was read), a request the stream to the peer
// cannot carry (over the node's message limit) with the error in its place,
// and the session goes on.
func TestOverTheLimitIsAJSONRPCErrorNamingIt(t *testing.T) {
	a, c := plainNodeWith(t, node.WithMaxMessageSize(64<<10)), plainNode(t)
	if err := c.Share("fixture", fixture.NewServer()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Connect(ctx, c.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	mesh := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "mesh", Version: "1"}, nil)
	h := gateway.NewHTTPHandler(a, gateway.HTTPOptions{MeshServer: mesh, MaxRequestBodyBytes: 1 << 20})
	hs := httptest.NewServer(h)
	defer func() { hs.CloseClientConnections(); hs.Close(); h.Close() }()
	path := fmt.Sprintf("/mcp/%s/fixture", c.ID())

	big := strings.Repeat("x", 2<<20)
	for _, tc := range []struct {
		name, path, body, wantID string
		header                   map[string]string
	}{
		{"transparent, new session", path, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"t":"` + big + `"}}}`, `"id":7`, nil},
		{"transparent, 2026-07-28", path, `{"id":"s","jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"t":"` + big + `"}}}`, `"id":"s"`, map[string]string{"Mcp-Protocol-Version": "2026-07-28"}},
		{"mesh mode, id after params", "/mcp", `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"t":"` + big + `"}},"id":8}`, `"id":null`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, h, "POST", tc.path, with(tc.header), tc.body)
			body := w.Body.String()
			if w.Code != http.StatusRequestEntityTooLarge || w.Header().Get("Content-Type") != "application/json" ||
				!strings.Contains(body, tc.wantID) || !strings.Contains(body, `"code":-32600`) ||
				!strings.Contains(body, "a tools/call request is over the message size limit of 1 MiB (1048576 bytes)") {
				t.Errorf("%d %s %s", w.Code, w.Header().Get("Content-Type"), body)
			}
		})
	}

	// Under the HTTP limit, over the stream's: answered by the gateway, on
	// both versions, and the session goes on.
	for _, v := range []string{"2025-11-25", "2026-07-28"} {
		t.Run("stream "+v, func(t *testing.T) {
			cs := connect(t, hs.URL+path, &recorder{}, v, true)
			defer cs.Close()
			_, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "test_simple_text", Arguments: map[string]any{"pad": strings.Repeat("y", 100<<10)}})
			if err == nil || !strings.Contains(err.Error(), "a tools/call request of ") || !strings.Contains(err.Error(), "over the message size limit of 64 KiB (65536 bytes)") {
				t.Fatalf("a request over the stream's limit: %v", err)
			}
			res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "test_simple_text"})
			if err != nil || res.IsError {
				t.Fatalf("the session after: %v %+v", err, res)
			}
		})
	}
}
