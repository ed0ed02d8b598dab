package node_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/mcpmesh/mcpmesh/internal/cable"
	"github.com/mcpmesh/mcpmesh/node"
)

// inboundOnlyFrom is a connection gater that accepts inbound connections
// from one IP address only (and any outbound one).
type inboundOnlyFrom struct{ ip net.IP }

func (g inboundOnlyFrom) InterceptPeerDial(lpeer.ID) bool               { return true }
func (g inboundOnlyFrom) InterceptAddrDial(lpeer.ID, ma.Multiaddr) bool { return true }
func (g inboundOnlyFrom) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}
func (g inboundOnlyFrom) InterceptSecured(network.Direction, lpeer.ID, network.ConnMultiaddrs) bool {
	return true
}
func (g inboundOnlyFrom) InterceptAccept(c network.ConnMultiaddrs) bool {
	ip, err := manet.ToIP(c.RemoteMultiaddr())
	return err == nil && ip.Equal(g.ip)
}

// cabled starts B, reachable only through a cable (a TCP forwarder that can
// be frozen) whose address is the only one it announces, as a node behind a
// port forward would, and A connected to it through the cable.
func cabled(t *testing.T, opts ...node.Option) (a, b *node.Node, link *cable.Cable) {
	t.Helper()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()
	from := net.ParseIP("127.0.0.3") // the cable's side of loopback: B accepts no one else
	link, err = cable.New(free.Addr().String(), &net.Dialer{LocalAddr: &net.TCPAddr{IP: from}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	via, err := manet.FromNetAddr(link.Addr())
	if err != nil {
		t.Fatal(err)
	}
	b = newNode(t, append(opts,
		node.WithListenAddrs(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)),
		node.WithLibp2pOptions(
			libp2p.ConnectionGater(inboundOnlyFrom{from}),
			libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return []ma.Multiaddr{via} }),
		))...)
	a = newNode(t, opts...)
	if err := a.ConnectAddr(context.Background(), lpeer.AddrInfo{ID: b.ID(), Addrs: []ma.Multiaddr{via}}); err != nil {
		t.Fatal(err)
	}
	return a, b, link
}

// A call whose link goes silent fails within seconds, naming the peer; the
// handler serving it is cancelled as promptly; once the link is back, the
// next call works. Without liveness checks, TCP would notice only after
// yamux's keep-alive (30 s and more).
func TestFrozenLinkFailsTheCallAndCancelsTheHandlerWithinSeconds(t *testing.T) {
	a, b, link := cabled(t)
	started, canceled := addBlockTool(b)
	mustEcho(t, a, b, "through the cable")

	done := make(chan error, 1)
	go func() {
		_, err := a.CallTool(ctxFor(t, 30*time.Second), b.ID(), "block", nil)
		done <- err
	}()
	waitFor(t, started, "the handler's start")
	link.Freeze()
	frozen := time.Now()

	const deadline = 15 * time.Second // the transport alone takes 30 s and more
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "connection lost") || !strings.Contains(err.Error(), b.ID().String()) {
			t.Fatalf("call over a frozen link: %v; want a lost connection to %s", err, b.ID())
		}
		t.Logf("call failed %v after the freeze: %v", time.Since(frozen).Round(time.Millisecond), err)
	case <-time.After(deadline):
		t.Fatalf("call over a frozen link still waiting after %v", deadline)
	}
	select {
	case <-canceled:
		t.Logf("handler cancelled %v after the freeze", time.Since(frozen).Round(time.Millisecond))
	case <-time.After(deadline - time.Since(frozen)):
		t.Fatalf("handler of the lost caller still running %v after the freeze", deadline)
	}
	if s := a.Liveness().Stats(); s.Losses == 0 {
		t.Errorf("caller's checker counted no loss: %+v", s)
	}
	if s := b.Liveness().Stats(); s.Losses == 0 {
		t.Errorf("server's checker counted no loss: %+v", s)
	}

	link.Thaw()
	if err := callEcho(t, a, b, "echo", "after the thaw"); err != nil {
		t.Fatalf("first call after the link healed: %v", err)
	}
}

// A mesh with no task running sends no pings: calls shorter than the
// interval send none either, and a peer is watched only while a call to it
// runs.
func TestIdleMeshSendsNoPings(t *testing.T) {
	a, b, c := newNode(t), newNode(t), newNode(t)
	connect(t, a, b)
	connect(t, b, c)
	connect(t, c, a)
	gate := make(chan struct{})
	node.AddTool(b, &sdkmcp.Tool{Name: "wait"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, echoOut, error) {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return nil, echoOut{Text: "done"}, nil
	})
	for i := range 20 {
		for _, p := range [][2]*node.Node{{a, b}, {b, c}, {c, a}, {b, a}} {
			mustEcho(t, p[0], p[1], "short call "+string(rune('a'+i)))
		}
	}
	for _, n := range []*node.Node{a, b, c} {
		if s := n.Liveness().Stats(); s.Pings != 0 || s.Watched != 0 {
			t.Fatalf("%s after short calls only: %+v, want no ping and no peer watched", n.Name(), s)
		}
	}

	// A call that lasts: its caller and its server watch each other.
	done := make(chan error, 1)
	go func() {
		_, err := a.CallTool(ctxFor(t, 30*time.Second), b.ID(), "wait", nil)
		done <- err
	}()
	eventually(t, 10*time.Second, "pings while a call runs", func() bool {
		return a.Liveness().Stats().Pings >= 2 && b.Liveness().Stats().Pings >= 2
	})
	if s := c.Liveness().Stats(); s.Pings != 0 || s.Watched != 0 {
		t.Errorf("c, with no work, pinged: %+v", s)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("the long call: %v", err)
	}
	eventually(t, 5*time.Second, "no peer watched once the call ended", func() bool {
		return a.Liveness().Stats().Watched == 0 && b.Liveness().Stats().Watched == 0
	})
}
