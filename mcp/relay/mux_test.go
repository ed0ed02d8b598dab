package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sharedServer is an SDK server in memory, as a Mux's upstream: a tool that
// reports progress and asks its client, a resource to subscribe to.
func sharedServer(t *testing.T) (FrameConn, *sdkmcp.Server) {
	t.Helper()
	srv := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "upstream", Version: "7"}, &sdkmcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *sdkmcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *sdkmcp.UnsubscribeRequest) error { return nil },
	})
	sdkmcp.AddTool(srv, &sdkmcp.Tool{Name: "work"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, in struct {
		Ask bool `json:"ask,omitempty"`
	}) (*sdkmcp.CallToolResult, any, error) {
		if tok := req.Params.GetProgressToken(); tok != nil {
			req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Message: "one"})
		}
		text := "worked"
		if in.Ask {
			res, err := req.Session.Elicit(ctx, &sdkmcp.ElicitParams{Message: "sure?", RequestedSchema: map[string]any{"type": "object"}})
			if err != nil {
				return nil, nil, err
			}
			text = res.Action
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: text}}}, nil, nil
	})
	srv.AddResource(&sdkmcp.Resource{URI: "x://r", Name: "r"}, func(context.Context, *sdkmcp.ReadResourceRequest) (*sdkmcp.ReadResourceResult, error) {
		return &sdkmcp.ReadResourceResult{Contents: []*sdkmcp.ResourceContents{{URI: "x://r", Text: "r"}}}, nil
	})
	mine, theirs := net.Pipe()
	ss, err := srv.Connect(context.Background(), transport.Connected(transport.NewPipeConn(theirs, "client", 0)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	return transport.NewPipeConn(mine, "upstream", 0), srv
}

// startMux starts a Mux on a sharedServer and runs it until the test ends.
func startMux(t *testing.T) (*Mux, *sdkmcp.Server) {
	t.Helper()
	up, srv := sharedServer(t)
	m, err := StartMux(context.Background(), "shared", up, MuxInit{ProtocolVersion: "2025-11-25",
		ClientInfo: &sdkmcp.Implementation{Name: "mux"}, Capabilities: &sdkmcp.ClientCapabilities{Elicitation: &sdkmcp.ElicitationCapabilities{Form: &sdkmcp.FormElicitationCapabilities{}}}})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() { m.Run(); close(ran) }()
	t.Cleanup(func() { m.Close(); <-ran })
	return m, srv
}

// muxClient is an SDK client on a session of m, recording what it gets.
type muxClient struct {
	cs       *sdkmcp.ClientSession
	mu       sync.Mutex
	progress []string
	updates  []string
	asked    []string
}

func connectMux(t *testing.T, m *Mux) *muxClient {
	t.Helper()
	c := &muxClient{}
	ms, err := m.Session()
	if err != nil {
		t.Fatal(err)
	}
	client := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "caller"}, &sdkmcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *sdkmcp.ProgressNotificationClientRequest) {
			c.mu.Lock()
			c.progress = append(c.progress, fmt.Sprint(r.Params.ProgressToken, ":", r.Params.Message))
			c.mu.Unlock()
		},
		ResourceUpdatedHandler: func(_ context.Context, r *sdkmcp.ResourceUpdatedNotificationRequest) {
			c.mu.Lock()
			c.updates = append(c.updates, r.Params.URI)
			c.mu.Unlock()
		},
		ElicitationHandler: func(_ context.Context, r *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
			c.mu.Lock()
			c.asked = append(c.asked, r.Params.Message)
			c.mu.Unlock()
			return &sdkmcp.ElicitResult{Action: "accept"}, nil
		},
	})
	cs, err := client.Connect(context.Background(), transport.Connected(ms), &sdkmcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	c.cs = cs
	return c
}

func (c *muxClient) seen() (progress, updates, asked []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.progress...), append([]string(nil), c.updates...), append([]string(nil), c.asked...)
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Sessions on one upstream: each is answered initialize with the
// upstream's own answer; their request IDs and progress tokens (the same
// on both) are told apart; a resource update reaches its subscribers only;
// a question goes to the one session with a call in flight.
func TestMuxCarriesSessionsOnOneUpstream(t *testing.T) {
	m, srv := startMux(t)
	a, b := connectMux(t, m), connectMux(t, m)
	ctx := context.Background()
	for _, c := range []*muxClient{a, b} {
		if info := c.cs.InitializeResult().ServerInfo; info.Name != "upstream" || info.Version != "7" {
			t.Fatalf("initialize answered with %+v, want the upstream's own", info)
		}
	}
	// The same request ID and progress token in both sessions, at once.
	var wg sync.WaitGroup
	for _, c := range []*muxClient{a, b} {
		wg.Go(func() {
			p := &sdkmcp.CallToolParams{Name: "work", Arguments: map[string]any{}}
			p.SetProgressToken("tok")
			res, err := c.cs.CallTool(ctx, p)
			if err != nil || res.IsError {
				t.Errorf("call: %v %+v", err, res.Content[0])
			}
		})
	}
	wg.Wait()
	for _, c := range []*muxClient{a, b} {
		eventually(t, "each session's own progress", func() bool {
			p, _, _ := c.seen()
			return len(p) == 1 && p[0] == "tok:one"
		})
	}
	// Subscriptions: b subscribes, a does not.
	if err := b.cs.Subscribe(ctx, &sdkmcp.SubscribeParams{URI: "x://r"}); err != nil {
		t.Fatal(err)
	}
	srv.ResourceUpdated(ctx, &sdkmcp.ResourceUpdatedNotificationParams{URI: "x://r"})
	eventually(t, "b's update", func() bool { _, u, _ := b.seen(); return len(u) == 1 })
	if _, u, _ := a.seen(); len(u) != 0 {
		t.Errorf("a got updates %v without subscribing", u)
	}
	// A question goes to the caller whose call asks.
	res, err := a.cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "work", Arguments: map[string]any{"ask": true}})
	if err != nil || res.IsError || res.Content[0].(*sdkmcp.TextContent).Text != "accept" {
		t.Fatalf("asking call: %v %+v", err, res)
	}
	if _, _, asked := a.seen(); len(asked) != 1 {
		t.Errorf("a was asked %v", asked)
	}
	if _, _, asked := b.seen(); len(asked) != 0 {
		t.Errorf("b was asked %v, not its call", asked)
	}
}

// With calls of several sessions in flight, a question names no one to
// ask: it is refused, saying why, rather than put to the wrong user.
func TestMuxRefusesAQuestionItCannotRoute(t *testing.T) {
	m, _ := startMux(t)
	a, idle := connectMux(t, m), connectMux(t, m)
	ctx := context.Background()
	// A raw session's call waits on its own question, which it never
	// answers: until released, two callers have requests in flight.
	release := make(chan struct{})
	asked := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		ms, _ := m.Session()
		defer ms.Close()
		ms.WriteFrame([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"work","arguments":{"ask":true}}}`))
		// Its question must have reached it before a calls: asked while
		// a's call is in flight too, it would be refused, the raw call
		// would end, and a's question would then have one caller to go to.
		for {
			frame, err := ms.ReadFrame()
			if err != nil || strings.Contains(string(frame), `"elicitation/create"`) {
				asked <- err
				break
			}
		}
		<-release
	})
	if err := <-asked; err != nil {
		t.Fatalf("the raw session's question: %v", err)
	}
	res, err := a.cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "work", Arguments: map[string]any{"ask": true}})
	close(release)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if text := res.Content[0].(*sdkmcp.TextContent).Text; !res.IsError || !strings.Contains(text, "2 callers have requests in flight") {
		t.Fatalf("a question with two callers in flight: %+v", res.Content[0])
	}
	// A session with nothing in flight is no one to ask either.
	idle.mu.Lock()
	defer idle.mu.Unlock()
	if len(idle.asked) != 0 {
		t.Fatalf("the idle session was asked %q", idle.asked)
	}
}

// A question the upstream asks outside any call (server-everything asks
// roots/list once initialized) is refused saying so, without advising to
// share the program isolated: the node's own session of an isolated share
// gets it too.
func TestMuxRefusesAQuestionOutsideAnyCall(t *testing.T) {
	m, srv := startMux(t)
	connectMux(t, m)
	var ss *sdkmcp.ServerSession
	for s := range srv.Sessions() {
		ss = s
	}
	_, err := ss.Elicit(context.Background(), &sdkmcp.ElicitParams{Message: "who?", RequestedSchema: map[string]any{"type": "object"}})
	if err == nil || !strings.Contains(err.Error(), "outside any call") || strings.Contains(err.Error(), "isolated") {
		t.Fatalf("a question outside any call: %v", err)
	}
}

// A session that ends cancels its calls in flight on the upstream, and a
// mux whose upstream ends ends its sessions.
func TestMuxSessionEndCancelsItsCalls(t *testing.T) {
	m, _ := startMux(t)
	ms, err := m.Session()
	if err != nil {
		t.Fatal(err)
	}
	if err := ms.WriteFrame([]byte(`{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"work","arguments":{"ask":true}}}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the call in flight", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.calls) == 1 })
	ms.Close()
	m.mu.Lock()
	n := len(m.calls)
	m.mu.Unlock()
	if n != 0 {
		t.Errorf("%d calls left after their session ended", n)
	}
	other, err := m.Session()
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, err := other.ReadFrame(); err == nil || !strings.Contains(err.Error(), "session ended") {
		t.Errorf("a session of an ended mux reads %v", err)
	}
	if _, err := m.Session(); err == nil {
		t.Error("an ended mux opened a session")
	}
}

// StripMeshMeta takes the mesh's keys out of what goes to a program, and
// leaves everything else as it was, byte for byte.
func TestStripMeshMeta(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"jsonrpc":"2.0","id":1,"method":"ping"}`, `{"jsonrpc":"2.0","id":1,"method":"ping"}`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"progressToken":1}}}`, ``},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"io.mcpmesh/task":"x","progressToken":1}}}`,
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":1},"name":"t"}}`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"io.mcpmesh/task":"x","io.mcpmesh/delegation":["y"]}}}`,
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"io\u002emcpmesh/task":"x"}}}`,
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}`},
		{`{"jsonrpc":"2.0","id":1,"result":{"_meta":{"io.mcpmesh/task":"x"}}}`, ``}, // an answer is the client's own
	} {
		f := NewFrame([]byte(c.in))
		if err := StripMeshMeta(f); err != nil || f.Dropped() {
			t.Fatalf("%s: %v (dropped: %v)", c.in, err, f.Dropped())
		}
		out := f.Bytes()
		want := c.want
		if want == "" {
			want = c.in
		}
		var got, exp any
		json.Unmarshal(out, &got)
		json.Unmarshal([]byte(want), &exp)
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Errorf("%s:\n got %s\nwant %s", c.in, out, want)
		}
		if c.want == "" && string(out) != c.in {
			t.Errorf("%s: changed to %s, want it untouched", c.in, out)
		}
	}
	_ = jsonrpc.CodeInternalError
}
