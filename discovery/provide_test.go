package discovery

import (
	"slices"
	"testing"

	kb "github.com/libp2p/go-libp2p-kbucket"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

func TestProvisionHolders(t *testing.T) {
	c := Capability{Kind: "tool", Name: "translate"}
	p := newProvision(string(c.CID().Hash()))
	var ids []lpeer.ID
	for range 30 {
		_, id := newKey(t)
		ids = append(ids, id)
	}
	sorted := kb.SortClosestPeers(slices.Clone(ids), p.kid)
	const k = 20
	if !p.needsWalk() {
		t.Error("a record no peer took needs a walk")
	}
	// Stored on the 20 farthest of 30; the 10 closest should get it.
	p.stored(p.at, sorted[10:], k)
	if len(p.holders) != k || p.needsWalk() {
		t.Fatalf("%d holders, needs walk %v", len(p.holders), p.needsWalk())
	}
	for i, id := range sorted {
		if got, want := p.wants(id, k), i < 10; got != want {
			t.Errorf("peer %d of 30 by distance: wants %v, want %v", i, got, want)
		}
	}
	// A closer peer that takes it pushes the farthest out.
	p.took(sorted[0], k)
	if len(p.holders) != k || p.holders[sorted[len(sorted)-1]] {
		t.Errorf("after a closer peer took it: %d holders, farthest kept: %v", len(p.holders), p.holders[sorted[len(sorted)-1]])
	}
	// A holder that disconnects may have lost it: it is wanted again, and
	// once more than half are lost, the record needs a walk.
	lost := sorted[5]
	p.holders[lost] = false
	if !p.wants(lost, k) || p.needsWalk() {
		t.Errorf("one lost holder: wanted %v, needs walk %v", p.wants(lost, k), p.needsWalk())
	}
	n := 0
	for h := range p.holders {
		if n++; n <= k/2+1 {
			p.holders[h] = false
		}
	}
	if !p.needsWalk() {
		t.Error("more than half the holders lost, and no walk")
	}
}
