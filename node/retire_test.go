package node_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/node"
)

// heldCaller is a node whose user answers a program's question only when
// the test lets it: the program's "confirm" call stays in flight until then.
type heldCaller struct {
	*node.Node
	asked   chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHeldCaller(t *testing.T) *heldCaller {
	h := &heldCaller{asked: make(chan struct{}, 4), release: make(chan struct{})}
	h.Node = newNode(t, node.WithElicitationHandler(func(ctx context.Context, _ *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
		h.asked <- struct{}{}
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"ok": true}}, nil
	}))
	t.Cleanup(h.letGo) // before the node closes (cleanups run last first)
	return h
}

// letGo lets the user answer, once.
func (h *heldCaller) letGo() { h.once.Do(func() { close(h.release) }) }

// confirm calls calc's confirm on b in the background, and waits until the
// program has asked (the call is in flight).
func (h *heldCaller) confirm(t *testing.T, b *node.Node) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		res, err := h.CallTool(context.Background(), b.ID(), "confirm", map[string]string{"question": "go on?"})
		switch {
		case err != nil:
			done <- err
		case res.IsError:
			done <- errors.New(res.Content[0].(*sdkmcp.TextContent).Text)
		case res.Content[0].(*sdkmcp.TextContent).Text != "accept:true":
			done <- errors.New("unexpected answer: " + res.Content[0].(*sdkmcp.TextContent).Text)
		default:
			done <- nil
		}
	}()
	select {
	case <-h.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the program did not ask within 10s")
	}
	return done
}

// callHeldOnCalc starts a call of b's calc program by a that stays in
// flight until a.letGo.
func callHeldOnCalc(t *testing.T) (*heldCaller, *node.Node, <-chan error) {
	a := newHeldCaller(t)
	b := newNode(t)
	shareCalc(t, b, &syncBuffer{})
	connect(t, a.Node, b)
	return a, b, a.confirm(t, b)
}

// Removing a program's share gracefully: the node stops offering it at
// once, the call in flight finishes within the grace period, and the
// program's processes are gone when UnshareGracefully returns.
func TestUnshareGracefullyLetsCallsInFlightFinish(t *testing.T) {
	a, b, call := callHeldOnCalc(t)

	removed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		removed <- b.UnshareGracefully(ctx, "calc")
	}()
	eventually(t, 5*time.Second, "calc no longer shared", func() bool { return !slices.Contains(b.Shared(), "calc") })
	// A new call on the session in flight is refused while it drains.
	_, err := a.CallServerTool(context.Background(), b.ID(), "calc", "add", addIn{A: 1, B: 2})
	if err == nil || !strings.Contains(err.Error(), "being removed") {
		t.Fatalf("a new call while calc is being removed: %v", err)
	}
	select {
	case err := <-removed:
		t.Fatalf("UnshareGracefully returned (%v) while a call was in flight", err)
	default:
	}
	a.letGo()
	select {
	case err := <-call:
		if err != nil {
			t.Fatalf("the call in flight failed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight got no answer")
	}
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("UnshareGracefully did not return once the call was answered")
	}
	if len(b.Programs()) != 0 {
		t.Fatalf("programs after unshare: %+v", b.Programs())
	}
	// B ended A's session to calc as the unshare finished; a call made
	// before A has read that end goes out on it and reads "connection
	// lost" (true, and the call was not served): the next one opens a
	// session and is told why.
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, err = a.CallServerTool(context.Background(), b.ID(), "calc", "add", addIn{A: 1, B: 2})
		if err == nil || !strings.Contains(err.Error(), "connection lost") || time.Now().After(deadline) {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), `shares no server named "calc"`) {
		t.Fatalf("call after unshare: %v", err)
	}
}

// A call still in flight when the grace period ends fails with an answer
// that says the server was removed, not a bare end of the session.
func TestUnshareGracefullyFailsCallsPastTheGracePeriod(t *testing.T) {
	_, b, call := callHeldOnCalc(t)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := b.UnshareGracefully(ctx, "calc"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-call:
		if err == nil || !strings.Contains(err.Error(), `no longer shares "calc"`) {
			t.Fatalf("the call past the grace period: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call past the grace period got no answer")
	}
}
