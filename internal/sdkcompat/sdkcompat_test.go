package sdkcompat

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// keyRecorder notes which of the SDK's context keys are asked for.
type keyRecorder struct {
	context.Context
	mu   *sync.Mutex
	seen map[string]bool
}

func (r keyRecorder) Value(key any) any {
	if t := reflect.TypeOf(key); t != nil && t.PkgPath() == sdkPackage {
		r.mu.Lock()
		r.seen[t.Name()] = true
		r.mu.Unlock()
	}
	return r.Context.Value(key)
}

// The SDK's Streamable HTTP server transport must read the two context
// keys RequestContext answers, under the names it recognizes, and act on
// them: a message related to a request goes out on that request's stream,
// and one with no stream to carry it is refused with RejectedCode. If this
// fails after an SDK upgrade, the gateway's transparent sessions lose the
// server's messages: fix RequestContext's key names (or drop it, if the SDK
// now lets a relay say this through its API).
func TestRequestContextKeysAreTheSDKs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &sdkmcp.StreamableServerTransport{SessionID: "s1"}
	conn, err := tr.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	seen, mu := map[string]bool{}, &sync.Mutex{}
	recording := func(ctx context.Context) context.Context { return keyRecorder{Context: ctx, mu: mu, seen: seen} }

	relayed := make(chan error, 1)
	go func() {
		err := serveOne(ctx, conn, recording)
		if err != nil {
			cancel() // ServeHTTP waits for an answer that will not come
		}
		relayed <- err
	}()
	body := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	r.Header.Set("Mcp-Session-Id", "s1")
	r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	w := httptest.NewRecorder()
	tr.ServeHTTP(w, r.WithContext(recording(RequestContext(ctx, "2025-11-25", jsonrpc.ID{}))))
	if err := <-relayed; err != nil {
		t.Fatal(err)
	}
	out := w.Body.String()
	related, answer := strings.Index(out, `"related"`), strings.Index(out, `"result"`)
	if related < 0 || answer < 0 || related > answer {
		t.Fatalf("the related message is not on the request's stream before its answer:\n%s", out)
	}
	for _, name := range []string{protocolVersionKey, relatedRequestKey} {
		if !seen[name] {
			t.Errorf("the SDK never asked for %s.%s: RequestContext answers a key it no longer reads", sdkPackage, name)
		}
	}
}

// serveOne answers the one request conn reads: a message with no related
// request first (which must be refused), then one related to it, then the
// answer.
func serveOne(ctx context.Context, conn sdkmcp.Connection, recording func(context.Context) context.Context) error {
	msg, err := conn.Read(ctx)
	if err != nil {
		return err
	}
	req := msg.(*jsonrpc.Request)
	// No request relates this one: no stream can carry it.
	orphan := conn.Write(ctx, &jsonrpc.Request{Method: "notifications/message", Params: []byte(`{"level":"info","data":"orphan"}`)})
	var werr *jsonrpc.Error
	if !errors.As(orphan, &werr) || werr.Code != RejectedCode {
		return errors.New("an unrelated message without a GET stream was not refused with RejectedCode: " + errString(orphan))
	}
	// Related to the request in flight: on its stream, before its answer.
	if err := conn.Write(recording(RequestContext(ctx, "", req.ID)), &jsonrpc.Request{Method: "notifications/message", Params: []byte(`{"level":"info","data":"related"}`)}); err != nil {
		return err
	}
	return conn.Write(ctx, &jsonrpc.Response{ID: req.ID, Result: []byte(`{}`)})
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// connected returns a client session to server over the SDK's in-memory
// transports, the server side through serverSide.
func connected(t *testing.T, server *sdkmcp.Server, serverSide func(sdkmcp.Transport) sdkmcp.Transport, opts *sdkmcp.ClientOptions, clientSide func(sdkmcp.Transport) sdkmcp.Transport) *sdkmcp.ClientSession {
	t.Helper()
	ctx := context.Background()
	st, ct := sdkmcp.NewInMemoryTransports()
	ss, err := server.Connect(ctx, serverSide(st), nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "c", Version: "1"}, opts).Connect(ctx, clientSide(ct), &sdkmcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.Close()
		ss.Wait()
	})
	return cs
}

func same(t sdkmcp.Transport) sdkmcp.Transport { return t }

// A notification written straight to a server session's connection reaches
// the client like one the SDK sent: this is how the trust layer tells one
// peer to list again (the SDK can only notify every session). If it fails,
// policy changes no longer reach the peers whose lists they change.
func TestOnConnectWritesReachTheClient(t *testing.T) {
	var captured sdkmcp.Connection
	server := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "s", Version: "1"}, nil)
	told := make(chan struct{}, 1)
	cs := connected(t, server, func(tr sdkmcp.Transport) sdkmcp.Transport {
		return OnConnect(tr, func(_ context.Context, c sdkmcp.Connection) { captured = c })
	}, &sdkmcp.ClientOptions{ToolListChangedHandler: func(context.Context, *sdkmcp.ToolListChangedRequest) { told <- struct{}{} }}, same)
	_ = cs
	if captured == nil {
		t.Fatal("OnConnect did not see the server's connection")
	}
	if err := captured.Write(context.Background(), &jsonrpc.Request{Method: "notifications/tools/list_changed"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-told:
	case <-time.After(5 * time.Second):
		t.Fatal("the client's list_changed handler was not called within 5s")
	}
}

// The SDK's client gives a call its result without waiting for the
// progress notifications read before it to be handled: a blocked progress
// handler does not hold the result up. That is why the task layer watches
// reads (WatchReads) and makes a result wait for the progress read before
// it. If this fails because CallTool now waits for the handler, the SDK
// orders them itself: the tracker's progress counting (Observe, drain) can
// go.
func TestSDKHandlesNotificationsAfterTheResult(t *testing.T) {
	server := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "s", Version: "1"}, nil)
	server.AddTool(&sdkmcp.Tool{Name: "work", InputSchema: map[string]any{"type": "object"}}, func(ctx context.Context, req *sdkmcp.CallToolRequest) (*sdkmcp.CallToolResult, error) {
		err := req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: 1})
		return &sdkmcp.CallToolResult{}, err
	})
	release := make(chan struct{})
	handled := make(chan struct{})
	var watched sync.Mutex
	sawProgress := false
	cs := connected(t, server, same, &sdkmcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *sdkmcp.ProgressNotificationClientRequest) {
			<-release
			close(handled)
		},
	}, func(tr sdkmcp.Transport) sdkmcp.Transport {
		return WatchReads(tr, func(msg jsonrpc.Message) {
			if req, ok := msg.(*jsonrpc.Request); ok && req.Method == "notifications/progress" {
				watched.Lock()
				sawProgress = true
				watched.Unlock()
			}
		})
	})
	defer func() { close(release); <-handled }()

	done := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(context.Background(), &sdkmcp.CallToolParams{Name: "work", Meta: sdkmcp.Meta{"progressToken": "t"}})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CallTool waited for the progress handler: the SDK now orders notifications before results (see the test's comment)")
	}
	watched.Lock()
	defer watched.Unlock()
	if !sawProgress {
		t.Fatal("WatchReads did not see the progress notification read before the result")
	}
}

// InputRequiredResult's result must be what the SDK's own client takes for
// a request for input: resultType "input_required", which the SDK keeps in
// a private field that only its JSON decoding sets.
func TestInputRequiredResultIsReadAsSuch(t *testing.T) {
	pending := sdkmcp.InputRequestMap{"q1": &sdkmcp.ElicitParams{Message: "name?"}}
	for _, method := range []string{"tools/call", "prompts/get", "resources/read"} {
		res, err := InputRequiredResult(method, pending, "state")
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"resultType":"input_required"`) || !strings.Contains(string(raw), `"requestState":"state"`) {
			t.Errorf("%s: %s lacks resultType or requestState", method, raw)
		}
	}
	res, _ := InputRequiredResult("tools/call", pending, "state")
	if ctr := res.(*sdkmcp.CallToolResult); !ctr.NeedsInput() || len(ctr.InputRequests) != 1 {
		t.Errorf("the SDK does not read the tools/call result as needing input: %+v", ctr)
	}
}
