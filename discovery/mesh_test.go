package discovery

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

// meshNode is a libp2p host on loopback running a discovery Service that
// offers one tool.
type meshNode struct {
	key   crypto.PrivKey
	id    lpeer.ID
	tool  string
	h     host.Host
	svc   *Service
	dials *dialCounter // what the service dialed
}

// dialCounter counts, per peer, the calls that may dial it: Connect, and
// NewStream to a peer not connected.
type dialCounter struct {
	host.Host
	mu sync.Mutex
	n  map[lpeer.ID]int
}

func (d *dialCounter) count(p lpeer.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == nil {
		d.n = map[lpeer.ID]int{}
	}
	d.n[p]++
}

func (d *dialCounter) Connect(ctx context.Context, pi lpeer.AddrInfo) error {
	if d.Network().Connectedness(pi.ID) != network.Connected {
		d.count(pi.ID)
	}
	return d.Host.Connect(ctx, pi)
}

func (d *dialCounter) NewStream(ctx context.Context, p lpeer.ID, pids ...protocol.ID) (network.Stream, error) {
	if d.Network().Connectedness(p) != network.Connected {
		d.count(p)
	}
	return d.Host.NewStream(ctx, p, pids...)
}

// to returns the dials to peers counted since the last call, and resets.
func (d *dialCounter) to(peers ...lpeer.ID) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, p := range peers {
		n += d.n[p]
	}
	d.n = nil
	return n
}

type nodeOpts struct {
	cfg    Config
	listen []string // default: TCP on a free loopback port
	refuse *refuseSet
}

// startNode starts a node with key, offering tool; stopped when the test
// ends unless stopped before.
func startNode(t testing.TB, key crypto.PrivKey, tool string, o nodeOpts) *meshNode {
	t.Helper()
	id, err := lpeer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.listen) == 0 {
		o.listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	opts := []libp2p.Option{libp2p.Identity(key), libp2p.ListenAddrStrings(o.listen...), libp2p.DisableMetrics()}
	if o.refuse != nil {
		opts = append(opts, libp2p.ConnectionGater(o.refuse.gater(id)))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	dials := &dialCounter{Host: h}
	svc, err := New(dials, key, o.cfg)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	n := &meshNode{key: key, id: id, tool: tool, h: h, svc: svc, dials: dials}
	svc.Start(func(context.Context) (*cardpb.Card, error) {
		card := &cardpb.Card{Name: tool, Servers: []*cardpb.Server{{Name: "s", Tools: []*cardpb.Tool{{Name: tool}}}}}
		for _, a := range h.Addrs() {
			card.Addrs = append(card.Addrs, a.Bytes())
		}
		return card, nil
	})
	t.Cleanup(n.stop)
	return n
}

func (n *meshNode) stop() {
	if n.svc != nil {
		n.svc.Close()
		n.h.Close()
		n.svc = nil
	}
}

func (n *meshNode) info() lpeer.AddrInfo { return lpeer.AddrInfo{ID: n.id, Addrs: n.h.Addrs()} }

func connectNodes(t testing.TB, a, b *meshNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.h.Connect(ctx, b.info()); err != nil {
		t.Fatal(err)
	}
}

// find runs one lookup of tool from n to its end (or ctx's) and returns
// the peers found.
func (n *meshNode) find(ctx context.Context, tool string) (map[lpeer.ID]bool, error) {
	var mu sync.Mutex
	found := map[lpeer.ID]bool{}
	err := n.svc.Find(ctx, Capability{Kind: "tool", Name: tool}, func(f Found) {
		mu.Lock()
		found[f.Card.Peer] = true
		mu.Unlock()
	})
	return found, err
}

// waitFound retries lookups from n until one finds want offering tool.
func waitFound(t testing.TB, n *meshNode, tool string, want lpeer.ID, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		found, _ := n.find(ctx, tool)
		cancel()
		if found[want] {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s not found offering %s within %v", want, tool, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// refuseSet keeps peers from dialing others, as NATs and separate
// networks do: refuse(a, b) keeps them from connecting at all.
type refuseSet struct {
	mu   sync.Mutex
	dial map[[2]lpeer.ID]bool // a may not dial b
}

func (r *refuseSet) refuse(a, b lpeer.ID) {
	r.refuseDial(a, b)
	r.refuseDial(b, a)
}

func (r *refuseSet) refuseDial(a, b lpeer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dial == nil {
		r.dial = map[[2]lpeer.ID]bool{}
	}
	r.dial[[2]lpeer.ID{a, b}] = true
}

func (r *refuseSet) mayDial(a, b lpeer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.dial[[2]lpeer.ID{a, b}]
}

func (r *refuseSet) gater(self lpeer.ID) *refuseGater { return &refuseGater{r: r, self: self} }

type refuseGater struct {
	r    *refuseSet
	self lpeer.ID
}

func (g *refuseGater) InterceptPeerDial(p lpeer.ID) bool { return g.r.mayDial(g.self, p) }
func (g *refuseGater) InterceptAddrDial(p lpeer.ID, _ ma.Multiaddr) bool {
	return g.r.mayDial(g.self, p)
}
func (g *refuseGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }
func (g *refuseGater) InterceptSecured(dir network.Direction, p lpeer.ID, _ network.ConnMultiaddrs) bool {
	return dir == network.DirInbound || g.r.mayDial(g.self, p)
}
func (g *refuseGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

func genKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _ := newKey(t)
	return k
}

func toolName(i int) string { return fmt.Sprintf("tool-%d", i) }

// waitUntil polls f until it holds or d passes.
func waitUntil(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// suspect reports whether p disconnected and has not been seen since
// (whether or not a dial failed since).
func (s *Service) suspect(p lpeer.ID) bool {
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	_, ok := s.gone[p]
	return ok
}
