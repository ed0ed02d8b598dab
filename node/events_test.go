package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/events/feed"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// collector gathers the events a subscription delivers.
type collector struct {
	ch chan events.Event
}

func subscribe(t *testing.T, n *node.Node, from *node.Node, name string, where string) (*feed.Subscription, *collector) {
	t.Helper()
	c := &collector{ch: make(chan events.Event, 100)}
	opts := feed.Options{Name: name, Deliver: func(_ context.Context, e events.Event) { c.ch <- e },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	if where != "" {
		opts.Where = json.RawMessage(where)
	}
	sub, err := n.Subscribe(from.ID(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	eventually(t, 10*time.Second, "the subscription to "+name+" is active", func() bool { return sub.Status().Connected })
	return sub, c
}

func (c *collector) next(t *testing.T) (events.Event, map[string]any) {
	t.Helper()
	select {
	case e := <-c.ch:
		var d map[string]any
		json.Unmarshal(e.Data, &d)
		return e, d
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return events.Event{}, nil
}

func (c *collector) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case e := <-c.ch:
		t.Fatalf("unexpected event %s %s", e.Name, e.Data)
	case <-time.After(d):
	}
}

// A shared program's resource update is an event on the node that shares
// it, which a peer subscribed to gets: the node subscribes to the
// program's resources through its own session. The program is shared in
// shared mode, one process for every caller, so that A's call changes the
// resource the node watches; in isolated mode (the default) each caller's
// process has resources of its own, and the node's session sees only its
// own process's updates.
func TestSharedProgramResourceUpdateIsAnEvent(t *testing.T) {
	a, b := newNode(t), newNode(t)
	connect(t, a, b)
	shareCalc(t, b, &syncBuffer{}, node.ShareMode(relay.Shared))
	_, c := subscribe(t, a, b, events.ResourceUpdated, `{"server":"calc"}`)
	// The node subscribes to the program's resources on its own.
	eventually(t, 10*time.Second, "b watches calc://readme", func() bool {
		if _, err := a.CallServerTool(context.Background(), b.ID(), "calc", "touch", struct{}{}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-c.ch:
			c.ch <- e
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	})
	e, d := c.next(t)
	if e.Name != events.ResourceUpdated || d["server"] != "calc" || d["uri"] != "calc://readme" || e.Source != b.ID().String() {
		t.Fatalf("event %s %v from %s", e.Name, d, e.Source)
	}
}

// A Go tool author declares an event type and emits from a handler; a
// root task that ends is an event with its cause; peers joining and
// leaving are events; subscribing to the node itself works without a
// stream.
func TestEmitTaskEndedAndPeers(t *testing.T) {
	a, b := newNode(t), newNode(t)
	if err := b.DeclareEvent(events.Type{Name: "invoice.paid", Description: "An invoice was paid."}); err != nil {
		t.Fatal(err)
	}
	if err := b.DeclareEvent(events.Type{Name: "mesh.fake"}); err == nil {
		t.Error("a reserved name was declared")
	}
	node.AddTool(b, &sdkmcp.Tool{Name: "pay"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, any, error) {
		_, err := b.Emit(ctx, events.Occurrence{Name: "invoice.paid", ID: "inv-" + in.Text, Data: map[string]string{"invoice": in.Text}})
		return nil, nil, err
	})
	joined := make(chan events.Event, 10)
	sub, err := b.Subscribe(b.ID(), feed.Options{Name: events.PeerJoined, Deliver: func(_ context.Context, e events.Event) { joined <- e }})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	eventually(t, 5*time.Second, "the local subscription is active", func() bool { return sub.Status().Connected })
	connect(t, a, b)
	select {
	case e := <-joined:
		if !strings.Contains(string(e.Data), a.ID().String()) {
			t.Errorf("joined: %s", e.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no mesh.peer.joined")
	}

	_, paid := subscribe(t, a, b, "invoice.paid", "")
	_, ended := subscribe(t, b, b, events.TaskEnded, `{"tool":"pay"}`)
	cause := &tasks.Cause{Event: "x.y", ID: "e-1", Source: a.ID().String(), Trigger: "t", Depth: 2}
	ctx := tasks.WithCause(context.Background(), cause)
	if _, err := b.CallServerTool(ctx, b.ID(), transport.DefaultServer, "pay", echoIn{Text: "42"}); err != nil {
		t.Fatal(err)
	}
	e, d := paid.next(t)
	if e.ID != "inv-42" || d["invoice"] != "42" || e.Depth() != 3 {
		t.Errorf("invoice.paid: %s %v depth %d; want inv-42, depth 3 (the cause's + 1)", e.ID, d, e.Depth())
	}
	e, d = ended.next(t)
	cd, _ := d["cause"].(map[string]any)
	if d["state"] != "completed" || d["role"] != "call" || cd["eventId"] != "e-1" || e.Depth() != 3 {
		t.Errorf("task ended: %v depth %d", d, e.Depth())
	}
	ended.none(t, 100*time.Millisecond) // the served task below it is no root
}

// Subscribing is a grant: a closed node refuses it; a grant of the event
// admits it; a resource event about a resource the peer may not see does
// not reach it; the card lists the event types some peer may subscribe
// to.
func TestEventGrants(t *testing.T) {
	b := newNode(t)
	a := newNode(t)
	connect(t, a, b)
	pol := func(src string) *policy.Policy {
		p, err := policy.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	b.SetPolicy(policy.Closed())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if types, err := a.EventTypes(ctx, b.ID()); err != nil || len(types) != 0 {
		t.Fatalf("events/list on a closed node: %v %v", types, err)
	}
	sub, err := a.Subscribe(b.ID(), feed.Options{Name: events.ResourceUpdated, Deliver: func(context.Context, events.Event) {}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "refused", func() bool {
		return strings.Contains(sub.Status().LastError, "-32012") || strings.Contains(sub.Status().LastError, "not permitted")
	})
	sub.Close()

	b.Server().AddResource(&sdkmcp.Resource{URI: "doc://public", Name: "public"}, readText("p"))
	b.Server().AddResource(&sdkmcp.Resource{URI: "doc://secret", Name: "secret"}, readText("s"))
	b.SetPolicy(pol(fmt.Sprintf(`{"grants": [
		{"peers": [%q], "events": ["mcp.resource.*"]},
		{"peers": [%q], "server": "node", "resources": ["doc://public"]}]}`, a.ID(), a.ID())))
	types, err := a.EventTypes(ctx, b.ID())
	if err != nil || len(types) != 1 || types[0].Name != events.ResourceUpdated {
		t.Fatalf("events/list with a grant: %v %v", types, err)
	}
	_, c := subscribe(t, a, b, events.ResourceUpdated, "")
	for _, uri := range []string{"doc://secret", "doc://public"} {
		b.Server().ResourceUpdated(ctx, &sdkmcp.ResourceUpdatedNotificationParams{URI: uri})
	}
	// b watches its own server's resources once they are listed: retry
	// until the public one comes through.
	eventually(t, 10*time.Second, "the public resource's update", func() bool {
		select {
		case e := <-c.ch:
			if strings.Contains(string(e.Data), "secret") {
				t.Fatalf("a got an update of a resource it may not see: %s", e.Data)
			}
			return strings.Contains(string(e.Data), "doc://public")
		case <-time.After(200 * time.Millisecond):
			b.Server().ResourceUpdated(ctx, &sdkmcp.ResourceUpdatedNotificationParams{URI: "doc://secret"})
			b.Server().ResourceUpdated(ctx, &sdkmcp.ResourceUpdatedNotificationParams{URI: "doc://public"})
			return false
		}
	})
}

func readText(s string) sdkmcp.ResourceHandler {
	return func(_ context.Context, req *sdkmcp.ReadResourceRequest) (*sdkmcp.ReadResourceResult, error) {
		return &sdkmcp.ReadResourceResult{Contents: []*sdkmcp.ResourceContents{{URI: req.Params.URI, Text: s}}}, nil
	}
}
