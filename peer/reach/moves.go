package reach

import (
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Moves moves long-lived sessions off relayed connections once a direct
// connection to the same peer exists.
//
// libp2p never moves a stream: after hole punching succeeds, new streams go
// over the direct connection, but a session opened earlier stays on the
// relayed one until that connection ends (at the relay's limits, which would
// fail the calls in flight then). So when a peer gets a direct connection,
// each session tracked as relayed to it is retired: taken out of the pool at
// once (the next call opens a new session, over the direct connection), and
// closed as soon as no call is in flight on it. Calls in flight finish where
// they are; no call fails for the move.
type Moves[S comparable] struct {
	closeFn func(S)
	tracked atomic.Int32 // quick test on the call path: nothing tracked, nothing to count

	mu sync.Mutex
	m  map[S]*moving
}

type moving struct {
	peer    peer.ID
	retire  func()
	calls   int
	retired bool
}

// NewMoves returns a tracker that closes a retired session with closeFn.
func NewMoves[S comparable](closeFn func(S)) *Moves[S] {
	return &Moves[S]{closeFn: closeFn, m: map[S]*moving{}}
}

// Relayed tracks s, a session over a relayed connection to p; retire takes
// it out of its pool without closing it.
func (m *Moves[S]) Relayed(p peer.ID, s S, retire func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.m[s]; !ok {
		m.m[s] = &moving{peer: p, retire: retire}
		m.tracked.Add(1)
	}
}

// Ended forgets s, a session that ended.
func (m *Moves[S]) Ended(s S) {
	if m.tracked.Load() == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.m[s]; ok {
		delete(m.m, s)
		m.tracked.Add(-1)
	}
}

func nothing() {}

// Begin counts a call on s until end is called.
func (m *Moves[S]) Begin(s S) (end func()) {
	if m.tracked.Load() == 0 {
		return nothing
	}
	m.mu.Lock()
	mv, ok := m.m[s]
	if ok {
		mv.calls++
	}
	m.mu.Unlock()
	if !ok {
		return nothing
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			mv.calls--
			closeNow := mv.retired && mv.calls == 0
			m.mu.Unlock()
			if closeNow {
				m.closeFn(s)
			}
		})
	}
}

// Direct retires the relayed sessions to p, which has a direct connection
// now: idle ones are closed at once, busy ones when their last call ends.
func (m *Moves[S]) Direct(p peer.ID) {
	if m.tracked.Load() == 0 {
		return
	}
	var retire []func()
	var idle []S
	m.mu.Lock()
	for s, mv := range m.m {
		if mv.peer != p || mv.retired {
			continue
		}
		mv.retired = true
		retire = append(retire, mv.retire)
		if mv.calls == 0 {
			idle = append(idle, s)
		}
	}
	m.mu.Unlock()
	for _, r := range retire {
		r()
	}
	for _, s := range idle {
		m.closeFn(s)
	}
}
