package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/test"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// fuzzStream is a network.Stream from a peer that sends fixed bytes, in
// chunks, and keeps what the node writes back. Only what a served session
// uses is implemented; anything else panics, which the fuzzer reports.
type fuzzStream struct {
	network.Stream
	conn  fuzzConn
	r     io.Reader
	mu    sync.Mutex
	out   bytes.Buffer
	ended bool
}

type fuzzConn struct {
	network.Conn
	remote lpeer.ID
}

func (c fuzzConn) RemotePeer() lpeer.ID { return c.remote }
func (c fuzzConn) ID() string           { return "fuzz" }

func (s *fuzzStream) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *fuzzStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return 0, network.ErrReset
	}
	return s.out.Write(p)
}
func (s *fuzzStream) Close() error                    { s.end(); return nil }
func (s *fuzzStream) Reset() error                    { s.end(); return nil }
func (s *fuzzStream) SetReadDeadline(time.Time) error { return nil }
func (s *fuzzStream) Conn() network.Conn              { return s.conn }
func (s *fuzzStream) Protocol() protocol.ID           { return transport.ProtocolID(transport.DefaultServer) }
func (s *fuzzStream) end()                            { s.mu.Lock(); s.ended = true; s.mu.Unlock() }
func (s *fuzzStream) written() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.out.Bytes())
}
func (s *fuzzStream) SetDeadline(time.Time) error      { return nil }
func (s *fuzzStream) SetWriteDeadline(time.Time) error { return nil }

type chunks struct {
	data []byte
	n    int
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), c.n, len(c.data))
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

// servedSessionCorpus is real traffic of a served session: the handshake of
// both protocol versions, calls with a task context and a delegation, a
// cancellation, MCP Tasks, the ids of issue 14, a half-close.
var servedSessionCorpus = []string{
	`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"f","version":"1"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":1,"method":"tools/list"}
{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}
`,
	`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"f","version":"1"}}}
{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"},"_meta":{"io.mcpmesh/task":"0123456789abcdef0123456789abcdef 0123456789abcdef0123456789abcdef - 1000 500 0 PEER","progressToken":"t"}}}
{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/call","params":{"name":"echo","arguments":{"text":"b"}}}
{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"echo","arguments":{"text":"c"}}}
{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo","arguments":{"text":"d"}}}
{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo","arguments":{"text":"e"}}}
{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}
`,
	`{"jsonrpc":"2.0","id":"d","method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}},"io.modelcontextprotocol/clientInfo":{"name":"f","version":"1"}}}}
{"jsonrpc":"2.0","id":"c","method":"tools/call","params":{"name":"echo","arguments":{"text":"t"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}},"io.modelcontextprotocol/clientInfo":{"name":"f","version":"1"},"io.mcpmesh/task":"0123456789abcdef0123456789abcde0 0123456789abcdef0123456789abcdef - 3 0 1 PEER"}}}
{"jsonrpc":"2.0","id":"g","method":"tasks/get","params":{"taskId":"0123456789abcdef0123456789abcde0"}}
{"jsonrpc":"2.0","id":"h","method":"mcpmesh/tasks/tree","params":{"taskId":"0123456789abcdef0123456789abcde0"}}
`,
	`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"f","version":"1"}}}
{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x","_":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},"_meta":{"io.mcpmesh/delegation":"AAAA"}}
{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"x://y"}}
{"jsonrpc":"2.0","id":5,"method":"prompts/get","params":{"name":"p"}}
{"jsonrpc":"2.0","id":7,"result":{}}
`,
	"\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ini",
}

// FuzzServedSession drives the whole inbound path of a session a node
// serves with any bytes: frames (size, values, depth, budget), ids, then the
// trust layer (policy, delegation, limits, audit), the task layer (guards,
// registry, MCP Tasks) and a handler. Whatever comes in, the session ends
// (no hang), the node writes only JSON-RPC, every answer carries an id the
// peer sent (byte for byte) or null, and everything the session held is
// given back: its memory budget, its calls in flight, its tasks.
func FuzzServedSession(f *testing.F) {
	for _, s := range servedSessionCorpus {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(7))
	}
	remote := test.RandPeerIDFatal(f)
	p, err := policy.Parse([]byte(`{"grants":[{"peers":["` + remote.String() + `"],"tools":["echo"],"resources":["x://*"]}]}`))
	if err != nil {
		f.Fatal(err)
	}
	n, err := New(WithListenAddrs("/ip4/127.0.0.1/tcp/0"), WithPolicy(p), WithAuditFile(""), WithLimits(limits.Config{
		// Small bounds, so that inputs reach them.
		MaxMessageValues: 200, MaxMessageDepth: 32, MaxBytesPerPeer: 1 << 20, MaxBytesInFlight: 2 << 20, WindowPerSession: 4,
		Rate: -1, Strikes: -1,
	}))
	if err != nil {
		f.Fatal(err)
	}
	defer n.Close()
	type echoIn struct {
		Text string `json:"text"`
	}
	AddTool(n, &sdkmcp.Tool{Name: "echo"}, func(_ context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, echoIn, error) {
		return nil, in, nil
	})
	serve := n.serve(transport.DefaultServer, n.own)
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		data = bytes.ReplaceAll(data, []byte("PEER"), []byte(remote.String()))
		s := &fuzzStream{conn: fuzzConn{remote: remote}, r: &chunks{data: data, n: 1 + int(chunk)%64*64}}
		done := make(chan struct{})
		go func() {
			defer close(done)
			serve(s)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the session did not end within 10s of its input's end (%d bytes)", len(data))
		}
		sent := map[string]bool{}
		for _, line := range bytes.Split(data, []byte("\n")) {
			if _, raw, err := sdkcompat.DecodeFrame(bytes.TrimSpace(line)); err == nil && raw != nil {
				sent[string(raw)] = true
			}
		}
		for _, line := range bytes.Split(s.written(), []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			msg, raw, err := sdkcompat.DecodeFrame(line)
			if err != nil && bytes.HasPrefix(line, []byte(`{"jsonrpc":"2.0","id":null,"error":{`)) {
				continue // an error answer to a request with a null id (the SDK decodes none)
			}
			if err != nil {
				t.Fatalf("the node wrote %q: %v", line, err)
			}
			if _, ok := msg.(*jsonrpc.Response); ok && string(raw) != "null" && !sent[string(raw)] && !idIn(data, raw) {
				t.Fatalf("an answer with id %s, which the peer never sent: %.200s", raw, line)
			}
		}
		// What the session held is given back (detached MCP Tasks run
		// on: let them end first).
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := held(n, remote)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// held says what the node still holds for p, if anything.
func held(n *Node, p lpeer.ID) error {
	if m := n.limits.InFlight(); m != 0 {
		return fmt.Errorf("%d bytes of budget still held", m)
	}
	if c := n.limits.Calls(p); c != 0 {
		return fmt.Errorf("%d calls still counted in flight", c)
	}
	for _, t := range n.Tasks() {
		if t.State == tasks.Working {
			return fmt.Errorf("task %s still running", t.ID)
		}
	}
	if s := n.limits.Sessions(); s != 0 {
		return fmt.Errorf("%d sessions still in the table", s)
	}
	return nil
}

// idIn reports whether data holds raw as the value of an "id" key: the id
// of a line the conn refused before decoding it, which it answers by the id
// its scanner read.
func idIn(data, raw []byte) bool {
	return regexp.MustCompile(`"id"\s*:\s*` + regexp.QuoteMeta(string(raw))).Match(data)
}
