package console_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/console"
	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/mcp/ask"
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
// → charlie) whose leaf runs until the tree is cancelled. alpha's dinner
// calls bravo's dinner, which calls charlie's book, which asks the caller's
// user for a booking (elicitation), the question passed up two hops; ask
// asks alpha's caller directly (form mode, or URL mode with {"url": true}).
type testMesh struct {
	a, b, c *node.Node
	// leafStarted and leafCancelled get the leaf task's ID when its
	// handler starts and when it sees its context end.
	leafStarted, leafCancelled chan string
	// release lets ask, in URL mode, end: it says the sign-in completed
	// and waits for it.
	release chan struct{}
}

type topicIn struct {
	Topic string `json:"topic" jsonschema:"what to plan"`
	Depth int    `json:"depth,omitempty" jsonschema:"how deep to look"`
}

type echoIn struct {
	Text string `json:"text"`
}

type dinnerIn struct {
	Restaurant string `json:"restaurant" jsonschema:"where to book"`
}

type askIn struct {
	URL bool `json:"url,omitempty" jsonschema:"ask with a link (URL mode) rather than a form"`
}

// bookingSchema is what charlie's book asks for: a field of each kind.
var bookingSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"people":  map[string]any{"type": "integer", "title": "People", "description": "How many at the table", "minimum": 1, "maximum": 12},
		"name":    map[string]any{"type": "string", "title": "Name"},
		"terrace": map[string]any{"type": "boolean", "title": "On the terrace"},
		"time":    map[string]any{"type": "string", "title": "Time", "enum": []any{"19:00", "20:00", "21:00"}},
		"budget":  map[string]any{"type": "number", "title": "Budget per head"},
		"email":   map[string]any{"type": "string", "title": "Email", "format": "email"},
	},
	"required": []any{"people", "name", "time"},
}

// answerText says an elicitation's answer, as the tools return it.
func answerText(res *sdkmcp.ElicitResult) string {
	if res.Action != "accept" {
		return "not booked: the user chose " + res.Action
	}
	return fmt.Sprintf("booked for %v (name %v, time %v, terrace %v, budget %v)",
		res.Content["people"], res.Content["name"], res.Content["time"], res.Content["terrace"], res.Content["budget"])
}

func newTestMesh(t testing.TB) *testMesh {
	t.Helper()
	m := &testMesh{leafStarted: make(chan string, 16), leafCancelled: make(chan string, 16), release: make(chan struct{})}
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

	node.AddTool(m.a, &sdkmcp.Tool{Name: "dinner", Description: "Books dinner, through bravo and charlie."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in dinnerIn) (*sdkmcp.CallToolResult, any, error) {
			res, err := m.a.CallServerTool(ctx, m.b.ID(), transport.DefaultServer, "dinner", in)
			return res, nil, err
		})
	node.AddTool(m.b, &sdkmcp.Tool{Name: "dinner", Description: "Books dinner at charlie's."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in dinnerIn) (*sdkmcp.CallToolResult, any, error) {
			res, err := m.b.CallServerTool(ctx, m.c.ID(), transport.DefaultServer, "book", in)
			return res, nil, err
		})
	node.AddTool(m.c, &sdkmcp.Tool{Name: "book", Description: "Books a table, asking the caller's user twice."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in dinnerIn) (*sdkmcp.CallToolResult, any, error) {
			res, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{Message: "Book a table at " + in.Restaurant + " for how many people?", RequestedSchema: bookingSchema})
			if err != nil {
				return nil, nil, err
			}
			first := answerText(res)
			if res.Action != "accept" {
				return text(first), nil, nil
			}
			res, err = ask.Elicit(ctx, &sdkmcp.ElicitParams{Message: "Shall I confirm it?", RequestedSchema: map[string]any{
				"type": "object", "properties": map[string]any{"confirm": map[string]any{"type": "boolean", "title": "Confirm"}}}})
			if err != nil {
				return nil, nil, err
			}
			return text(fmt.Sprintf("%s; confirm: %s %v", first, res.Action, res.Content["confirm"])), nil, nil
		})
	node.AddTool(m.a, &sdkmcp.Tool{Name: "ask", Description: "Asks its caller one question."},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, in askIn) (*sdkmcp.CallToolResult, any, error) {
			p := &sdkmcp.ElicitParams{Message: "How many people?", RequestedSchema: bookingSchema}
			if in.URL {
				p = &sdkmcp.ElicitParams{Mode: "url", Message: "Sign in to book", URL: "https://example.com/signin", ElicitationID: "sign-in-1"}
			}
			res, err := ask.Elicit(ctx, p)
			if err != nil {
				return nil, nil, err
			}
			if in.URL && res.Action == "accept" {
				if err := req.Session.NotifyElicitationComplete(ctx, &sdkmcp.ElicitationCompleteParams{ElicitationID: p.ElicitationID}); err != nil {
					return nil, nil, err
				}
				select {
				case <-m.release:
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				}
				return text("signed in"), nil, nil
			}
			return text(answerText(res)), nil, nil
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
