package limits

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/test"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// openInbound opens n inbound streams from p on rm and sets their protocol,
// as a host does once a stream's protocol is negotiated. It returns how
// many got through, and closes them when the test ends.
func openInbound(t *testing.T, rm network.ResourceManager, p peer.ID, proto protocol.ID, n int) int {
	t.Helper()
	ok := 0
	for range n {
		s, err := rm.OpenStream(p, network.DirInbound)
		if err != nil {
			continue
		}
		t.Cleanup(s.Done)
		if err := s.SetProtocol(proto); err != nil {
			continue
		}
		ok++
	}
	return ok
}

func TestResourceManagerLimitsMCPStreamsPerPeerAndServer(t *testing.T) {
	rm, err := ResourceManager(Config{MaxStreamsPerProtocolPeer: 4, MaxStreamsPerProtocol: 10, MaxStreamsPerPeer: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	a, b, c := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	srv, other := transport.ProtocolID("weather"), transport.ProtocolID("files")

	if got := openInbound(t, rm, a, srv, 6); got != 4 {
		t.Errorf("peer a got %d streams to one server, want 4", got)
	}
	// Each server is counted apart, and so is each peer.
	if got := openInbound(t, rm, a, other, 6); got != 4 {
		t.Errorf("peer a got %d streams to another server, want 4", got)
	}
	if got := openInbound(t, rm, b, srv, 4); got != 4 {
		t.Errorf("peer b got %d streams, want 4", got)
	}
	// All peers together: 10 per server.
	if got := openInbound(t, rm, c, srv, 4); got != 2 {
		t.Errorf("peer c got %d streams to a server with 8 of 10 taken, want 2", got)
	}
	// Protocols other than MCP keep libp2p's defaults.
	if got := openInbound(t, rm, c, "/other/1.0.0", 20); got != 20 {
		t.Errorf("peer c got %d streams of another protocol, want 20", got)
	}
}

func TestResourceManagerLimitsInboundStreamsPerPeer(t *testing.T) {
	rm, err := ResourceManager(Config{MaxStreamsPerPeer: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	a, b := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	if got := openInbound(t, rm, a, "/other/1.0.0", 40); got != 30 {
		t.Errorf("peer a got %d inbound streams, want 30", got)
	}
	if got := openInbound(t, rm, b, "/other/1.0.0", 30); got != 30 {
		t.Errorf("peer b got %d inbound streams, want 30", got)
	}
	// The per-server limit never exceeds the per-peer one.
	rm2, err := ResourceManager(Config{MaxStreamsPerPeer: 8, MaxStreamsPerProtocolPeer: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer rm2.Close()
	if got := openInbound(t, rm2, a, transport.ProtocolID("x"), 20); got != 8 {
		t.Errorf("got %d MCP streams with 8 per peer, want 8", got)
	}
}

// TestGaterKeepsABannedPeerOut runs two real hosts on loopback: a banned
// peer can neither connect to the node nor be dialed by it until its ban
// ends.
func TestGaterKeepsABannedPeerOut(t *testing.T) {
	lim, clk := newLimiter(t, Config{Strikes: 1, BanFor: time.Minute})
	rm, err := ResourceManager(Config{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ResourceManager(rm), libp2p.ConnectionGater(lim.Gater()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	other, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	lim.Strike(other.ID(), "bad frame")
	if _, ok := lim.Banned(other.ID()); !ok {
		t.Fatal("not banned")
	}
	if err := other.Connect(ctx, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err == nil {
		// The dialer may finish its side of the handshake before the node
		// refuses: the connection must not last.
		time.Sleep(100 * time.Millisecond)
		if h.Network().Connectedness(other.ID()) == network.Connected {
			t.Fatal("a banned peer connected")
		}
	}
	if err := h.Connect(ctx, peer.AddrInfo{ID: other.ID(), Addrs: other.Addrs()}); err == nil {
		t.Fatal("the node dialed a banned peer")
	}

	clk.advance(time.Minute)
	if err := other.Connect(network.WithForceDirectDial(ctx, "ban over"), peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
		t.Fatalf("connect after the ban: %v", err)
	}
	if _, err := other.NewStream(ctx, h.ID(), "/ipfs/id/1.0.0"); err != nil {
		t.Fatalf("stream after the ban: %v", err)
	}
}

func TestStreamsRefusedByTheResourceManagerAreStrikes(t *testing.T) {
	l, _ := newLimiter(t, Config{MaxStreamsPerProtocolPeer: 2, MaxStreamsPerPeer: 10, Strikes: 3})
	rm, err := l.ResourceManager()
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	a, b := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)

	// Outbound streams (the node's own calls, a relay's sessions) are
	// bounded per peer only, and never a strike against the peer.
	for range 9 {
		s, err := rm.OpenStream(b, network.DirOutbound)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Done()
		if err := s.SetProtocol(transport.ProtocolID("x")); err != nil {
			t.Fatalf("outbound MCP stream refused: %v", err)
		}
	}
	if _, banned := l.Banned(b); banned {
		t.Fatal("banned for the node's own streams")
	}

	if got := openInbound(t, rm, a, transport.ProtocolID("x"), 4); got != 2 {
		t.Fatalf("got %d inbound streams, want 2", got)
	}
	if _, banned := l.Banned(a); banned {
		t.Fatal("banned after 2 refused streams of 3 strikes")
	}
	openInbound(t, rm, a, "/other/1.0.0", 10) // 8 more of 10 per peer: 2 more strikes
	if _, banned := l.Banned(a); !banned {
		t.Fatal("not banned after 3 refused streams")
	}
}
