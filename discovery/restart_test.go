package discovery

import (
	"context"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// stoppedPeersMesh starts 10 nodes on loopback TCP and QUIC, all known to
// the first, and stops 5 of them; it returns the first, the 4 live others
// and the IDs of the stopped, once the first has seen the 5 disconnect.
func stoppedPeersMesh(tb testing.TB, dialGone bool) (*meshNode, []*meshNode, []lpeer.ID) {
	tb.Helper()
	o := nodeOpts{cfg: Config{Debounce: 10 * time.Millisecond}, listen: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}}
	const n = 10
	nodes := make([]*meshNode, n)
	for i := range nodes {
		nodes[i] = startNode(tb, genKey(tb), toolName(i), o)
		nodes[i].svc.dialGone.Store(dialGone)
	}
	a := nodes[0]
	for _, m := range nodes[1:] {
		connectNodes(tb, a, m)
	}
	for _, m := range nodes {
		<-m.svc.DHT().ForceRefresh()
	}
	for i := 6; i < n; i++ {
		waitFound(tb, a, toolName(i), nodes[i].id, 15*time.Second)
	}
	for _, m := range nodes[1:6] {
		m.stop()
	}
	var stopped []lpeer.ID
	for _, m := range nodes[1:6] {
		waitUntil(tb, 5*time.Second, "A sees a stopped peer disconnect", func() bool { return a.svc.suspect(m.id) })
		stopped = append(stopped, m.id)
	}
	a.dials.to() // from now on
	return a, nodes[6:], stopped
}

// A restarted node comes back with an empty provider store. The providers
// whose records it held hand them back when it reconnects, well within one
// card period, without restarting themselves: A and C cannot reach each
// other (two networks joined through B), so C's record lives on B alone.
func TestRestartedHolderGetsRecordsBack(t *testing.T) {
	cfg := Config{Debounce: 10 * time.Millisecond} // card period: the default 60 s
	var refuse refuseSet
	ka, kb, kc := genKey(t), genKey(t), genKey(t)
	o := nodeOpts{cfg: cfg, refuse: &refuse}
	a := startNode(t, ka, "a-tool", o)
	b := startNode(t, kb, "b-tool", o)
	c := startNode(t, kc, "translate", o)
	refuse.refuse(a.id, c.id)
	connectNodes(t, a, b)
	connectNodes(t, c, b)
	waitFound(t, a, "translate", c.id, 15*time.Second)

	// B restarts: same identity, same address, nothing of its DHT state.
	addr := b.h.Addrs()[0].String()
	b.stop()
	o.listen = []string{addr}
	b = startNode(t, kb, "b-tool", o)
	connectNodes(t, b, a) // as a node with --peer A --peer C does
	connectNodes(t, b, c)
	took := waitFound(t, a, "translate", c.id, cfg.withDefaults().RepublishEvery/4)
	t.Logf("C's tool findable again %v after B reconnected (card period %v)", took.Round(time.Millisecond), cfg.withDefaults().RepublishEvery)
}

// Lookups do not wait for peers that left: a stopped node's TCP port
// refuses at once, but its QUIC port stays silent until the dial times
// out (5 s on local addresses), and kad-dht waits for every one of the
// closest peers it tried, and tries them again in later lookups. A peer
// seen to disconnect is dialed once, for a second at most, and once that
// failed, not at all: over four lookups each stopped peer is dialed at
// most once, all in the first (BenchmarkLookupWithStoppedPeers times it).
func TestLookupDoesNotWaitForGonePeers(t *testing.T) {
	a, live, stopped := stoppedPeersMesh(t, false)
	for i, m := range live {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		found, err := a.find(ctx, m.tool)
		took := time.Since(start)
		cancel()
		if err != nil || !found[m.id] {
			t.Fatalf("lookup of %s with 5 stopped peers: found %v, %v after %v", m.tool, found, err, took)
		}
		dials := a.dials.to(stopped...)
		t.Logf("lookup of %s with 5 stopped peers in the routing table: %v, %d dials to them", m.tool, took.Round(time.Microsecond), dials)
		allowed := 0
		if i == 0 {
			allowed = len(stopped)
		}
		if dials > allowed {
			t.Errorf("lookup %d after the stops dialed the %d stopped peers %d times, want at most %d", i+1, len(stopped), dials, allowed)
		}
	}
}

// BenchmarkLookupWithStoppedPeers times lookups of the 4 live nodes' tools
// after 5 of 10 stopped, and again 7 s later (libp2p's dial backoff for a
// failed address is 5 s, then 6 s), dialing the stopped ones as before
// ("dial") and as now ("skip"):
//
//	go test ./discovery -run '^$' -bench LookupWithStoppedPeers -benchtime 3x
func BenchmarkLookupWithStoppedPeers(b *testing.B) {
	for _, tc := range []struct {
		name     string
		dialGone bool
	}{{"dial", true}, {"skip", false}} {
		b.Run(tc.name, func(b *testing.B) {
			var total time.Duration
			lookups := 0
			for range b.N {
				b.StopTimer()
				a, live, _ := stoppedPeersMesh(b, tc.dialGone)
				for round := range 2 {
					if round > 0 {
						time.Sleep(7 * time.Second)
					}
					b.StartTimer()
					for _, m := range live {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						start := time.Now()
						found, err := a.find(ctx, m.tool)
						total += time.Since(start)
						lookups++
						cancel()
						if err != nil || !found[m.id] {
							b.Fatalf("lookup of %s: %v, found %v", m.tool, err, found)
						}
					}
					b.StopTimer()
				}
				a.stop()
				for _, m := range live {
					m.stop()
				}
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(lookups), "ms/lookup")
		})
	}
}

// A peer known to be gone is not dialed by lookups, but a lookup that wants
// it starts a probe, so that it counts again once back: here a provider
// that restarted and reconnected to others, and cannot dial the searcher.
func TestGonePeerProbedWhenWanted(t *testing.T) {
	a, live, _ := stoppedPeersMesh(t, false)
	x := live[0]
	addrs := x.h.Addrs()
	x.stop()
	waitUntil(t, 5*time.Second, "A sees X disconnect", func() bool { return a.svc.suspect(x.id) })
	// A lookup that wants X fails to reach it: X is gone.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	a.find(ctx, x.tool)
	cancel()
	waitUntil(t, 5*time.Second, "X known to be gone after a lookup failed to reach it", func() bool { return a.svc.isGone(x.id) })
	var listen []string
	for _, ad := range addrs {
		listen = append(listen, ad.String())
	}
	var refuse refuseSet
	id := x.id
	refuse.refuseDial(id, a.id)
	x = startNode(t, x.key, x.tool, nodeOpts{cfg: Config{Debounce: 10 * time.Millisecond}, listen: listen, refuse: &refuse})
	connectNodes(t, x, live[1])
	waitFound(t, a, x.tool, x.id, 15*time.Second)
	waitUntil(t, probeEvery+5*time.Second, "A no longer counts X as gone", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		a.find(ctx, x.tool) // wants X: probes it when due
		return !a.svc.isGone(x.id)
	})
}
