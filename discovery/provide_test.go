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
	for range 40 {
		_, id := newKey(t)
		ids = append(ids, id)
	}
	sorted := kb.SortClosestPeers(slices.Clone(ids), p.kid)
	const k = 20
	if !p.needsWalk() {
		t.Error("a record no peer took needs a walk")
	}
	// Stored on the 11th to 30th closest of 40: when they connect, the 10
	// closer ones should get it, and so should the holders (back from a
	// restart, maybe), not the 10 farther ones.
	p.stored(p.at, sorted[10:30], k)
	if len(p.holders) != k || p.needsWalk() {
		t.Fatalf("%d holders, needs walk %v", len(p.holders), p.needsWalk())
	}
	for i, id := range sorted {
		if got, want := p.wants(id, k), i < 30; got != want {
			t.Errorf("peer %d of 40 by distance: wants %v, want %v", i, got, want)
		}
	}
	// A closer peer that takes it pushes the farthest out.
	p.took(sorted[0], k)
	if _, kept := p.holders[sorted[29]]; len(p.holders) != k || kept {
		t.Errorf("after a closer peer took it: %d holders, farthest kept: %v", len(p.holders), kept)
	}
	// A holder that disconnects may have lost it; once more than half
	// have, the record needs a walk.
	p.holders[sorted[12]] = false
	if p.needsWalk() {
		t.Error("one lost holder, and a walk")
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
