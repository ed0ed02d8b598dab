package node_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

// A peer can answer identify before it shares its servers (a node that has
// just started); libp2p then pushes its new protocols a moment later.
// Servers waits for that push rather than calling the peer no mcpmesh node
// (the flake of TestAnswerOverTheCallersLimitFailsTheCallNotTheNode).
func TestServersWaitsForServersAnnouncedJustAfterIdentify(t *testing.T) {
	a, h, ctx := nodeAndPlainPeer(t)
	ids := a.Host().(interface{ IDService() identify.IDService }).IDService()
	for _, c := range a.Host().Network().ConnsToPeer(h.ID()) {
		<-ids.IdentifyWait(c)
	}
	if got := a.ServersKnown(h.ID()); len(got) != 0 {
		t.Fatalf("the peer shares %v before it shares anything", got)
	}

	// The peer shares a server now, and a asks at once.
	h.SetStreamHandler(transport.ProtocolID("late"), func(s network.Stream) { s.Reset() })
	servers, err := a.Servers(ctx, h.ID())
	if err != nil || !slices.Equal(servers, []string{"late"}) {
		t.Fatalf("Servers = %v, %v; want [late]", servers, err)
	}
}

// A peer that shares no server is told apart, within a bounded wait.
func TestServersOfAPeerThatSharesNone(t *testing.T) {
	a, h, ctx := nodeAndPlainPeer(t)
	start := time.Now()
	_, err := a.Servers(ctx, h.ID())
	if err == nil || !strings.Contains(err.Error(), "shares no MCP server") {
		t.Fatalf("Servers of a plain libp2p peer: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to say so", d)
	}
}

// nodeAndPlainPeer returns a node connected to a plain libp2p host (one
// that shares nothing), and a context for the test.
func nodeAndPlainPeer(t *testing.T) (*node.Node, host.Host, context.Context) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	a := newNode(t)
	ctx := ctxFor(t, 10*time.Second)
	if err := a.ConnectAddr(ctx, lpeer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return a, h, ctx
}
