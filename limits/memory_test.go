package limits

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// A peer's messages in flight may hold at most its budget; all peers' at
// most the node's, of which a quarter is kept for small reservations; going
// over the node's is the node's load (ErrNodeBusy), over the peer's the
// peer's doing. What is returned can be taken again.
func TestBudgetBoundsMemoryPerPeerAndPerNode(t *testing.T) {
	l, _ := newLimiter(t, Config{MaxBytesPerPeer: 10 << 20, MaxBytesInFlight: 16 << 20})
	a, b, c := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	ba, bb, bc := l.Budget(a), l.Budget(b), l.Budget(c)

	if err := ba.Take(8 << 20); err != nil {
		t.Fatal(err)
	}
	err := ba.Take(4 << 20)
	if err == nil || errors.Is(err, transport.ErrNodeBusy) || !strings.Contains(err.Error(), "over its limit of 10 MiB") {
		t.Fatalf("over the peer's budget: %v", err)
	}
	// The node keeps 4 of its 16 MiB for small reservations: b's 5 MiB
	// would leave less.
	err = bb.Take(5 << 20)
	if !errors.Is(err, transport.ErrNodeBusy) || !strings.Contains(err.Error(), "the node's limit is 16 MiB") {
		t.Fatalf("a large reservation into the reserve: %v", err)
	}
	// Small ones still fit, up to the whole node budget.
	taken := int64(0)
	for bc.Take(smallTake) == nil {
		taken += smallTake
	}
	if want := int64(16<<20 - 8<<20); taken != want {
		t.Errorf("small reservations took %d bytes, want the %d left", taken, want)
	}
	ba.Return(8 << 20)
	bc.Return(taken)
	if err := bb.Take(5 << 20); err != nil {
		t.Fatalf("after the returns: %v", err)
	}
	bb.Return(5 << 20)
	if n := l.InFlight(); n != 0 {
		t.Errorf("%d bytes in flight after every return", n)
	}
	// A peer whose messages hold memory is not forgotten.
	if err := ba.Take(1); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	fresh := l.fresh(l.peers.m[a], l.now())
	l.mu.Unlock()
	if fresh {
		t.Error("a peer holding memory counts as a newcomer (its state could be forgotten)")
	}
	ba.Return(1)
}

// session is a fake session for the table: its activity is set by hand.
type session struct {
	p       peer.ID
	a       transport.Activity
	evicted bool
	s       *Session
}

func open(l *Limiter, p peer.ID, at time.Time, requests int64, inflight int, last time.Time) *session {
	x := &session{p: p, a: transport.Activity{Opened: at, Requests: requests, InFlight: inflight, Last: last}}
	x.s = l.OpenSession(p, func() transport.Activity { return x.a }, func() { x.evicted = true })
	return x
}

// Sessions that cost nothing to make cannot keep a newcomer out: past the
// bounds, the oldest silent session of the same peer goes, then the oldest
// silent one of anyone, then one of the peer holding the most sessions
// (silent, then idle the longest, then the least recently active). The
// new session is never the one evicted.
func TestSessionsMakeRoomForANewcomer(t *testing.T) {
	l, clk := newLimiter(t, Config{MaxStreamsPerProtocol: 16, MaxHandshaking: 6, MaxHandshakingPerPeer: 3})
	if got := l.Config().MaxSessions; got != 14 {
		t.Fatalf("MaxSessions %d, want 7/8 of the protocol's 16 streams", got)
	}
	t0 := clk.now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	x := test.RandPeerIDFatal(t)
	// One peer's silent streams: the fourth evicts the first.
	var xs []*session
	for i := range 4 {
		xs = append(xs, open(l, x, at(i), 0, 0, time.Time{}))
	}
	if !xs[0].evicted || xs[1].evicted || xs[3].evicted || l.Sessions() != 3 {
		t.Fatalf("per peer: evicted %v %v %v %v, %d held", xs[0].evicted, xs[1].evicted, xs[2].evicted, xs[3].evicted, l.Sessions())
	}
	// Other identities' silent streams: past 6 in all, the oldest goes.
	y, z := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	ys := []*session{open(l, y, at(10), 0, 0, time.Time{}), open(l, y, at(11), 0, 0, time.Time{}), open(l, y, at(12), 0, 0, time.Time{})}
	zs := open(l, z, at(13), 0, 0, time.Time{})
	if !xs[1].evicted || l.Sessions() != 6 || zs.evicted || ys[0].evicted {
		t.Fatalf("overall: x[1] evicted %v, %d held", xs[1].evicted, l.Sessions())
	}
	// Sessions that did their handshake: y holds the most; its silent
	// ones go first, then its idle one of the oldest activity, while a
	// peer with one busy session keeps it.
	for _, s := range ys {
		s.a.Requests, s.a.Last = 1, at(20)
	}
	ys[1].a.Last = at(15) // idle the longest
	ys[2].a.InFlight = 1
	w := test.RandPeerIDFatal(t)
	ws := open(l, w, at(21), 1, 1, at(21))
	for i := range 20 { // newcomers, each with one session that does its handshake
		p := test.RandPeerIDFatal(t)
		open(l, p, at(30+i), 1, 0, at(30+i))
		if ws.evicted {
			t.Fatalf("after %d newcomers, the peer with one busy session lost it", i+1)
		}
		if l.Sessions() > 14 {
			t.Fatalf("%d sessions held, bound 14", l.Sessions())
		}
	}
	if !ys[1].evicted || !xs[2].evicted {
		t.Errorf("the idle sessions of the peers holding the most were not evicted: x[2] %v, y[1] %v", xs[2].evicted, ys[1].evicted)
	}
	// Closing a session makes room without evicting anyone.
	zs.s.Close()
	n := l.Sessions()
	zs.s.Close() // twice: no effect
	if l.Sessions() != n {
		t.Error("a second Close changed the count")
	}
}

// A flood of streams from identities that cost nothing to make opens a
// session per stream, each of which may evict another. With the table at
// its bound for silent sessions, an open must not cost a copy of the
// table: it did (64 bytes per session held, 16 KiB per open at the default
// bounds), and under bench/attack's 2-idle-streams that was a fifth of the
// daemon's CPU, with the collections it caused.
func TestOpenSessionCopiesNoTable(t *testing.T) {
	l, clk := newLimiter(t, Config{})
	cfg := l.Config()
	peers := make([]peer.ID, 40)
	for i := range peers {
		peers[i] = test.RandPeerIDFatal(t)
	}
	silent := func() transport.Activity { return transport.Activity{Opened: clk.now()} }
	evict := func() {}
	opened := 0
	openOne := func() {
		l.OpenSession(peers[opened%len(peers)], silent, evict)
		opened++
	}
	for range 2 * cfg.MaxHandshaking {
		openOne()
	}
	if n := l.Sessions(); n != cfg.MaxHandshaking {
		t.Fatalf("%d sessions held, want the bound for silent ones, %d", n, cfg.MaxHandshaking)
	}
	const opens = 1000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range opens {
		openOne()
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / opens; per > 512 {
		t.Errorf("an open with %d sessions held allocates %d bytes, want at most 512 (the session, the eviction)", l.Sessions(), per)
	}
	if n := l.Sessions(); n != cfg.MaxHandshaking {
		t.Errorf("%d sessions held after the flood, want %d", n, cfg.MaxHandshaking)
	}
}
