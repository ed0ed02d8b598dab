package console_test

import (
	"context"
	"os"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/console"
	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// libp2p and the DHT keep a few process-wide workers.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// testMesh is three real nodes on loopback, each connected to the others:
// alpha (the console's node, closed: it grants bravo its echo only), bravo
// and charlie (open). alpha's plan calls bravo's relay, which calls
// charlie's leaf, which waits until its context ends: a console call of
// alpha's plan makes a tree of three hops (alpha → alpha in memory → bravo
// → charlie) whose leaf runs until the tree is cancelled.
type testMesh struct {
	a, b, c *node.Node
	// leafStarted and leafCancelled get the leaf task's ID when its
	// handler starts and when it sees its context end.
	leafStarted, leafCancelled chan string
}

type topicIn struct {
	Topic string `json:"topic" jsonschema:"what to plan"`
	Depth int    `json:"depth,omitempty" jsonschema:"how deep to look"`
}

type echoIn struct {
	Text string `json:"text"`
}

func newTestMesh(t testing.TB) *testMesh {
	t.Helper()
	m := &testMesh{leafStarted: make(chan string, 16), leafCancelled: make(chan string, 16)}
	start := func(name string, opts ...node.Option) *node.Node {
		opts = append([]node.Option{
			node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"),
			node.WithDialTimeout(3 * time.Second),
			node.WithName(name),
			node.WithDescription("The " + name + " node of the console test."),
			node.WithDiscovery(discovery.Config{MDNS: false}),
		}, opts...)
		n, err := node.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := n.Close(); err != nil {
				t.Errorf("close %s: %v", name, err)
			}
		})
		node.AddTool(n, &sdkmcp.Tool{Name: "echo", Description: "Echoes text."},
			func(ctx context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, any, error) {
				return text(in.Text), nil, nil
			})
		return n
	}
	m.b = start("bravo", node.WithOpen())
	m.c = start("charlie", node.WithOpen())
	pol, err := policy.Parse([]byte(`{"grants": [{"peers": ["` + m.b.ID().String() + `"], "server": "node", "tools": ["echo"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	m.a = start("alpha", node.WithPolicy(pol))

	node.AddTool(m.a, &sdkmcp.Tool{Name: "plan", Description: "Plans a topic with the mesh's help."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in topicIn) (*sdkmcp.CallToolResult, any, error) {
			res, err := m.a.CallServerTool(ctx, m.b.ID(), transport.DefaultServer, "relay", in)
			return res, nil, err
		})
	node.AddTool(m.a, &sdkmcp.Tool{Name: "secret", Description: "Nobody but this node may call it."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, any, error) {
			return text("the secret"), nil, nil
		})
	node.AddTool(m.b, &sdkmcp.Tool{Name: "relay", Description: "Passes a topic on to charlie."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in topicIn) (*sdkmcp.CallToolResult, any, error) {
			res, err := m.b.CallServerTool(ctx, m.c.ID(), transport.DefaultServer, "leaf", in)
			return res, nil, err
		})
	node.AddTool(m.c, &sdkmcp.Tool{Name: "leaf", Description: "Researches a topic until cancelled."},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, in topicIn) (*sdkmcp.CallToolResult, any, error) {
			id, _ := node.CurrentTask(ctx)
			if tok := req.Params.GetProgressToken(); tok != nil {
				req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Total: 3, Message: "reading about " + in.Topic})
			}
			m.leafStarted <- id
			<-ctx.Done()
			m.leafCancelled <- id
			return nil, nil, ctx.Err()
		})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pair := range [][2]*node.Node{{m.a, m.b}, {m.a, m.c}, {m.b, m.c}} {
		if _, err := pair[0].Connect(ctx, pair[1].Addrs()[0].String()); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func text(s string) *sdkmcp.CallToolResult {
	return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: s}}}
}

// startConsole serves alpha's console on loopback and returns its login URL.
func startConsole(t testing.TB, n *node.Node, opts console.Options) (*console.Server, string) {
	t.Helper()
	s := console.New(control.ConsoleNode(n, nil), opts)
	url, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close console: %v", err)
		}
	})
	return s, url
}

// screenshotDir is where the browser tests save their screenshots:
// $MCPMESH_SCREENSHOTS if set (CI keeps it as an artefact), else a folder
// of the test's own, removed after it.
func screenshotDir(t testing.TB) string {
	if d := os.Getenv("MCPMESH_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}
