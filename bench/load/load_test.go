package main

import (
	"context"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/limits"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// TestNodeSurvivesAnAbuserAndKeepsServingOthers is the load benchmark made
// small, in one process: five well-behaved callers and one abusive peer at
// one node for about three seconds. The node must survive, ban the abuser,
// and the well-behaved callers must keep completing calls without errors.
func TestNodeSurvivesAnAbuserAndKeepsServingOthers(t *testing.T) {
	lc := limits.DefaultConfig()
	lc.Rate, lc.Burst = 1000, 2000 // the callers call as fast as they can
	lc.Strikes = 10                // a ban within the first second, even under the race detector
	srv, err := newServer(lc, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	target := lpeer.AddrInfo{ID: srv.ID(), Addrs: srv.Host().Addrs()}
	cs, err := newCallers(5)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(cs)
	if err := connectAll(cs, target); err != nil {
		t.Fatal(err)
	}
	ab, err := newAbuser()
	if err != nil {
		t.Fatal(err)
	}
	defer ab.close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ab.run(ctx, target) }()
	// The first second: the abuser at its worst, until it is banned.
	first := runCallers(ctx, cs, target.ID, 2, time.Second)
	// Then two more: the node has to go on serving the others.
	rest := runCallers(ctx, cs, target.ID, 2, 2*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	t.Logf("abuser: %d oversized and %d garbage frames, %d raw calls (%d answered, %d refused), %d streams (%d lost), %d failed connections",
		ab.stats.huge.Load(), ab.stats.garbage.Load(), ab.stats.calls.Load(), ab.stats.answered.Load(), ab.stats.refused.Load(),
		ab.stats.streams.Load(), ab.stats.streamsLost.Load(), ab.stats.connFails.Load())
	t.Logf("well-behaved: %d then %d calls, %d then %d errors", first.ok, rest.ok, first.errors, rest.errors)
	if _, banned := srv.Limits().Banned(ab.h.ID()); !banned {
		t.Error("the abuser is not banned")
	}
	for _, s := range []callStats{first, rest} {
		if s.errors > 0 {
			t.Errorf("%d well-behaved calls failed; first: %s", s.errors, s.firstErr)
		}
	}
	for i := range cs {
		if first.perCaller[i] == 0 || rest.perCaller[i] == 0 {
			t.Errorf("caller %d completed %d calls in the first second, %d after: want some in each", i, first.perCaller[i], rest.perCaller[i])
		}
		if _, banned := srv.Limits().Banned(cs[i].n.ID()); banned {
			t.Errorf("well-behaved caller %d is banned", i)
		}
	}
	if err := probe(target); err != nil {
		t.Errorf("a newcomer's call after the abuse: %v", err)
	}
}
