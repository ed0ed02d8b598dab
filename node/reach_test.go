package node_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
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
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/reach"
	"github.com/mcpmesh/mcpmesh/tasks"
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

// noDirectFrom is a connection gater that keeps one peer to relayed
// connections: no direct connection to or from it.
type noDirectFrom struct{ p lpeer.ID }

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

func (g noDirectFrom) InterceptPeerDial(lpeer.ID) bool { return true }
func (g noDirectFrom) InterceptAddrDial(p lpeer.ID, a ma.Multiaddr) bool {
	return p != g.p || isCircuit(a)
}
func (g noDirectFrom) InterceptAccept(network.ConnMultiaddrs) bool { return true }
func (g noDirectFrom) InterceptSecured(_ network.Direction, p lpeer.ID, c network.ConnMultiaddrs) bool {
	return p != g.p || isCircuit(c.RemoteMultiaddr())
}
func (g noDirectFrom) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

func hasCircuit(addrs []ma.Multiaddr) bool {
	for _, a := range addrs {
		if isCircuit(a) {
			return true
		}
	}
	return false
}

// A node that cannot be dialed directly (C, as if on another network)
// reserves a slot with a relay it knows (B, whose relay service is on),
// announces addresses through it, and is called through it by a node that
// found its card (A), with no --share-peer anywhere. C has no public
// address: its reachability stays unknown, and it reserves all the same.
func TestRelayedCallToANodeThatCannotBeDialed(t *testing.T) {
	b := newNode(t, node.WithDiscovery(fastDiscovery), node.WithName("B"), node.WithRelayService(reach.RelayOn))
	a := newNode(t, node.WithDiscovery(fastDiscovery), node.WithName("A"))
	connect(t, a, b)
	relay := lpeer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}
	// C announces only an address nobody listens on (as a private address
	// on another network would be), and never connects to A directly.
	dead := ma.StringCast("/ip4/127.0.0.1/tcp/1")
	c := newNode(t, node.WithDiscovery(fastDiscovery), node.WithName("C"), node.WithRelays(relay),
		node.WithLibp2pOptions(
			libp2p.ConnectionGater(noDirectFrom{a.ID()}),
			libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return []ma.Multiaddr{dead} }),
		))

	eventually(t, 10*time.Second, "C announcing an address through B", func() bool { return hasCircuit(c.Host().Addrs()) })
	if st := c.Reachability(); len(st.Relays) != 1 || st.Relays[0].ID != b.ID().String() || st.Reachability != "unknown" {
		t.Fatalf("C's status: reachability %s (%s), relays %+v; want unknown, B", st.Reachability, st.DecidedBy, st.Relays)
	}
	eventually(t, 10*time.Second, "C's card with its relayed address, as A finds it", func() bool {
		card, err := a.Card(ctxFor(t, 2*time.Second), c.ID())
		return err == nil && hasCircuit(card.Multiaddrs())
	})

	res, err := a.CallTool(ctxFor(t, 10*time.Second), c.ID(), "echo", map[string]any{"text": "through B"})
	if err != nil {
		t.Fatalf("call A→C through B: %v", err)
	}
	if out, _ := res.StructuredContent.(map[string]any); out["caller"] != a.ID().String() || out["text"] != "through B" {
		t.Fatalf("call A→C through B: %+v", res.StructuredContent)
	}
	var seen bool
	for _, p := range a.Reachability().Peers {
		if p.ID == c.ID().String() {
			seen = true
			if !p.Relayed || p.Via != b.ID().String() || p.Name != "C" {
				t.Errorf("A sees C as %+v; want relayed via B, named C", p)
			}
		}
	}
	if !seen {
		t.Errorf("A's status lists no connection to C: %+v", a.Reachability().Peers)
	}
	if !b.Reachability().Relaying {
		t.Errorf("B's status says it is not relaying")
	}
}

// switchable is a gater that keeps one peer to relayed connections until
// direct ones are allowed.
type switchable struct {
	noDirectFrom
	direct *atomic.Bool
}

func (g switchable) InterceptAddrDial(p lpeer.ID, a ma.Multiaddr) bool {
	return g.direct.Load() || g.noDirectFrom.InterceptAddrDial(p, a)
}

func (g switchable) InterceptSecured(d network.Direction, p lpeer.ID, c network.ConnMultiaddrs) bool {
	return g.direct.Load() || g.noDirectFrom.InterceptSecured(d, p, c)
}

// mcpStreamsOn counts the MCP streams on the connections to p that are, or
// are not, limited (relayed).
func mcpStreamsOn(n *node.Node, p lpeer.ID, limited bool) int {
	count := 0
	for _, c := range n.Host().Network().ConnsToPeer(p) {
		if c.Stat().Limited != limited {
			continue
		}
		for _, s := range c.GetStreams() {
			if strings.HasPrefix(string(s.Protocol()), "/mcpmesh/mcp/") {
				count++
			}
		}
	}
	return count
}

// When a direct connection comes up beside a relayed one (as hole punching
// makes one), the session on the relayed connection is retired: the call
// in flight on it finishes there, and the next call opens a session on the
// direct connection.
func TestRelayedSessionMovesToADirectConnection(t *testing.T) {
	b := newNode(t, node.WithRelayService(reach.RelayOn))
	a := newNode(t)
	connect(t, a, b)
	direct := new(atomic.Bool)
	c := newNode(t, node.WithRelays(lpeer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}),
		node.WithLibp2pOptions(libp2p.ConnectionGater(switchable{noDirectFrom{a.ID()}, direct})))
	gate := make(chan struct{})
	node.AddTool(c, &sdkmcp.Tool{Name: "wait"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, echoOut, error) {
		select {
		case <-gate:
			return nil, echoOut{Text: "finished"}, nil
		case <-ctx.Done():
			return nil, echoOut{}, ctx.Err()
		}
	})
	eventually(t, 10*time.Second, "C announcing an address through B", func() bool { return hasCircuit(c.Host().Addrs()) })
	var circuits []ma.Multiaddr
	for _, addr := range c.Host().Addrs() {
		if isCircuit(addr) {
			circuits = append(circuits, addr)
		}
	}
	if err := a.ConnectAddr(ctxFor(t, 5*time.Second), lpeer.AddrInfo{ID: c.ID(), Addrs: circuits}); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, a, c, "relayed")
	if mcpStreamsOn(a, c.ID(), true) != 1 {
		t.Fatalf("no MCP session on the relayed connection")
	}
	done := make(chan error, 1)
	go func() {
		res, err := a.CallTool(ctxFor(t, 20*time.Second), c.ID(), "wait", nil)
		if err == nil && res.IsError {
			err = errors.New(failure(res, nil))
		}
		done <- err
	}()
	eventually(t, 5*time.Second, "the call in flight", func() bool { return len(c.Tasks()) >= 2 })

	direct.Store(true)
	ctx := network.WithForceDirectDial(ctxFor(t, 5*time.Second), "test")
	if err := a.Host().Connect(ctx, lpeer.AddrInfo{ID: c.ID(), Addrs: c.Host().Network().ListenAddresses()}); err != nil {
		t.Fatalf("direct connection: %v", err)
	}
	mustEcho(t, a, c, "direct")
	if mcpStreamsOn(a, c.ID(), false) != 1 {
		t.Errorf("the call after the direct connection came up opened no session on it")
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("the call in flight on the relayed session: %v", err)
	}
	eventually(t, 5*time.Second, "the retired session closed", func() bool { return mcpStreamsOn(a, c.ID(), true) == 0 })
}

// A --share-peer relay watches its target while a relayed call is in
// flight: the target going silent fails the call at the root within
// seconds, with a failure that names the target (the lost hop), not the
// relay; the target's handler is cancelled as promptly.
func TestRelayedCallFailsNamingTheSilentTarget(t *testing.T) {
	b, c, link := cabled(t)
	started, canceled := addBlockTool(c)
	a := newNode(t)
	connect(t, a, b)
	if err := b.SharePeer("far", c.ID(), transport.DefaultServer); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		res, err := a.CallTool(ctxFor(t, 30*time.Second), b.ID(), "far/block", nil)
		if err == nil {
			if !res.IsError {
				err = errors.New("the call succeeded")
			} else if rm, ok := tasks.DecodeResult(res.Meta); !ok || rm.FailedAt == nil || rm.FailedAt.Peer != c.ID().String() {
				err = fmt.Errorf("failure %q names %+v, want %s", failure(res, nil), rm.FailedAt, c.ID())
			} else if !strings.Contains(failure(res, nil), c.ID().String()) {
				err = fmt.Errorf("failure %q does not name %s", failure(res, nil), c.ID())
			} else {
				t.Logf("root sees: %s", failure(res, nil))
			}
			done <- err
			return
		}
		done <- fmt.Errorf("the call failed without naming its hop: %w", err)
	}()
	waitFor(t, started, "the target's handler start")
	link.Freeze()
	const deadline = 15 * time.Second
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(deadline):
		t.Fatalf("the root's call still waiting %v after the target went silent", deadline)
	}
	select {
	case <-canceled:
	case <-time.After(deadline):
		t.Fatalf("the target's handler still running %v after its caller went silent", deadline)
	}
}
