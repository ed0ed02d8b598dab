package bench

import (
	"context"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

// relayCall calls C's echo from A: directly, or through B re-sharing C's
// server (--share-peer), A connected only to B.
func relayCall(tb testing.TB, viaRelay bool, callerOpts ...node.Option) call {
	tb.Helper()
	ctx := context.Background()
	a, b, c := newNode(tb, callerOpts...), newNode(tb), newNode(tb)
	if _, err := b.Connect(ctx, c.Addrs()[0].String()); err != nil {
		tb.Fatal(err)
	}
	if !viaRelay {
		if _, err := a.Connect(ctx, c.Addrs()[0].String()); err != nil {
			tb.Fatal(err)
		}
		return func(ctx context.Context) error {
			return checkEcho(a.CallServerTool(ctx, c.ID(), transport.DefaultServer, "echo", echoArgs))
		}
	}
	if err := b.SharePeer("far", c.ID(), transport.DefaultServer); err != nil {
		tb.Fatal(err)
	}
	if _, err := a.Connect(ctx, b.Addrs()[0].String()); err != nil {
		tb.Fatal(err)
	}
	return func(ctx context.Context) error {
		return checkEcho(a.CallServerTool(ctx, b.ID(), "far", "echo", echoArgs))
	}
}

// BenchmarkRelay measures what one relay hop (--share-peer) adds to a call:
// the same call to C made directly and through B, in one run. B pumps the
// session message by message, decoding only the JSON-RPC envelope (and the
// _meta of a tools/call, to extend its task path).
func BenchmarkRelay(b *testing.B) {
	for _, c := range []struct {
		name string
		via  bool
		opts []node.Option
	}{
		{"direct", false, nil},
		{"via-relay", true, nil},
		{"direct-no-delegation", false, []node.Option{node.WithoutDelegation()}},
		{"via-relay-no-delegation", true, []node.Option{node.WithoutDelegation()}},
	} {
		b.Run(c.name, func(b *testing.B) { timeCalls(b, relayCall(b, c.via, c.opts...)) })
	}
}

func TestRelayPaths(t *testing.T) {
	for _, via := range []bool{false, true} {
		call := relayCall(t, via)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for range 3 {
			if err := call(ctx); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
	}
}
