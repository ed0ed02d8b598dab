package limits

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// smallTake is the largest reservation that may use the node budget's
// reserve (see Limiter.Budget): an ordinary request is one reservation of
// about 20 KB.
const smallTake = 64 << 10

// Guard returns the bounds of a session that p opens on one of the node's
// servers: the frame bounds, window and timeouts of the configuration, the
// node's gate for large frames, and p's memory budget (Budget).
func (l *Limiter) Guard(p peer.ID) transport.Guard {
	c := l.cfg
	g := transport.Guard{
		MaxValues: c.MaxMessageValues, MaxDepth: c.MaxMessageDepth, Window: c.WindowPerSession, Paced: c.PacedPerSession,
		HandshakeTimeout: c.HandshakeTimeout, IdleTimeout: c.IdleTimeout, Large: l.large,
	}
	if c.MaxBytesPerPeer > 0 || c.MaxBytesInFlight > 0 {
		g.Budget = l.Budget(p)
	}
	return g
}

// Budget returns the memory budget of p's sessions: what the frames p has
// in flight may hold (transport.FrameCost of each, from when it starts to
// arrive until it is answered), at most MaxBytesPerPeer for p and
// MaxBytesInFlight for all peers together. A quarter of the node's budget
// is kept for small reservations (ordinary requests), so that peers
// sending large frames cannot keep the others' small calls out. Going over
// p's own budget is p's doing (the transport strikes it); going over the
// node's is not (transport.ErrNodeBusy). The node itself is never limited.
func (l *Limiter) Budget(p peer.ID) transport.Budget { return budget{l: l, p: p} }

type budget struct {
	l *Limiter
	p peer.ID
}

func (b budget) Take(n int64) error { return b.l.takeMemory(b.p, n) }

func (b budget) Return(n int64) { b.l.returnMemory(b.p, n) }

func (l *Limiter) takeMemory(p peer.ID, n int64) error {
	if p == l.self || n <= 0 {
		return nil
	}
	c := l.cfg
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.state(p, now)
	if c.MaxBytesPerPeer > 0 && s.memory+n > c.MaxBytesPerPeer {
		return fmt.Errorf("%s has %s of messages in flight here, and this one would take it over its limit of %s: wait for answers before sending more",
			p, mib(s.memory), transport.SizeText(int(c.MaxBytesPerPeer)))
	}
	if c.MaxBytesInFlight > 0 {
		room := c.MaxBytesInFlight
		if n > smallTake {
			room -= c.MaxBytesInFlight / 4
		}
		if l.memory+n > room {
			return fmt.Errorf("%w: %s of messages in flight from all peers, the node's limit is %s; retry shortly",
				transport.ErrNodeBusy, mib(l.memory), transport.SizeText(int(c.MaxBytesInFlight)))
		}
	}
	s.memory += n
	l.memory += n
	return nil
}

func (l *Limiter) returnMemory(p peer.ID, n int64) {
	if p == l.self || n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.peers.m[p]; ok {
		s.memory -= n
	}
	l.memory -= n
}

// InFlight returns the memory the frames in flight of all peers hold, as
// their budgets count it.
func (l *Limiter) InFlight() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.memory
}

// mib shows a byte count in MiB, as budgets are read.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// Calls returns how many calls of p are in flight, as Admit counts them.
func (l *Limiter) Calls(p peer.ID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.peers.m[p]; ok {
		return s.inflight
	}
	return 0
}
