package discovery

import (
	"context"
	"testing"
	"time"
)

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
// closest peers it tried. The bound below is well under that.
func TestLookupDoesNotWaitForGonePeers(t *testing.T) {
	cfg := Config{Debounce: 10 * time.Millisecond}
	o := nodeOpts{cfg: cfg, listen: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}}
	const n = 10
	nodes := make([]*meshNode, n)
	for i := range nodes {
		nodes[i] = startNode(t, genKey(t), toolName(i), o)
	}
	a := nodes[0]
	for _, m := range nodes[1:] {
		connectNodes(t, a, m)
	}
	for _, m := range nodes {
		<-m.svc.DHT().ForceRefresh()
	}
	for i := 6; i < n; i++ {
		waitFound(t, a, toolName(i), nodes[i].id, 15*time.Second)
	}
	for _, m := range nodes[1:6] {
		m.stop()
	}
	// "Known to be gone": A has seen them disconnect.
	for _, m := range nodes[1:6] {
		waitUntil(t, 5*time.Second, "A sees a stopped peer disconnect", func() bool { return a.svc.isGone(m.id) })
	}
	// Each lookup must end well before a dial to a stopped peer's QUIC
	// address could time out, and still find the live provider.
	const bound = 2500 * time.Millisecond
	for i := 6; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		start := time.Now()
		found, err := a.find(ctx, toolName(i))
		took := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("lookup %d with 5 stopped peers: %v after %v", i, err, took)
		}
		if !found[nodes[i].id] {
			t.Fatalf("lookup %d: live provider not found (found %v)", i, found)
		}
		t.Logf("lookup of %s with 5 stopped peers in the routing table: %v", toolName(i), took.Round(time.Microsecond))
	}
}
