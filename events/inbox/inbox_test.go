package inbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/events/inbox"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/node"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

func newNode(t *testing.T) *node.Node {
	t.Helper()
	n, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func call(t *testing.T, cs *sdkmcp.ClientSession, tool string, args any) (string, bool) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdkmcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatal(err)
	}
	return res.Content[0].(*sdkmcp.TextContent).Text, res.IsError
}

// A host in mesh mode subscribes with one tool and waits for events with
// another: what it gets is the event, its source and its data, in order.
func TestHostWaitsForEvents(t *testing.T) {
	a, b := newNode(t), newNode(t)
	if _, err := a.Connect(context.Background(), b.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	if err := b.DeclareEvent(events.Type{Name: "job.done"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	srv := gateway.NewMeshServer(ctx, a, gateway.MeshOptions{Events: true})
	defer srv.Close()
	st, ct := sdkmcp.NewInMemoryTransports()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "host"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	list, _ := cs.ListTools(ctx, nil)
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "mesh_subscribe") || !strings.Contains(strings.Join(names, ","), "mesh_events") {
		t.Fatalf("mesh mode lists %v", names)
	}

	out, isErr := call(t, cs, "mesh_subscribe", map[string]any{"event": "job.done", "from": b.ID().String(), "where": map[string]any{"ok": true}})
	var sub struct{ ID string }
	if json.Unmarshal([]byte(out), &sub); isErr || sub.ID == "" {
		t.Fatalf("mesh_subscribe: %s", out)
	}
	if again, _ := call(t, cs, "mesh_subscribe", map[string]any{"event": "job.done", "from": b.ID().String(), "where": map[string]any{"ok": true}}); again != out {
		t.Errorf("the same subscription twice: %s then %s", out, again)
	}
	// Nothing yet: the wait ends with the subscription's state.
	out, _ = call(t, cs, "mesh_events", map[string]any{"wait_s": 1})
	if !strings.Contains(out, `"events":[]`) || !strings.Contains(out, sub.ID) {
		t.Errorf("an empty wait: %s", out)
	}
	done := make(chan string, 1)
	go func() {
		res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "mesh_events", Arguments: map[string]any{"wait_s": 20}})
		if err != nil {
			done <- err.Error()
			return
		}
		done <- res.Content[0].(*sdkmcp.TextContent).Text
	}()
	for i, ok := range []bool{false, true, true} {
		b.Emit(ctx, events.Occurrence{Name: "job.done", Data: map[string]any{"i": i, "ok": ok}})
	}
	var batch inbox.Batch
	select {
	case out = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("mesh_events did not return")
	}
	if err := json.Unmarshal([]byte(out), &batch); err != nil || len(batch.Events) == 0 {
		t.Fatalf("mesh_events: %s", out)
	}
	if e := batch.Events[0]; e.From != b.ID().String() || e.Name != "job.done" || e.Sub != sub.ID || string(e.Data) != `{"i":1,"ok":true}` {
		t.Errorf("first event: %+v", e)
	}
	if _, isErr := call(t, cs, "mesh_events", map[string]any{"ids": []string{"sub-nope"}, "wait_s": 1}); !isErr {
		t.Error("an unknown subscription was waited on")
	}
}

// Bounds: subscriptions per inbox; a bad filter or name is refused.
func TestInboxBounds(t *testing.T) {
	a := newNode(t)
	if err := a.DeclareEvent(events.Type{Name: "job.done"}); err != nil {
		t.Fatal(err)
	}
	ib := inbox.New(a)
	defer ib.Close()
	ctx := context.Background()
	for i := range inbox.MaxSubscriptions {
		if _, err := ib.Subscribe(ctx, "self", "job.done", json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ib.Subscribe(ctx, "self", "job.done", json.RawMessage(`{"i":99}`)); err == nil || !strings.Contains(err.Error(), "too many") {
		t.Errorf("subscription %d: %v", inbox.MaxSubscriptions+1, err)
	}
	for _, bad := range [][2]string{{"job done", ""}, {"job.done", `{"a":{"b":1}}`}, {"job.done", `[`}} {
		if _, err := ib.Subscribe(ctx, "self", bad[0], json.RawMessage(bad[1])); err == nil {
			t.Errorf("Subscribe(%q, %s) accepted", bad[0], bad[1])
		}
	}
	if _, err := ib.Subscribe(ctx, "nobody", "job.done", nil); err == nil {
		t.Error("a bad peer was accepted")
	}
}
