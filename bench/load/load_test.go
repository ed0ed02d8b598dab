package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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
// one node. The node must survive, ban the abuser, and the well-behaved
// callers must keep completing calls without errors, while the abuser is at
// its worst and after its ban (when it keeps knocking). It waits for each of
// these events, not for a time: a busy machine makes everything slower, not
// different.
func TestNodeSurvivesAnAbuserAndKeepsServingOthers(t *testing.T) {
	lc := limits.DefaultConfig()
	lc.Rate, lc.Burst = 1000, 2000 // the callers call as fast as they can
	// Ten strikes ban, and they leak away at ten a minute: the abuser is
	// banned however slowly a busy machine lets it misbehave.
	lc.Strikes, lc.StrikeWindow = 10, time.Minute
	lc.BanFor = time.Hour // and the ban outlasts the test, however slow
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
	banned := make(chan string, 1)
	srv.Limits().OnBan(func(p lpeer.ID, _ time.Time, why string) {
		if p == ab.h.ID() {
			select {
			case banned <- why:
			default:
			}
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := startCalling(ctx, cs, target.ID, 2)
	done := make(chan error, 1)
	go func() { done <- ab.run(ctx, target) }()
	start := time.Now()

	// While the abuser is at its worst: it gets banned, and every caller
	// completes calls.
	select {
	case why := <-banned:
		t.Logf("the abuser was banned %v into the run (calls of each caller by then: %v): %s",
			time.Since(start).Round(time.Millisecond), calls.counts(), why)
	case <-time.After(time.Minute):
		t.Errorf("the abuser is not banned after a minute of abuse (%+v)", ab.stats.counts())
	}
	during := calls.waitEach(t, make([]int64, len(cs)), 3, time.Minute)
	// After the ban, the abuser knocking again and again: the node goes on
	// serving the others.
	after := calls.waitEach(t, calls.counts(), 3, time.Minute)
	cancel()
	calls.stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	t.Logf("abuser: %d oversized and %d garbage frames, %d raw calls (%d answered, %d refused), %d streams (%d lost), %d failed connections",
		ab.stats.huge.Load(), ab.stats.garbage.Load(), ab.stats.calls.Load(), ab.stats.answered.Load(), ab.stats.refused.Load(),
		ab.stats.streams.Load(), ab.stats.streamsLost.Load(), ab.stats.connFails.Load())
	t.Logf("well-behaved: calls of each caller %v, then %v more, in %v", during, after, time.Since(start).Round(time.Millisecond))
	if _, ok := srv.Limits().Banned(ab.h.ID()); !ok {
		t.Error("the abuser is not banned at the end")
	}
	if n, first := calls.failures(); n > 0 {
		t.Errorf("%d well-behaved calls failed; first: %v", n, first)
	}
	for i := range cs {
		if _, banned := srv.Limits().Banned(cs[i].n.ID()); banned {
			t.Errorf("well-behaved caller %d is banned", i)
		}
	}
	if err := probe(target); err != nil {
		t.Errorf("a newcomer's call after the abuse: %v", err)
	}
}

// calling is callers calling a server back to back until stopped.
type calling struct {
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	completed []atomic.Int64 // calls each caller completed
	errors    atomic.Int64
	mu        sync.Mutex
	firstErr  error
}

// startCalling has every caller call server with per goroutines until ctx
// ends or stop is called.
func startCalling(ctx context.Context, cs []*caller, server lpeer.ID, per int) *calling {
	ctx, cancel := context.WithCancel(ctx)
	c := &calling{cancel: cancel, completed: make([]atomic.Int64, len(cs))}
	for i, cl := range cs {
		for range per {
			c.wg.Go(func() {
				for ctx.Err() == nil {
					err := cl.call(ctx, server)
					switch {
					case ctx.Err() != nil: // cut short by the end of the run: not counted
					case err != nil:
						c.errors.Add(1)
						c.mu.Lock()
						if c.firstErr == nil {
							c.firstErr = fmt.Errorf("caller %d: %w", i, err)
						}
						c.mu.Unlock()
					default:
						c.completed[i].Add(1)
					}
				}
			})
		}
	}
	return c
}

// counts returns how many calls each caller has completed so far.
func (c *calling) counts() []int64 {
	out := make([]int64, len(c.completed))
	for i := range c.completed {
		out[i] = c.completed[i].Load()
	}
	return out
}

// waitEach waits until every caller has completed k calls more than from
// (counts of each), and returns how many each completed since; the test
// fails if that takes longer than within.
func (c *calling) waitEach(t *testing.T, from []int64, k int64, within time.Duration) []int64 {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		now := c.counts()
		slow := -1
		for i := range now {
			now[i] -= from[i]
			if now[i] < k && slow < 0 {
				slow = i
			}
		}
		if slow < 0 {
			return now
		}
		if time.Now().After(deadline) {
			t.Errorf("caller %d completed %d calls in %v, want %d (each caller: %v)", slow, now[slow], within, k, now)
			return now
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *calling) stop() {
	c.cancel()
	c.wg.Wait()
}

// failures returns how many calls failed, and the first failure.
func (c *calling) failures() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errors.Load(), c.firstErr
}
