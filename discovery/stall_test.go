package discovery

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio/pbio"
)

// A peer whose connection stays up but which stops answering (a process
// killed over QUIC looks like this until QUIC's idle timeout) no longer
// holds a lookup for kad-dht's 10 s read timeout: the lookup ends about a
// second after the last answer, with what it found.
func TestLookupEndsWhenAPeerStopsAnswering(t *testing.T) {
	cfg := Config{Debounce: 10 * time.Millisecond}
	a := startNode(t, genKey(t), "a-tool", nodeOpts{cfg: cfg})
	b := startNode(t, genKey(t), "b-tool", nodeOpts{cfg: cfg})
	connectNodes(t, a, b)
	waitFound(t, a, "b-tool", b.id, 15*time.Second)

	// M speaks the DHT protocol with empty answers, until it goes mute.
	m, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var mute atomic.Bool
	m.SetStreamHandler(a.svc.kadProtocol(), emptyAnswers(&mute, nil))
	if err := a.h.Connect(context.Background(), m.Peerstore().PeerInfo(m.ID())); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "M in A's routing table", func() bool { return a.svc.DHT().RoutingTable().Find(m.ID()) != "" })
	mute.Store(true)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	found, err := a.find(ctx, "b-tool")
	took := time.Since(start)
	if err != nil || !found[b.id] {
		t.Fatalf("lookup with a mute peer: found %v, %v after %v", found, err, took)
	}
	if took > 3*time.Second {
		t.Fatalf("lookup with a mute peer took %v (kad-dht's read timeout is 10 s)", took)
	}
	t.Logf("lookup with a mute peer in the routing table: %v", took.Round(time.Millisecond))
}

// A peer that answers a PUT_VALUE without a record does not crash the node
// that hands it its card when it joins (kad-dht v0.42.2's
// ProtocolMessenger.PutValue reads the answer's record unchecked: a nil
// dereference, seen once in 21 runs of the test above); it is not counted
// among the card's holders.
func TestPutAnsweredWithoutARecord(t *testing.T) {
	cfg := Config{Debounce: 10 * time.Millisecond}
	a := startNode(t, genKey(t), "a-tool", nodeOpts{cfg: cfg})
	b := startNode(t, genKey(t), "b-tool", nodeOpts{cfg: cfg})
	connectNodes(t, a, b)
	waitUntil(t, 15*time.Second, "A's card stored on B", func() bool {
		a.svc.mu.Lock()
		defer a.svc.mu.Unlock()
		return a.svc.card != nil && a.svc.card.holders[b.id]
	})

	// M speaks the DHT protocol, answering every request with an empty
	// message of its type.
	m, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var puts atomic.Int32
	m.SetStreamHandler(a.svc.kadProtocol(), emptyAnswers(nil, func(req *dhtpb.Message) {
		if req.Type == dhtpb.Message_PUT_VALUE {
			puts.Add(1)
		}
	}))
	if err := a.h.Connect(context.Background(), m.Peerstore().PeerInfo(m.ID())); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "A's card handed to M and its answer read", func() bool {
		return puts.Load() > 0 && len(a.svc.handOffs) == 0
	})
	a.svc.mu.Lock()
	defer a.svc.mu.Unlock()
	if a.svc.card.holders[m.ID()] {
		t.Error("M counted as holding A's card")
	}
}

// emptyAnswers is a handler of the DHT protocol that answers each request
// with an empty message of its type (no record, no peers), or not at all
// once mute (if not nil) is set; answered (if not nil) sees each request
// once answered.
func emptyAnswers(mute *atomic.Bool, answered func(*dhtpb.Message)) network.StreamHandler {
	return func(s network.Stream) {
		defer s.Close()
		r, w := pbio.NewDelimitedReader(s, 4096), pbio.NewDelimitedWriter(s)
		for {
			var req dhtpb.Message
			if err := r.ReadMsg(&req); err != nil {
				return
			}
			if mute != nil && mute.Load() {
				continue
			}
			if err := w.WriteMsg(&dhtpb.Message{Type: req.Type, Key: req.Key}); err != nil {
				return
			}
			if answered != nil {
				answered(&req)
			}
		}
	}
}
