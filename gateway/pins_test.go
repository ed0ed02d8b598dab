package gateway_test

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/node"
)

// withTool gives n a tool that answers "NAME: text".
func withTool(n *node.Node, name string) *node.Node {
	node.AddTool(n, &sdkmcp.Tool{Name: name}, func(_ context.Context, _ *sdkmcp.CallToolRequest, in textIn) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: name + ": " + in.Text}}}, nil, nil
	})
	return n
}

// pinHost is an SDK client session to a mesh-mode server of a, with the
// pin events it reported and the host's tools/list_changed notifications.
type pinHost struct {
	cs      *sdkmcp.ClientSession
	events  chan gateway.PinEvent
	changed chan struct{}
	seen    []gateway.PinEvent // events read, kept for later waits
}

func pinGateway(t *testing.T, a *node.Node, opts gateway.MeshOptions) *pinHost {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &pinHost{events: make(chan gateway.PinEvent, 100), changed: make(chan struct{}, 100)}
	opts.OnPin = func(e gateway.PinEvent) { h.events <- e }
	srv := gateway.NewMeshServer(ctx, a, opts)
	t.Cleanup(func() { cancel(); srv.Close() })
	st, ct := sdkmcp.NewInMemoryTransports()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "host"}, &sdkmcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *sdkmcp.ToolListChangedRequest) { h.changed <- struct{}{} },
	}).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	h.cs = cs
	return h
}

// tools lists the host's tools' names (one tools/list).
func (h *pinHost) tools(t *testing.T) []string {
	t.Helper()
	list, err := h.cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
	}
	return names
}

// waitTools waits until the host lists every name of want, and returns
// what it lists.
func (h *pinHost) waitTools(t *testing.T, want ...string) []string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		names := h.tools(t)
		if !slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(names, w) }) {
			return names
		}
		select {
		case <-h.changed:
		case <-deadline:
			t.Fatalf("the host lists %v, want %v among them", names, want)
		}
	}
}

// waitEvent waits for a pin event that match accepts (one already seen
// or one to come).
func (h *pinHost) waitEvent(t *testing.T, what string, match func(gateway.PinEvent) bool) gateway.PinEvent {
	t.Helper()
	for _, e := range h.seen {
		if match(e) {
			return e
		}
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-h.events:
			h.seen = append(h.seen, e)
			if match(e) {
				return e
			}
		case <-deadline:
			var said []string
			for _, e := range h.seen {
				said = append(said, e.String())
			}
			t.Fatalf("no pin event %s; saw %q", what, said)
		}
	}
}

func pinOf(t *testing.T, s string) gateway.Pin {
	t.Helper()
	p, err := gateway.ParsePin(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func short(p lpeer.ID) string { s := p.String(); return s[len(s)-8:] }

// A pinned tool is named LABEL.TOOL, LABEL the peer's own name made a
// valid MCP tool name; two pinned peers with the same name both take the
// end of their ID, and are said to.
func TestPinLabelIsThePeersName(t *testing.T) {
	a := newNode(t)
	c := withTool(newNode(t, node.WithName("Carol's laptop")), "translate")
	d1 := withTool(newNode(t, node.WithName("dup")), "echo")
	d2 := withTool(newNode(t, node.WithName("dup")), "echo")
	ctx := context.Background()
	for _, n := range []*node.Node{c, d1, d2} {
		if _, err := n.Connect(ctx, a.Addrs()[0].String()); err != nil {
			t.Fatal(err)
		}
	}
	h := pinGateway(t, a, gateway.MeshOptions{Pins: []gateway.Pin{
		pinOf(t, c.ID().String()+"/translate"),
		pinOf(t, d1.ID().String()+"/echo"),
		pinOf(t, d2.ID().String()+"/node/echo"),
	}})
	want := []string{"Carol-s-laptop.translate", "dup-" + short(d1.ID()) + ".echo", "dup-" + short(d2.ID()) + ".echo"}
	names := h.waitTools(t, want...)
	if len(names) != 3+len(want) {
		t.Fatalf("the host lists %v, want the three mesh tools and %v", names, want)
	}
	res, err := h.cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: want[2], Arguments: map[string]any{"text": "hi"}})
	if err != nil || res.IsError || res.Content[0].(*sdkmcp.TextContent).Text != "echo: hi" {
		t.Fatalf("call %s: %v %+v", want[2], err, res)
	}
	// Whichever of d1, d2 was listed first was renamed, and said so.
	h.waitEvent(t, "renaming the first dup", func(e gateway.PinEvent) bool { return e.Renamed == "dup.echo" })
}

// A pin that does not resolve is said, with why and what to do: a
// misspelt tool (with the near name), a peer not reachable.
func TestPinThatDoesNotResolveSaysWhy(t *testing.T) {
	a := newNode(t)
	c := withTool(newNode(t, node.WithName("carol")), "translate")
	if _, err := c.Connect(context.Background(), a.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	// c's own server and its share "other" both have "translate".
	other := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "other", Version: "1"}, nil)
	sdkmcp.AddTool(other, &sdkmcp.Tool{Name: "translate"}, func(context.Context, *sdkmcp.CallToolRequest, textIn) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{}, nil, nil
	})
	if err := c.Share("other", other); err != nil {
		t.Fatal(err)
	}
	nobody := newNode(t) // never connected: not reachable
	h := pinGateway(t, a, gateway.MeshOptions{Pins: []gateway.Pin{
		pinOf(t, c.ID().String()+"/translat"),
		pinOf(t, nobody.ID().String()+"/echo"),
		pinOf(t, c.ID().String()+"/translate"),
	}})
	e := h.waitEvent(t, "for the ambiguous tool", func(e gateway.PinEvent) bool { return strings.HasSuffix(e.Pin, "/translate") })
	for _, want := range []string{"ambiguous", "node/translate", "other/translate", "PEER/SERVER/TOOL"} {
		if e.Err == nil || !strings.Contains(e.String(), want) {
			t.Errorf("the ambiguous pin said %q; want it to say %q", e, want)
		}
	}
	e = h.waitEvent(t, "for the misspelt tool", func(e gateway.PinEvent) bool { return strings.HasSuffix(e.Pin, "/translat") })
	msg := e.String()
	for _, want := range []string{"not listed", `no tool named "translat"`, `did you mean "translate"?`, "mcpmesh tools " + c.ID().String()} {
		if !strings.Contains(msg, want) {
			t.Errorf("the misspelt pin said %q; want it to say %q", msg, want)
		}
	}
	e = h.waitEvent(t, "for the unreachable peer", func(e gateway.PinEvent) bool { return strings.HasPrefix(e.Pin, nobody.ID().String()) })
	if msg := e.String(); e.Err == nil || !strings.Contains(msg, "not reachable yet") || !strings.Contains(msg, "--peer") {
		t.Errorf("the unreachable peer's pin said %q", msg)
	}
}

// A pin whose peer comes later is listed as soon as the peer connects (not
// at the next timed try), and the host hears tools/list_changed.
func TestPinOfALatePeerAppears(t *testing.T) {
	a := newNode(t)
	c := withTool(newNode(t, node.WithName("carol")), "translate")
	// PinRetry a minute: only the peer's connecting can list it in time.
	h := pinGateway(t, a, gateway.MeshOptions{PinRetry: time.Minute, Pins: []gateway.Pin{pinOf(t, c.ID().String()+"/translate")}})
	h.waitEvent(t, "saying the peer is not there yet", func(e gateway.PinEvent) bool { return e.Err != nil })
	drainChanged(h)
	if _, err := c.Connect(context.Background(), a.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no tools/list_changed within 10s of the pinned peer connecting")
	}
	h.waitTools(t, "carol.translate")
	h.waitEvent(t, "saying it is listed", func(e gateway.PinEvent) bool { return e.Err == nil && e.Name == "carol.translate" })
}

func drainChanged(h *pinHost) {
	for {
		select {
		case <-h.changed:
		default:
			return
		}
	}
}

func TestParsePinChecksTheName(t *testing.T) {
	a := newNode(t)
	for _, bad := range []string{"my tool=" + a.ID().String() + "/x", a.ID().String() + "/"} {
		if _, err := gateway.ParsePin(bad); err == nil {
			t.Errorf("pin %q accepted", bad)
		}
	}
}

// A host's first tools/list waits for every pin's first try, at most
// PinWait: a pin whose peer does not answer (a listener that never speaks
// libp2p) is said to be still tried, and the list comes without it; the
// other pin, listed by then, is in it.
func TestFirstToolsListGivesUpOnAPinStillTried(t *testing.T) {
	a := newNode(t, node.WithDialTimeout(time.Minute))
	c := withTool(newNode(t, node.WithName("carol")), "translate")
	if _, err := c.Connect(context.Background(), a.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, conn) // read by the test once accepted is closed
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-accepted
		for _, conn := range held {
			conn.Close()
		}
	})
	silent := test.RandPeerIDFatal(t)
	addr, err := manet.FromNetAddr(l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	a.Host().Peerstore().AddAddr(silent, addr, time.Hour)

	h := pinGateway(t, a, gateway.MeshOptions{PinWait: 300 * time.Millisecond, Pins: []gateway.Pin{
		pinOf(t, c.ID().String()+"/translate"),
		pinOf(t, silent.String()+"/echo"),
	}})
	names := h.tools(t)
	if !slices.Contains(names, "carol.translate") || slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, ".echo") }) {
		t.Errorf("the first tools/list has %v: want carol.translate, without the silent peer's echo", names)
	}
	e := h.waitEvent(t, "saying the first tools/list went without the silent pin", func(e gateway.PinEvent) bool {
		return strings.HasPrefix(e.Pin, silent.String()) && e.Err != nil
	})
	for _, want := range []string{"still being tried after 300ms", "first tools/list went without it", "list_changed"} {
		if !strings.Contains(e.String(), want) {
			t.Errorf("the silent pin said %q; want %q", e, want)
		}
	}
}
