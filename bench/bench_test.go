// Package bench compares the cost of one MCP tools/call made through an
// mcpmesh node with the same call over the MCP SDK's own transports, a raw
// libp2p round trip of the same bytes, and an A2A message echoed with the
// official A2A Go SDK.
//
//	go test -run XXX -bench . -benchmem ./bench/
//
// Every benchmark checks the answer of every call it times. See README.md for
// what each row measures.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2aclient"
	"github.com/a2aproject/a2a-go/a2asrv"
	"github.com/a2aproject/a2a-go/a2asrv/eventqueue"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// loopback is where every libp2p host of these benchmarks listens.
const loopback = "/ip4/127.0.0.1/tcp/0"

// echoText is the text every call sends and expects back.
const echoText = "hello, mesh"

// modern is the newest MCP protocol version; mcpmesh nodes ask for
// node.DefaultProtocolVersion unless told otherwise.
const modern = "2026-07-28"

type echoIn struct {
	Text string `json:"text" jsonschema:"the text to echo"`
}

// echoArgs are the arguments of every MCP call: the same value, so every
// path marshals the same bytes.
var echoArgs = echoIn{Text: echoText}

// echo is the tool every MCP path serves: it returns its input text as one
// text content block, with no structured output.
func echo(_ context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, any, error) {
	return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: in.Text}}}, nil, nil
}

func echoTool() *sdkmcp.Tool { return &sdkmcp.Tool{Name: "echo", Description: "echoes text"} }

// checkEcho verifies one tool call's answer.
func checkEcho(res *sdkmcp.CallToolResult, err error) error {
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("tool error: %+v", res.Content)
	}
	if len(res.Content) != 1 {
		return fmt.Errorf("got %d content blocks, want 1", len(res.Content))
	}
	tc, ok := res.Content[0].(*sdkmcp.TextContent)
	if !ok || tc.Text != echoText {
		return fmt.Errorf("got %#v, want text %q", res.Content[0], echoText)
	}
	return nil
}

// call makes one checked call on a path that is set up.
type call func(ctx context.Context) error

// path is one way of making the echo call.
type path struct {
	name  string
	setup func(testing.TB) call
}

var paths = []path{
	{"mesh", func(tb testing.TB) call { return meshCall(tb, false) }},
	{"mesh-CallTool", func(tb testing.TB) call { return meshCall(tb, true) }},
	{"mesh-no-trust", func(tb testing.TB) call { return meshCall(tb, false, node.WithoutDelegation()) }},
	{"mesh-closed-policy", meshClosedCall},
	{"mesh-" + modern, func(tb testing.TB) call { return meshCall(tb, false, node.WithProtocolVersion(modern)) }},
	{"streamable-http", func(tb testing.TB) call { return httpCall(tb, node.DefaultProtocolVersion) }},
	{"streamable-http-" + modern, func(tb testing.TB) call { return httpCall(tb, modern) }},
	{"in-memory", func(tb testing.TB) call { return inMemoryCall(tb, node.DefaultProtocolVersion) }},
	{"in-memory-" + modern, func(tb testing.TB) call { return inMemoryCall(tb, modern) }},
	{"raw-libp2p-rtt", rawLibp2pCall},
	{"a2a-jsonrpc", a2aCall},
}

// BenchmarkCall times one echo call on each path, the session (or
// connection) being open before the timer starts.
func BenchmarkCall(b *testing.B) {
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) { timeCalls(b, p.setup(b)) })
	}
}

// BenchmarkNewPeerFirstCall times reaching a peer never met before: a fresh
// caller node (made with the timer stopped) connects to a serving node, opens
// an MCP session and makes its first call.
func BenchmarkNewPeerFirstCall(b *testing.B) {
	ctx := context.Background()
	server := newNode(b)
	target := server.Addrs()[0].String()
	b.ReportAllocs()
	var phases [3]time.Duration
	for b.Loop() {
		b.StopTimer()
		caller, err := startNode()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t, err := firstCall(ctx, caller, target)
		b.StopTimer()
		if cerr := caller.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			b.Fatal(err)
		}
		for i := range phases {
			phases[i] += t[i]
		}
		b.StartTimer()
	}
	for i, unit := range []string{"connect-µs", "session-µs", "call-µs"} {
		b.ReportMetric(float64(phases[i].Microseconds())/float64(b.N), unit)
	}
}

// firstCall connects caller to target, opens a session to its default
// server and calls echo, and returns how long each of the three steps took.
// CallServerTool would open the session itself; opening it first only
// splits the time.
func firstCall(ctx context.Context, caller *node.Node, target string) (took [3]time.Duration, err error) {
	start := time.Now()
	id, err := caller.Connect(ctx, target)
	if err != nil {
		return took, err
	}
	took[0] = time.Since(start)
	start = time.Now()
	if _, err := caller.Session(ctx, id, transport.DefaultServer); err != nil {
		return took, err
	}
	took[1] = time.Since(start)
	start = time.Now()
	res, err := caller.CallServerTool(ctx, id, transport.DefaultServer, "echo", echoArgs)
	took[2] = time.Since(start)
	return took, checkEcho(res, err)
}

// BenchmarkResolveTool times what CallTool adds to CallServerTool: finding
// which server of the peer has the tool, from the caller's cached tool index
// (no message crosses the network once the index is warm).
func BenchmarkResolveTool(b *testing.B) {
	ctx := context.Background()
	caller, server := meshPair(b)
	id := server.ID()
	if _, err := caller.ResolveTool(ctx, id, "echo"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		t, err := caller.ResolveTool(ctx, id, "echo")
		if err != nil {
			b.Fatal(err)
		}
		if t.Server != transport.DefaultServer || t.Name != "echo" {
			b.Fatalf("resolved to %s", t.Ref())
		}
	}
}

// concurrency is how many goroutines call at once in BenchmarkConcurrent64.
const concurrency = 64

// BenchmarkConcurrent64 makes calls from one node to another from 64
// goroutines at once (the next multiple of GOMAXPROCS if 64 is not one),
// over the caller's one pooled session, and reports the throughput in
// calls/s.
func BenchmarkConcurrent64(b *testing.B) {
	ctx := context.Background()
	caller, server := meshPair(b)
	id := server.ID()
	if err := checkEcho(caller.CallServerTool(ctx, id, transport.DefaultServer, "echo", echoArgs)); err != nil {
		b.Fatal(err)
	}
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((concurrency + procs - 1) / procs)
	b.ReportAllocs()
	cpu := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := checkEcho(caller.CallServerTool(ctx, id, transport.DefaultServer, "echo", echoArgs)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportCPU(b, cpu)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

// reportCPU reports the process CPU time per operation since start: on a
// busy machine it varies much less than the wall time per operation.
// timeCalls times c, warmed up first (caches, pools, lazy schemas, open
// sessions), with its allocations and the process's CPU time per call.
func timeCalls(b *testing.B, c call) {
	ctx := context.Background()
	if err := c(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		if err := c(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportCPU(b, cpu)
}

func reportCPU(b *testing.B, start time.Duration) {
	if used := cpuTime() - start; start > 0 && b.N > 0 {
		b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// TestPaths runs every path once, so that plain `go test` exercises every
// benchmark's setup and check.
func TestPaths(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := p.setup(t)
			for range 3 {
				if err := c(ctx); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestNewPeerFirstCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server := newNode(t)
	for range 2 {
		caller := newNode(t)
		if _, err := firstCall(ctx, caller, server.Addrs()[0].String()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConcurrent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	caller, server := meshPair(t)
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	for range concurrency {
		wg.Go(func() {
			errs <- checkEcho(caller.CallServerTool(ctx, server.ID(), transport.DefaultServer, "echo", echoArgs))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestCapture checks that the bytes the raw round trip sends are those of a
// real mesh call.
func TestCapture(t *testing.T) {
	req, resp := captureCall(t)
	t.Logf("request  %d bytes: %s", len(req), req)
	t.Logf("response %d bytes: %s", len(resp), resp)
	if !bytes.Contains(req, []byte(`"tools/call"`)) || !bytes.Contains(resp, []byte(echoText)) {
		t.Fatalf("captured the wrong messages")
	}
}

// --- (a) mesh ---

// newNode starts a node on loopback TCP serving the echo tool, closed when
// tb ends (closing it twice is harmless).
func newNode(tb testing.TB, opts ...node.Option) *node.Node {
	tb.Helper()
	n, err := startNode(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Errorf("close node: %v", err)
		}
	})
	return n
}

// startNode starts a node on loopback TCP serving the echo tool.
func startNode(opts ...node.Option) (*node.Node, error) {
	// Benchmarks call faster than the default limits (1000 calls/s per peer,
	// 250 calls/s and 64 in flight per principal).
	unlimited := node.WithLimits(limits.Config{Rate: -1, PrincipalRate: -1, MaxConcurrentPerPrincipal: -1})
	opts = append([]node.Option{node.WithListenAddrs(loopback), node.WithDialTimeout(5 * time.Second), node.WithOpen(), unlimited}, opts...)
	n, err := node.New(opts...)
	if err != nil {
		return nil, err
	}
	node.AddTool(n, echoTool(), echo)
	return n, nil
}

// meshPair returns two connected nodes: caller (made with opts) and server.
func meshPair(tb testing.TB, opts ...node.Option) (caller, server *node.Node) {
	tb.Helper()
	server = newNode(tb)
	caller = newNode(tb, opts...)
	if _, err := caller.Connect(context.Background(), server.Addrs()[0].String()); err != nil {
		tb.Fatal(err)
	}
	return caller, server
}

// meshCall calls the echo tool of one node from another: by SERVER and TOOL
// (CallServerTool), or by tool name alone (CallTool, resolved through the
// caller's cached tool index) if resolve is set.
func meshCall(tb testing.TB, resolve bool, opts ...node.Option) call {
	caller, server := meshPair(tb, opts...)
	id := server.ID()
	if _, err := caller.Session(context.Background(), id, transport.DefaultServer); err != nil {
		tb.Fatal(err)
	}
	if resolve {
		return func(ctx context.Context) error {
			return checkEcho(caller.CallTool(ctx, id, "echo", echoArgs))
		}
	}
	return func(ctx context.Context) error {
		return checkEcho(caller.CallServerTool(ctx, id, transport.DefaultServer, "echo", echoArgs))
	}
}

// meshClosedCall is meshCall against a closed node whose policy has 20
// grants in 3 groups of 10 peers, the caller in one of them: the cost of a
// real policy next to the open one of the other mesh paths.
func meshClosedCall(tb testing.TB) call {
	caller, server := meshPair(tb)
	var groups [3][]string
	for g := range groups {
		for range 10 {
			groups[g] = append(groups[g], randomPeer(tb).String())
		}
	}
	groups[1][5] = caller.ID().String()
	var grants []string
	for i := range 19 {
		grants = append(grants, fmt.Sprintf(`{"peers": ["g%d"], "server": "node", "tools": ["tool%d", "other_*"]}`, i%3, i))
	}
	grants = append(grants, `{"peers": ["g1"], "for": ["*"], "server": "node", "tools": ["echo"]}`)
	g, err := json.Marshal(map[string][]string{"g0": groups[0], "g1": groups[1], "g2": groups[2]})
	if err != nil {
		tb.Fatal(err)
	}
	pol, err := policy.Parse(fmt.Appendf(nil, `{"groups": %s, "grants": [%s]}`, g, strings.Join(grants, ",")))
	if err != nil {
		tb.Fatal(err)
	}
	server.SetPolicy(pol)
	id := server.ID()
	return func(ctx context.Context) error {
		return checkEcho(caller.CallServerTool(ctx, id, transport.DefaultServer, "echo", echoArgs))
	}
}

func randomPeer(tb testing.TB) lpeer.ID {
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := lpeer.IDFromPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// --- (b) Streamable HTTP and (c) in-memory, plain SDK ---

func sdkServer() *sdkmcp.Server {
	s := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "bench-server", Version: "v0"}, nil)
	sdkmcp.AddTool(s, echoTool(), echo)
	return s
}

func sdkClient() *sdkmcp.Client {
	return sdkmcp.NewClient(&sdkmcp.Implementation{Name: "bench-client", Version: "v0"},
		&sdkmcp.ClientOptions{Capabilities: &sdkmcp.ClientCapabilities{}})
}

// sessionCall returns a call on an open client session, closed when tb ends.
func sessionCall(tb testing.TB, cs *sdkmcp.ClientSession) call {
	tb.Cleanup(func() { cs.Close() })
	return func(ctx context.Context) error {
		return checkEcho(cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "echo", Arguments: echoArgs}))
	}
}

func httpCall(tb testing.TB, version string) call {
	tb.Helper()
	s := sdkServer()
	h := sdkmcp.NewStreamableHTTPHandler(func(*http.Request) *sdkmcp.Server { return s },
		&sdkmcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	tb.Cleanup(tr.CloseIdleConnections)
	cs, err := sdkClient().Connect(context.Background(), &sdkmcp.StreamableClientTransport{
		Endpoint:             srv.URL,
		HTTPClient:           &http.Client{Transport: tr},
		DisableStandaloneSSE: true,
	}, &sdkmcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		tb.Fatal(err)
	}
	return sessionCall(tb, cs)
}

func inMemoryCall(tb testing.TB, version string) call {
	tb.Helper()
	ctx := context.Background()
	st, ct := sdkmcp.NewInMemoryTransports()
	ss, err := sdkServer().Connect(ctx, st, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ss.Close() })
	cs, err := sdkClient().Connect(ctx, ct, &sdkmcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		tb.Fatal(err)
	}
	return sessionCall(tb, cs)
}

// --- (d) raw libp2p round trip of a mesh call's bytes ---

var (
	captureOnce          sync.Once
	capturedReq, capResp []byte
	captureErr           error
)

// captureCall returns the request line and the response line, newline
// included, of one echo call between two mesh nodes, as they cross the
// stream (transport.StreamTransport writes jsonrpc.EncodeMessage plus '\n').
func captureCall(tb testing.TB) (req, resp []byte) {
	tb.Helper()
	captureOnce.Do(func() { capturedReq, capResp, captureErr = capture() })
	if captureErr != nil {
		tb.Fatal(captureErr)
	}
	return capturedReq, capResp
}

func capture() (req, resp []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var nodes []*node.Node
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for range 2 {
		n, err := startNode()
		if err != nil {
			return nil, nil, err
		}
		nodes = append(nodes, n)
	}
	caller, server := nodes[0], nodes[1]
	if err := caller.Host().Connect(ctx, lpeer.AddrInfo{ID: server.ID(), Addrs: server.Host().Addrs()}); err != nil {
		return nil, nil, err
	}
	s, err := caller.Host().NewStream(ctx, server.ID(), transport.ProtocolID(transport.DefaultServer))
	if err != nil {
		return nil, nil, err
	}
	rec := &recorder{inner: &transport.StreamTransport{Stream: s}}
	cs, err := sdkClient().Connect(ctx, rec, &sdkmcp.ClientSessionOptions{ProtocolVersion: node.DefaultProtocolVersion})
	if err != nil {
		s.Reset()
		return nil, nil, err
	}
	defer cs.Close()
	if err := checkEcho(cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "echo", Arguments: echoArgs})); err != nil {
		return nil, nil, err
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.req == nil || rec.resp == nil {
		return nil, nil, errors.New("tools/call not seen")
	}
	return rec.req, rec.resp, nil
}

// recorder is a transport that keeps the encoded tools/call request and its
// response.
type recorder struct {
	inner sdkmcp.Transport

	mu        sync.Mutex
	id        jsonrpc.ID
	req, resp []byte
}

func (r *recorder) Connect(ctx context.Context) (sdkmcp.Connection, error) {
	c, err := r.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &recordingConn{Connection: c, r: r}, nil
}

type recordingConn struct {
	sdkmcp.Connection
	r *recorder
}

func (c *recordingConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	if m, ok := msg.(*jsonrpc.Request); ok && m.Method == "tools/call" {
		data, err := jsonrpc.EncodeMessage(msg)
		if err != nil {
			return err
		}
		c.r.mu.Lock()
		c.r.id, c.r.req = m.ID, append(data, '\n')
		c.r.mu.Unlock()
	}
	return c.Connection.Write(ctx, msg)
}

func (c *recordingConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.Connection.Read(ctx)
	if m, ok := msg.(*jsonrpc.Response); ok && err == nil {
		c.r.mu.Lock()
		if c.r.req != nil && c.r.resp == nil && m.ID == c.r.id {
			data, err := jsonrpc.EncodeMessage(msg)
			if err != nil {
				c.r.mu.Unlock()
				return nil, err
			}
			c.r.resp = append(data, '\n')
		}
		c.r.mu.Unlock()
	}
	return msg, err
}

const rawProto = protocol.ID("/mcpmesh-bench/raw-echo/1.0.0")

func newHost(tb testing.TB) host.Host {
	tb.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings(loopback))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

// rawLibp2pCall writes a mesh call's request line on one libp2p stream
// between two plain hosts; the other end reads it and writes back the
// response line, which the caller reads and compares.
func rawLibp2pCall(tb testing.TB) call {
	tb.Helper()
	req, resp := captureCall(tb)
	server, client := newHost(tb), newHost(tb)
	server.SetStreamHandler(rawProto, func(s network.Stream) {
		defer s.Close()
		r := bufio.NewReaderSize(s, 16<<10)
		for {
			if _, err := r.ReadSlice('\n'); err != nil {
				return
			}
			if _, err := s.Write(resp); err != nil {
				s.Reset()
				return
			}
		}
	})
	ctx := context.Background()
	if err := client.Connect(ctx, lpeer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		tb.Fatal(err)
	}
	s, err := client.NewStream(ctx, server.ID(), rawProto)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	r := bufio.NewReaderSize(s, 16<<10)
	return func(context.Context) error {
		if _, err := s.Write(req); err != nil {
			return err
		}
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if !bytes.Equal(line, resp) {
			return fmt.Errorf("got %q, want %q", line, resp)
		}
		return nil
	}
}

// --- (e) A2A over JSON-RPC, official A2A Go SDK ---

// echoAgent answers every message with a message of the same parts.
type echoAgent struct{}

func (echoAgent) Execute(ctx context.Context, reqCtx *a2asrv.RequestContext, q eventqueue.Queue) error {
	return q.Write(ctx, a2a.NewMessage(a2a.MessageRoleAgent, reqCtx.Message.Parts...))
}

func (echoAgent) Cancel(context.Context, *a2asrv.RequestContext, eventqueue.Queue) error { return nil }

func a2aCall(tb testing.TB) call {
	tb.Helper()
	srv := httptest.NewServer(a2asrv.NewJSONRPCHandler(a2asrv.NewHandler(echoAgent{})))
	tb.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	tb.Cleanup(tr.CloseIdleConnections)
	client, err := a2aclient.NewFromEndpoints(context.Background(),
		[]a2a.AgentInterface{{URL: srv.URL, Transport: a2a.TransportProtocolJSONRPC}},
		a2aclient.WithJSONRPCTransport(&http.Client{Transport: tr}))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Destroy() })
	return func(ctx context.Context) error {
		res, err := client.SendMessage(ctx, &a2a.MessageSendParams{
			Message: a2a.NewMessage(a2a.MessageRoleUser, a2a.TextPart{Text: echoText}),
		})
		if err != nil {
			return err
		}
		msg, ok := res.(*a2a.Message)
		if !ok || len(msg.Parts) != 1 {
			return fmt.Errorf("got %#v, want one message with one part", res)
		}
		var text string
		switch p := msg.Parts[0].(type) {
		case a2a.TextPart:
			text = p.Text
		case *a2a.TextPart:
			text = p.Text
		}
		if text != echoText || msg.Role != a2a.MessageRoleAgent {
			return fmt.Errorf("got %#v, want the agent's text %q", msg, echoText)
		}
		return nil
	}
}
