package relay

import (
	"context"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
)

// getLessConn is the HTTP side of a session whose client has not opened
// its GET stream yet: a message that belongs to no request is rejected as
// the SDK's transport rejects it, until the stream opens (here, after the
// third rejection).
type getLessConn struct {
	mu       sync.Mutex
	rejected int
	written  []jsonrpc.Message
}

func (c *getLessConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (c *getLessConn) Write(_ context.Context, msg jsonrpc.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rejected < 3 {
		c.rejected++
		return &jsonrpc.Error{Code: sdkcompat.RejectedCode, Message: "no stream"}
	}
	c.written = append(c.written, msg)
	return nil
}

func (c *getLessConn) Close() error      { return nil }
func (c *getLessConn) SessionID() string { return "" }

// A server that asks for roots as soon as it is initialized races the
// client opening its GET stream: the question waits for the stream (within
// getStreamGrace of the session's start) instead of being refused, as over
// stdio it always arrives.
func TestRoutedConnHoldsAServerRequestUntilTheGETStreamOpens(t *testing.T) {
	down, up := &getLessConn{}, &getLessConn{rejected: 3}
	c := NewRoutedConn(down, up)
	id, _ := jsonrpc.MakeID(float64(1))
	if err := c.Write(context.Background(), &jsonrpc.Request{ID: id, Method: "roots/list"}); err != nil {
		t.Fatalf("write: %v", err)
	}
	if len(down.written) != 1 || down.written[0].(*jsonrpc.Request).Method != "roots/list" {
		t.Fatalf("the client got %v, want the roots/list request", down.written)
	}
	if len(up.written) != 0 {
		t.Fatalf("the server was answered %v, want nothing (its question was delivered)", up.written)
	}
}
