package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// callEcho calls the echo tool of to from from and checks the answer,
// including that to saw from as the caller.
func callEcho(t *testing.T, from, to *node.Node, ref, text string) error {
	t.Helper()
	res, err := from.CallTool(ctxFor(t, 5*time.Second), to.ID(), ref, map[string]any{"text": text})
	if err != nil {
		return err
	}
	out, _ := res.StructuredContent.(map[string]any)
	if res.IsError || out["text"] != text || out["caller"] != from.ID().String() {
		return fmt.Errorf("%s→%s %s(%q): got %+v", from.ID(), to.ID(), ref, text, res)
	}
	return nil
}

func mustEcho(t *testing.T, from, to *node.Node, text string) {
	t.Helper()
	if err := callEcho(t, from, to, "echo", text); err != nil {
		t.Fatal(err)
	}
}

// failure returns the text of a failed call: the error, or the content of
// a result with IsError set. It is "" if the call succeeded.
func failure(res *sdkmcp.CallToolResult, err error) string {
	if err != nil {
		return err.Error()
	}
	if res == nil || !res.IsError {
		return ""
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdkmcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	if b.Len() == 0 {
		return "(error result without text)"
	}
	return b.String()
}

func randomPeerID(t *testing.T) lpeer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := lpeer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestUnknownToolIsNamedWithWhatThePeerHas(t *testing.T) {
	a, b := newNode(t), newNode(t)
	connect(t, a, b)

	_, err := a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "nope", nil)
	if err == nil {
		t.Fatal("calling a tool that does not exist succeeded")
	}
	if !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "node/echo") {
		t.Errorf("error %q: want it to name the tool and list node/echo", err)
	}
	_, err = a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "node/nope", nil)
	if err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("SERVER/TOOL with an unknown tool: %v, want an error naming it", err)
	}
	// Straight to the server, without a lookup: the server itself refuses.
	msg := failure(a.CallServerTool(ctxFor(t, 5*time.Second), b.ID(), "node", "nope", nil))
	if !strings.Contains(msg, "nope") {
		t.Errorf("server's answer to an unknown tool: %q, want it to name the tool", msg)
	}
	mustEcho(t, a, b, "still serving")
}

func TestArgumentsFailingTheInputSchemaAreRefusedAndTheNodeGoesOn(t *testing.T) {
	a, b := newNode(t), newNode(t)
	connect(t, a, b)

	for _, args := range []any{
		map[string]any{"text": 5},
		map[string]any{"text": []string{"a"}},
	} {
		msg := failure(a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "echo", args))
		if msg == "" {
			t.Errorf("echo(%v) succeeded, want a refusal", args)
		} else if !strings.Contains(msg, "text") {
			t.Errorf("echo(%v) refused with %q: want it to name the argument", args, msg)
		}
		mustEcho(t, a, b, "next call")
	}
}

// readUntilFail reads s until it fails and returns the error.
func readUntilFail(t *testing.T, s network.Stream) error {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := io.Copy(io.Discard, s)
	if err == nil {
		err = io.EOF
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("misbehaving stream still open: %v", err)
	}
	return err
}

// answeredTooLarge reads the answer to a request over the limit: a JSON-RPC
// error that names the limit, on a stream that stays open.
func answeredTooLarge(t *testing.T, s network.Stream, limit int) {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(s).ReadBytes('\n')
	if err != nil {
		t.Fatalf("no answer to a request over the limit: %v", err)
	}
	var resp struct {
		Error *struct {
			Code    int64  `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(line, &resp) != nil || resp.Error == nil || resp.Error.Code != transport.CodeMessageTooLarge ||
		!strings.Contains(resp.Error.Message, "limit of "+transport.SizeText(limit)) {
		t.Fatalf("answer to a request over the limit: %s, want error %d naming the limit", line, transport.CodeMessageTooLarge)
	}
}

func TestGarbageResetsOnlyItsStreamAndOversizeIsAnswered(t *testing.T) {
	const limit = 64 << 10
	b := newNode(t, node.WithMaxMessageSize(limit))
	a, c := newNode(t), newNode(t)
	connect(t, a, b)
	connect(t, c, b)
	mustEcho(t, a, b, "warm up")
	mustEcho(t, c, b, "warm up") // c's own session to b, on the same connection

	// Honest traffic from both peers throughout.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	calls := map[*node.Node]int{}
	var mu sync.Mutex
	errs := make(chan error, 100)
	for _, from := range []*node.Node{a, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := callEcho(t, from, b, "echo", fmt.Sprint("during ", i)); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				calls[from]++
				mu.Unlock()
			}
		}()
	}

	oversize := append([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"`), strings.Repeat("a", limit)...)
	oversize = append(oversize, `"}}`+"\n"...)
	for name, data := range map[string][]byte{
		"garbage":  []byte("GET / HTTP/1.1\r\n\r\n"),
		"oversize": oversize,
	} {
		s, err := c.Host().NewStream(ctxFor(t, 3*time.Second), b.ID(), transport.ProtocolID(transport.DefaultServer))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(data); err != nil {
			t.Logf("%s: write: %v", name, err)
		}
		if name == "oversize" {
			answeredTooLarge(t, s, limit)
		} else if err := readUntilFail(t, s); !errors.Is(err, network.ErrReset) {
			t.Errorf("%s: the stream ended with %v, want a reset", name, err)
		}
		s.Reset()
	}
	// Let the honest callers run on for a few calls after the resets.
	mu.Lock()
	before := calls[a] + calls[c]
	mu.Unlock()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := calls[a] + calls[c]
		mu.Unlock()
		if n >= before+10 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("honest call failed while another stream misbehaved: %v", err)
	}
	if calls[a] == 0 || calls[c] == 0 {
		t.Errorf("calls made during the test: a %d, c %d; want some from each", calls[a], calls[c])
	}
	mustEcho(t, a, b, "after")
	mustEcho(t, c, b, "after")
	if n := len(c.Host().Network().ConnsToPeer(b.ID())); n != 1 {
		t.Errorf("c has %d connections to b, want the one it had", n)
	}
}

// A node's limit holds for what it receives as a caller too: an answer over
// the limit fails that call, and the very next call works, on a new session.
func TestAnswerOverTheCallersLimitFailsTheCallNotTheNode(t *testing.T) {
	b := newNode(t)
	node.AddTool(b, &sdkmcp.Tool{Name: "big"}, func(context.Context, *sdkmcp.CallToolRequest, struct{}) (*sdkmcp.CallToolResult, echoOut, error) {
		return nil, echoOut{Text: strings.Repeat("x", 100<<10)}, nil
	})
	a := newNode(t, node.WithMaxMessageSize(64<<10))
	connect(t, a, b)
	mustEcho(t, a, b, "before")

	// Several rounds: whether the next call finds the broken session still
	// in the pool is a matter of goroutine scheduling.
	for round := range 8 {
		start := time.Now()
		res, err := a.CallTool(ctxFor(t, 10*time.Second), b.ID(), "big", nil)
		if err == nil {
			t.Fatalf("an answer of 100 KiB passed a 64 KiB limit (IsError %v)", res.IsError)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("the oversize answer took %v to fail", d)
		}
		if err := callEcho(t, a, b, "echo", fmt.Sprint("right after ", round)); err != nil {
			t.Fatalf("round %d: the call after the oversize answer failed: %v", round, err)
		}
	}
}

func TestServingPeerClosingMidCallFailsTheCallPromptly(t *testing.T) {
	for _, version := range []string{"2025-11-25", "2026-07-28"} {
		t.Run(version, func(t *testing.T) { servingPeerClosesMidCall(t, version) })
	}
}

func servingPeerClosesMidCall(t *testing.T, version string) {
	b := newNode(t)
	a := newNode(t, node.WithProtocolVersion(version))
	started := make(chan struct{})
	release := make(chan struct{})
	defer close(release) // if the node does not cancel the handler, do not hang the test
	var once sync.Once
	node.AddTool(b, &sdkmcp.Tool{Name: "block"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, echoOut, error) {
		once.Do(func() { close(started) })
		select {
		case <-ctx.Done():
			return nil, echoOut{}, ctx.Err()
		case <-release:
			return nil, echoOut{Text: "released"}, nil
		}
	})
	connect(t, a, b)

	type result struct {
		res *sdkmcp.CallToolResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		// A deadline far beyond the test's expectations.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := a.CallTool(ctx, b.ID(), "block", nil)
		done <- result{res, err}
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the tool never started")
	}

	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case r := <-done:
		if msg := failure(r.res, r.err); msg == "" {
			t.Errorf("call to a node that closed mid-call succeeded: %+v", r.res)
		} else {
			t.Logf("caller got: %s", msg)
		}
	case <-time.After(eventDeadline):
		t.Errorf("caller still waiting %v after the serving node closed", eventDeadline)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(eventDeadline):
		t.Errorf("Close of the serving node hangs on its in-flight handler after %v", eventDeadline)
	}

	// The caller forgets the dead session and fails fast next time too.
	start := time.Now()
	if err := callEcho(t, a, b, "echo", "gone"); err == nil {
		t.Error("call to a closed node succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("call to a closed node took %v to fail", d)
	}
}

func TestCallToUnreachablePeerFailsClearlyWithinTheDialTimeout(t *testing.T) {
	const timeout = 2 * time.Second
	a := newNode(t, node.WithDialTimeout(timeout))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now
	id := randomPeerID(t)
	target := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", port, id)

	start := time.Now()
	_, err = a.Connect(context.Background(), target)
	d := time.Since(start)
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	if !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), id.String()) {
		t.Errorf("error %q: want it to say the peer %s is unreachable", err, id)
	}
	if d > timeout+500*time.Millisecond {
		t.Errorf("Connect failed after %v, dial timeout %v", d, timeout)
	}

	start = time.Now()
	_, err = a.CallTool(context.Background(), id, "echo", map[string]any{"text": "hi"})
	d = time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), id.String()) {
		t.Errorf("CallTool to an unreachable peer: %v, want it to say %s is unreachable", err, id)
	}
	if d > timeout+500*time.Millisecond {
		t.Errorf("CallTool failed after %v, dial timeout %v", d, timeout)
	}

	// A peer ID with no known address cannot be dialed at all.
	stranger := randomPeerID(t)
	_, err = a.CallTool(context.Background(), stranger, "echo", nil)
	if err == nil || !strings.Contains(err.Error(), "no known address") || !strings.Contains(err.Error(), "/p2p/") {
		t.Errorf("CallTool to a peer with no address: %v, want it to ask for a multiaddr", err)
	}
}

// A peer that accepts TCP connections but never answers: the dial must give
// up at the node's dial timeout, whatever the caller's context allows.
func TestCallToSilentPeerGivesUpAtTheDialTimeout(t *testing.T) {
	const timeout = 1 * time.Second
	a := newNode(t, node.WithDialTimeout(timeout))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-accepted
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})

	id := randomPeerID(t)
	target := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", l.Addr().(*net.TCPAddr).Port, id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err = a.Connect(ctx, target)
	d := time.Since(start)
	if err == nil {
		t.Fatal("connected to a peer that never answers")
	}
	if !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), id.String()) {
		t.Errorf("error %q: want it to say %s is unreachable", err, id)
	}
	if d > timeout+time.Second {
		t.Errorf("gave up after %v, dial timeout %v", d, timeout)
	}
}

func TestSameToolNameOnTwoServersIsAmbiguousUntilNamed(t *testing.T) {
	b := newNode(t)
	other := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "other", Version: "1"}, nil)
	sdkmcp.AddTool(other, &sdkmcp.Tool{Name: "echo"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, echoOut, error) {
		caller, _ := identity.Remote(ctx)
		return nil, echoOut{Text: "other:" + in.Text, Caller: caller.String()}, nil
	})
	if err := b.Share("other", other); err != nil {
		t.Fatal(err)
	}
	a := newNode(t)
	connect(t, a, b)

	_, err := a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "echo", map[string]any{"text": "hi"})
	if err == nil {
		t.Fatal("an ambiguous tool name was called")
	}
	for _, want := range []string{"ambiguous", "node/echo", "other/echo"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	res, err := a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "other/echo", map[string]any{"text": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := res.StructuredContent.(map[string]any)
	if out["text"] != "other:hi" || out["caller"] != a.ID().String() {
		t.Errorf("other/echo answered %+v, want other:hi from caller %s", out, a.ID())
	}
	if err := callEcho(t, a, b, "node/echo", "hi"); err != nil {
		t.Error(err)
	}
}

func TestHandlerSeesTheAuthenticatedCaller(t *testing.T) {
	b := newNode(t)
	type who struct {
		Caller string `json:"caller"`
		Known  bool   `json:"known"`
	}
	node.AddTool(b, &sdkmcp.Tool{Name: "whoami"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, who, error) {
		p, ok := identity.Remote(ctx)
		return nil, who{Caller: p.String(), Known: ok}, nil
	})
	callers := []*node.Node{newNode(t), newNode(t)}
	var wg sync.WaitGroup
	for _, from := range callers {
		connect(t, from, b)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				res, err := from.CallTool(ctxFor(t, 5*time.Second), b.ID(), "whoami", nil)
				if err != nil {
					t.Error(err)
					return
				}
				out, _ := res.StructuredContent.(map[string]any)
				if out["known"] != true || out["caller"] != from.ID().String() {
					t.Errorf("handler saw caller %v (known %v), want %s", out["caller"], out["known"], from.ID())
					return
				}
			}
		}()
	}
	wg.Wait()
}

// addBlockTool gives n a tool that signals started and then waits for its
// context to end, reporting the end on canceled.
func addBlockTool(n *node.Node) (started, canceled chan struct{}) {
	started, canceled = make(chan struct{}, 16), make(chan struct{}, 16)
	node.AddTool(n, &sdkmcp.Tool{Name: "block"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, echoOut, error) {
		started <- struct{}{}
		select {
		case <-ctx.Done():
			canceled <- struct{}{}
			return nil, echoOut{}, ctx.Err()
		case <-time.After(30 * time.Second):
			return nil, echoOut{Text: "never canceled"}, nil
		}
	})
	return started, canceled
}

// eventDeadline is how long the fault tests wait for an event that should
// follow at once: long enough for a loaded machine under the race detector
// (3 s was not), where a missing event still fails the test.
const eventDeadline = 20 * time.Second

func waitFor(t *testing.T, c chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(eventDeadline):
		t.Fatalf("%s did not happen within %v", what, eventDeadline)
	}
}

func TestCallerGivingUpCancelsTheHandler(t *testing.T) {
	for _, version := range []string{"2025-11-25", "2026-07-28"} {
		t.Run(version, func(t *testing.T) {
			b := newNode(t)
			started, canceled := addBlockTool(b)
			a := newNode(t, node.WithProtocolVersion(version))
			connect(t, a, b)
			mustEcho(t, a, b, "warm up")

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := a.CallTool(ctx, b.ID(), "block", nil)
				done <- err
			}()
			waitFor(t, started, "the handler's start")
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("canceled call returned %v, want context.Canceled", err)
				}
			case <-time.After(eventDeadline):
				t.Fatalf("canceled call still waiting after %v", eventDeadline)
			}
			waitFor(t, canceled, "the serving handler's cancellation")
			mustEcho(t, a, b, "same session, next call")
		})
	}
}

func TestCallerClosingMidCallEndsTheHandler(t *testing.T) {
	b := newNode(t)
	started, canceled := addBlockTool(b)
	a := newNode(t)
	connect(t, a, b)

	done := make(chan error, 1)
	go func() {
		_, err := a.CallTool(context.Background(), b.ID(), "block", nil)
		done <- err
	}()
	waitFor(t, started, "the handler's start")
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case <-canceled:
	case <-time.After(eventDeadline):
		t.Errorf("the serving handler was not canceled within %v", eventDeadline)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("call of a closed node succeeded")
		}
	case <-time.After(eventDeadline):
		t.Errorf("call still waiting %v after its node closed", eventDeadline)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(eventDeadline):
		t.Errorf("Close of the calling node hangs on its in-flight call after %v", eventDeadline)
	}
	c := newNode(t)
	connect(t, c, b)
	mustEcho(t, c, b, "b still serves")
}
