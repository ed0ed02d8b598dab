// Package owner gives goroutines an owner that stops them: every goroutine
// mcpmesh starts (or is handed, such as a libp2p stream handler) belongs to
// a Group, which refuses new ones once its owner is closing and waits for
// the running ones to end.
package owner

import "sync"

// Group is the set of goroutines of one owner. The zero value is ready.
type Group struct {
	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

// Go runs f on a goroutine of the group, unless the group is stopped; it
// reports whether f runs.
func (g *Group) Go(f func()) bool {
	if !g.Enter() {
		return false
	}
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

// Enter counts the calling goroutine (one the group did not start, such as
// a stream handler) in the group, unless the group is stopped; it reports
// whether it did. The goroutine calls Leave when it ends.
func (g *Group) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	g.wg.Add(1)
	return true
}

// Leave ends what Enter began.
func (g *Group) Leave() { g.wg.Done() }

// Stop refuses new goroutines; it reports whether the group was already
// stopped.
func (g *Group) Stop() (already bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	already, g.stopped = g.stopped, true
	return already
}

// Stopped reports whether Stop was called.
func (g *Group) Stopped() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopped
}

// Wait waits for the group's goroutines to end.
func (g *Group) Wait() { g.wg.Wait() }

// Close stops the group and waits for its goroutines.
func (g *Group) Close() {
	g.Stop()
	g.Wait()
}
