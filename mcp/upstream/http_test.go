package upstream

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// httpServer is an SDK server behind the SDK's Streamable HTTP handler,
// with a tool that reports progress and one whose answer is large.
func httpServer(t *testing.T, opts *sdkmcp.StreamableHTTPOptions) (*sdkmcp.Server, *httptest.Server, *atomic.Int32) {
	t.Helper()
	srv := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "remote", Version: "3"}, nil)
	sdkmcp.AddTool(srv, &sdkmcp.Tool{Name: "work"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, any, error) {
		if tok := req.Params.GetProgressToken(); tok != nil {
			req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1})
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "worked"}}}, nil, nil
	})
	sdkmcp.AddTool(srv, &sdkmcp.Tool{Name: "big"}, func(context.Context, *sdkmcp.CallToolRequest, struct{}) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: strings.Repeat("x", 8<<10)}}}, nil, nil
	})
	var deletes atomic.Int32
	h := sdkmcp.NewStreamableHTTPHandler(func(*http.Request) *sdkmcp.Server { return srv }, opts)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			deletes.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return srv, hs, &deletes
}

// roundTrip writes frame and reads until the answer to id, returning it and
// what came before it.
func roundTrip(t *testing.T, c Conn, frame string, id string) (answer map[string]any, before []map[string]any) {
	t.Helper()
	if frame != "" {
		if err := c.WriteFrame([]byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	defer close(done)
	timer := time.AfterFunc(10*time.Second, func() {
		select {
		case <-done:
		default:
			c.Close()
		}
	})
	defer timer.Stop()
	for {
		f, err := c.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for the answer to %s: %v", id, err)
		}
		var m map[string]any
		if err := json.Unmarshal(f, &m); err != nil {
			t.Fatalf("frame %q: %v", f, err)
		}
		if raw, _ := json.Marshal(m["id"]); string(raw) == id && m["method"] == nil {
			return m, before
		}
		before = append(before, m)
	}
}

// An HTTP session passed through frame by frame: the server's answers come
// back as it sent them; the session's ID and version go with every later
// request; its GET stream carries what the server sends outside a request;
// an answer over the limit stands as an error naming it; Close ends the
// session on the server.
func TestHTTPSessionFrameByFrame(t *testing.T) {
	srv, hs, deletes := httpServer(t, nil)
	up, err := Endpoint("remote", Remote{URL: hs.URL}, 4<<10)
	if err != nil {
		t.Fatal(err)
	}
	s, err := up.Open()
	if err != nil {
		t.Fatal(err)
	}
	init, _ := roundTrip(t, s, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"host","version":"1"}}}`, "1")
	result, _ := init["result"].(map[string]any)
	if info, _ := result["serverInfo"].(map[string]any); info["name"] != "remote" || result["protocolVersion"] != "2025-11-25" {
		t.Fatalf("initialize answered %v", init)
	}
	if err := s.WriteFrame([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)); err != nil {
		t.Fatal(err)
	}
	call, before := roundTrip(t, s, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"work","arguments":{},"_meta":{"progressToken":"p"}}}`, "2")
	if len(before) != 1 || before[0]["method"] != "notifications/progress" || call["result"] == nil {
		t.Fatalf("call: %v after %v", call, before)
	}
	// A change the server announces outside any request: the GET stream.
	hc := s.Conn.(*httpConn)
	eventually := func(what string, ok func() bool) {
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 5s: %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	eventually("the GET stream open", func() bool { hc.mu.Lock(); defer hc.mu.Unlock(); return hc.getOpen })
	time.Sleep(100 * time.Millisecond) // the GET request reaches the server
	sdkmcp.AddTool(srv, &sdkmcp.Tool{Name: "later"}, func(context.Context, *sdkmcp.CallToolRequest, struct{}) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{}, nil, nil
	})
	f, err := s.ReadFrame()
	if err != nil || !strings.Contains(string(f), "notifications/tools/list_changed") {
		t.Fatalf("after a tool was added: %s, %v", f, err)
	}
	big, _ := roundTrip(t, s, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"big","arguments":{}}}`, "3")
	e, _ := big["error"].(map[string]any)
	if e == nil || e["code"] != float64(transport.CodeMessageTooLarge) || !strings.Contains(e["message"].(string), "limit of 4 KiB") {
		t.Fatalf("an answer over the limit: %v", big)
	}
	s.Close()
	if deletes.Load() != 1 {
		t.Errorf("%d DELETEs after Close, want 1", deletes.Load())
	}
}

// A 2026-07-28 client has no session: each request names its version, and
// the standard headers go with it (the SDK's server checks them). Only a
// stateless server speaks 2026-07-28.
func TestHTTPSessionOf2026Client(t *testing.T) {
	_, hs, _ := httpServer(t, &sdkmcp.StreamableHTTPOptions{Stateless: true})
	up, err := Endpoint("remote", Remote{URL: hs.URL}, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := up.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"host","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`
	disc, _ := roundTrip(t, s, `{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{`+meta+`}}`, "1")
	if disc["result"] == nil {
		t.Fatalf("server/discover: %v", disc)
	}
	call, _ := roundTrip(t, s, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"work","arguments":{},`+meta+`}}`, "2")
	if call["result"] == nil {
		t.Fatalf("a 2026-07-28 call: %v", call)
	}
}
