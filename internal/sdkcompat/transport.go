package sdkcompat

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// OnConnect returns a transport that tells f of each connection t makes,
// before the SDK uses it. The SDK has no call to send one session a
// notification of the caller's choosing (a list_changed for that peer
// alone): writing it to the captured connection does, between the SDK's
// own messages, provided the connection serializes its writes (as
// transport.StreamTransport's does). ctx is the one given to Connect.
func OnConnect(t sdkmcp.Transport, f func(ctx context.Context, c sdkmcp.Connection)) sdkmcp.Transport {
	return capturing{Transport: t, f: f}
}

type capturing struct {
	sdkmcp.Transport
	f func(context.Context, sdkmcp.Connection)
}

func (t capturing) Connect(ctx context.Context) (sdkmcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err == nil {
		t.f(ctx, c)
	}
	return c, err
}

// WatchReads returns a transport whose connections show watch every message
// they read, on the reading goroutine, before the SDK handles it. The SDK's
// client hands notifications to their handlers on goroutines of their own
// but gives a result straight to the waiting call, so a notification read
// before a result may be handled after it; watching reads is how a caller
// learns, in order, what is still on its way to the handlers
// (TestSDKHandlesNotificationsAfterTheResult pins that behaviour).
func WatchReads(t sdkmcp.Transport, watch func(jsonrpc.Message)) sdkmcp.Transport {
	return watching{Transport: t, watch: watch}
}

type watching struct {
	sdkmcp.Transport
	watch func(jsonrpc.Message)
}

func (t watching) Connect(ctx context.Context) (sdkmcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return watchingConn{c, t.watch}, nil
}

type watchingConn struct {
	sdkmcp.Connection
	watch func(jsonrpc.Message)
}

func (c watchingConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.Connection.Read(ctx)
	if err == nil {
		c.watch(msg)
	}
	return msg, err
}
