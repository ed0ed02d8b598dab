package console_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/console"
	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

var docsDir = flag.String("console.docs", "", "TestDocsScreenshots: the folder to write the README's screenshots to (e.g. ../docs)")

// TestDocsScreenshots makes the README's pictures of the console, from a
// mesh of real nodes: alpha (the console's), bravo, charlie and delta
// connected, foxtrot known from the DHT, mallory banned after too many
// refused calls; a three-hop call running, and one that failed at charlie.
//
//	go test ./console -run TestDocsScreenshots -console.docs ../docs
func TestDocsScreenshots(t *testing.T) {
	if *docsDir == "" {
		t.Skip("makes the README's screenshots: run with -console.docs DIR")
	}
	ctx := browser(t)
	m := newTestMesh(t)
	extra := func(name string, opts ...node.Option) *node.Node {
		opts = append([]node.Option{node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithName(name), node.WithOpen(),
			node.WithDescription("The " + name + " node."), node.WithDiscovery(discovery.Config{MDNS: false})}, opts...)
		n, err := node.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		if _, err := n.Connect(context.Background(), m.a.Addrs()[0].String()); err != nil {
			t.Fatal(err)
		}
		return n
	}
	d := extra("delta", node.WithTags("docs"))
	node.AddTool(d, &sdkmcp.Tool{Name: "translate", Description: "Translates text between languages."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, any, error) {
			return text(in.Text), nil, nil
		})
	node.AddTool(m.c, &sdkmcp.Tool{Name: "lookup", Description: "Looks a topic up in charlie's index."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in topicIn) (*sdkmcp.CallToolResult, any, error) {
			return nil, nil, errors.New("index unavailable: disk full")
		})
	node.AddTool(m.b, &sdkmcp.Tool{Name: "summarize", Description: "Summarizes what charlie's index says."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in topicIn) (*sdkmcp.CallToolResult, any, error) {
			res, err := m.b.CallServerTool(ctx, m.c.ID(), transport.DefaultServer, "lookup", in)
			return res, nil, err
		})
	// foxtrot was in the mesh and left: alpha knows it, its card is still
	// in the DHT.
	f := extra("foxtrot")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := m.b.Card(cctx, f.ID())
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("foxtrot's card never reached the DHT: %v", err)
		}
	}
	f.Close()
	// mallory calls what alpha does not grant it, and alpha's limits
	// count it out (as refusals over its limits would).
	mallory := extra("mallory")
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	mallory.CallServerTool(cctx, m.a.ID(), transport.DefaultServer, "secret", nil)
	cancel()
	for range 60 {
		m.a.Limits().Strike(mallory.ID(), "rate")
	}

	_, url := startConsole(t, m.a, console.Options{})
	base := strings.Split(url, "?")[0]
	p := &page{t: t, ctx: ctx, dir: t.TempDir()}
	save := func(name string) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot()) // the viewport: a laptop's screen
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(*docsDir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}

	// A failed tree, and a running one, made from the console's own node.
	cn := control.ConsoleNode(m.a, nil)
	cctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	cn.Call(cctx, m.b.ID().String(), "node", "summarize", []byte(`{"topic":"rivers"}`), func(string) {})
	cancel()
	running := make(chan string, 1)
	callCtx, stopCall := context.WithCancel(context.Background())
	callDone := make(chan struct{})
	go func() {
		defer close(callDone)
		cn.Call(callCtx, m.a.ID().String(), "node", "plan", []byte(`{"topic":"rivers of Europe"}`), func(id string) { running <- id })
	}()
	defer func() { stopCall(); <-callDone }()
	root := <-running
	<-m.leafStarted

	p.do("sign in", chromedp.Navigate(url))
	p.wait("six peers, named", `(() => {
		const names = [...document.querySelectorAll("svg g.node[data-peer] text.name")].map(e => e.textContent);
		return ["bravo", "charlie", "delta", "foxtrot", "mallory"].every(n => names.includes(n))
			&& document.querySelector("g.node-banned") && document.querySelector("g.node-known");
	})()`)
	p.do("select delta", chromedp.Click(fmt.Sprintf(`g[data-peer=%q]`, d.ID())))
	p.wait("delta's card", `document.querySelector("#peer-title")?.textContent === "delta" && document.body.innerText.includes("translate")`)
	save("console-mesh.png")

	p.do("open the tree", chromedp.Navigate(base+"#/tasks/"+root))
	p.wait("the running tree and the failed one", `document.querySelectorAll("[data-tree] li.tnode[data-state=working]").length === 4
		&& [...document.querySelectorAll("table.grid tbody tr")].some(r => r.innerText.includes("node/summarize") && r.innerText.includes("failed"))`)
	save("console-tasks.png")
}
