package node_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

func TestMain(m *testing.M) {
	if os.Getenv(stdioServerEnv) != "" {
		runStdioServer() // this process is a shared program started by a test
		return
	}
	goleak.VerifyTestMain(m,
		// libp2p and the DHT keep a few process-wide workers.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

type echoIn struct {
	Text string `json:"text" jsonschema:"the text to echo"`
}

type echoOut struct {
	Text   string `json:"text"`
	Caller string `json:"caller"`
}

// newNode starts a node on loopback TCP with an echo tool that reports its
// caller, closed when the test ends.
func newNode(t *testing.T, opts ...node.Option) *node.Node {
	t.Helper()
	opts = append([]node.Option{node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithDialTimeout(3 * time.Second), node.WithOpen()}, opts...)
	n, err := node.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	node.AddTool(n, &sdkmcp.Tool{Name: "echo", Description: "echoes text"},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, echoOut, error) {
			caller, _ := identity.Remote(ctx)
			return nil, echoOut{Text: in.Text, Caller: caller.String()}, nil
		})
	return n
}

func connect(t *testing.T, from, to *node.Node) {
	t.Helper()
	if _, err := from.Connect(context.Background(), to.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
}

func TestBothRolesConcurrentlyOverOneConnection(t *testing.T) {
	a, b := newNode(t), newNode(t)
	connect(t, a, b)
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		for _, pair := range [][2]*node.Node{{a, b}, {b, a}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				from, to := pair[0], pair[1]
				text := fmt.Sprintf("hello %d", i)
				res, err := from.CallTool(ctx, to.ID(), "echo", map[string]any{"text": text})
				if err != nil {
					errs <- err
					return
				}
				out, _ := res.StructuredContent.(map[string]any)
				if res.IsError || out["text"] != text || out["caller"] != from.ID().String() {
					errs <- fmt.Errorf("%s→%s: got %+v", from.ID(), to.ID(), res.StructuredContent)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(a.Host().Network().ConnsToPeer(b.ID())); n != 1 {
		t.Errorf("a has %d connections to b, want 1", n)
	}
	if n := len(a.Host().Network().ConnsToPeer(b.ID())[0].GetStreams()); n > 4 {
		t.Errorf("%d streams on the connection; sessions are not being reused", n)
	}
}
