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
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

// meshNode is a libp2p host on loopback running a discovery Service that
// offers one tool.
type meshNode struct {
	key  crypto.PrivKey
	id   lpeer.ID
	tool string
	h    host.Host
	svc  *Service
}

type nodeOpts struct {
	cfg    Config
	listen []string // default: TCP on a free loopback port
	refuse *refuseSet
}

// startNode starts a node with key, offering tool; stopped when the test
// ends unless stopped before.
func startNode(t *testing.T, key crypto.PrivKey, tool string, o nodeOpts) *meshNode {
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
	svc, err := New(h, key, o.cfg)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	n := &meshNode{key: key, id: id, tool: tool, h: h, svc: svc}
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

func connectNodes(t *testing.T, a, b *meshNode) {
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
func waitFound(t *testing.T, n *meshNode, tool string, want lpeer.ID, within time.Duration) time.Duration {
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

// refuseSet makes pairs of peers unable to connect, as two networks that
// only some nodes join.
type refuseSet struct {
	mu    sync.Mutex
	pairs map[[2]lpeer.ID]bool
}

func (r *refuseSet) refuse(a, b lpeer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pairs == nil {
		r.pairs = map[[2]lpeer.ID]bool{}
	}
	r.pairs[[2]lpeer.ID{a, b}] = true
	r.pairs[[2]lpeer.ID{b, a}] = true
}

func (r *refuseSet) refused(a, b lpeer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pairs[[2]lpeer.ID{a, b}]
}

func (r *refuseSet) gater(self lpeer.ID) *refuseGater { return &refuseGater{r: r, self: self} }

type refuseGater struct {
	r    *refuseSet
	self lpeer.ID
}

func (g *refuseGater) InterceptPeerDial(p lpeer.ID) bool { return !g.r.refused(g.self, p) }
func (g *refuseGater) InterceptAddrDial(p lpeer.ID, _ ma.Multiaddr) bool {
	return !g.r.refused(g.self, p)
}
func (g *refuseGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }
func (g *refuseGater) InterceptSecured(_ network.Direction, p lpeer.ID, _ network.ConnMultiaddrs) bool {
	return !g.r.refused(g.self, p)
}
func (g *refuseGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

func genKey(t *testing.T) crypto.PrivKey {
	t.Helper()
	k, _ := newKey(t)
	return k
}

func toolName(i int) string { return fmt.Sprintf("tool-%d", i) }

// waitUntil polls f until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
