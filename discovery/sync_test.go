package discovery

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

// Sync returns once the card reflecting every change before it is stored
// where peers ask for it, without the debounce: a peer that asks right
// after gets that card. The debounce here is an hour, so only Sync's hurry
// can publish the changed card within the test.
func TestSyncServesTheChangedCard(t *testing.T) {
	asker := startNode(t, genKey(t), "asker", nodeOpts{})
	h, svc := unstartedService(t, Config{Debounce: time.Hour})
	var tool atomic.Value
	tool.Store("first")
	svc.Start(func(context.Context) (*cardpb.Card, error) {
		return &cardpb.Card{Servers: []*cardpb.Server{{Name: "s", Tools: []*cardpb.Tool{{Name: tool.Load().(string)}}}}}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := svc.Sync(ctx); err != nil { // no peers yet: the local store alone
		t.Fatalf("first sync: %v", err)
	}
	if err := asker.h.Connect(ctx, h.Peerstore().PeerInfo(h.ID())); err != nil {
		t.Fatal(err)
	}
	servedTool := func() string {
		c, err := asker.svc.cardFromPeer(ctx, h.ID())
		if err != nil {
			t.Fatalf("card from the peer: %v", err)
		}
		return c.Servers[0].Tools[0].Name
	}
	if got := servedTool(); got != "first" {
		t.Fatalf("served tool %q after the first sync, want first", got)
	}
	tool.Store("second")
	svc.Changed()
	if err := svc.Sync(ctx); err != nil {
		t.Fatalf("sync after a change: %v", err)
	}
	if got := servedTool(); got != "second" {
		t.Fatalf("served tool %q after Changed and Sync, want second", got)
	}
	// A Sync with nothing changed returns at once.
	if err := svc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// Sync gives up with ctx, and when the service closes.
func TestSyncEndsWithItsContext(t *testing.T) {
	key := genKey(t)
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	svc, err := New(h, key, Config{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	svc.Start(func(ctx context.Context) (*cardpb.Card, error) {
		select { // a builder stuck until the test lets it go
		case <-release:
		case <-ctx.Done():
		}
		return nil, context.Canceled
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := svc.Sync(ctx); err == nil {
		t.Fatal("Sync returned nil with the card never built")
	}
	done := make(chan error, 1)
	go func() { done <- svc.Sync(context.Background()) }()
	close(release)
	svc.Close()
	if err := <-done; err == nil {
		t.Fatal("Sync returned nil after Close with no card built")
	}
}

// Once Sync returns, the node's own provider record of every tool on its
// card is stored locally, not only the card: a peer whose lookup asks it
// right away finds each one, even while the walks that store the records
// on other peers (a few at a time) are still going.
func TestSyncStoresEveryOwnProviderRecord(t *testing.T) {
	peer := startNode(t, genKey(t), "peer", nodeOpts{})
	h, svc := unstartedService(t, Config{Debounce: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A peer to walk to, so that each provide takes a round trip or more.
	if err := h.Connect(ctx, peer.h.Peerstore().PeerInfo(peer.h.ID())); err != nil {
		t.Fatal(err)
	}
	tools := make([]*cardpb.Tool, 5*maxProvides)
	for i := range tools {
		tools[i] = &cardpb.Tool{Name: fmt.Sprintf("tool%d", i)}
	}
	svc.Start(func(context.Context) (*cardpb.Card, error) {
		return &cardpb.Card{Servers: []*cardpb.Server{{Name: "s", Tools: tools}}}, nil
	})
	if err := svc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools {
		c := Capability{Kind: "tool", Name: tool.GetName()}
		provs, err := svc.dht.ProviderStore().GetProviders(ctx, c.CID().Hash())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(provs, func(p lpeer.AddrInfo) bool { return p.ID == h.ID() }) {
			t.Fatalf("after Sync, the node's own provider record of %s is not stored locally", c)
		}
	}
}

// unstartedService is a discovery service on a host of its own, not yet
// started (Start is the test's), both closed at the end of the test.
func unstartedService(t *testing.T, cfg Config) (host.Host, *Service) {
	t.Helper()
	key := genKey(t)
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	svc, err := New(h, key, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return h, svc
}
