package reach

import (
	"runtime"
	"sync/atomic"
	"time"
	"weak"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Signs records the last sign of life of one peer other than an answer to
// a ping: bytes read from it on a stream, or a write to it that went on
// against backpressure (the peer acknowledging what it was sent). A ping's
// answer can wait longer than the timeout behind a large message on the
// same connection (yamux over TCP is one byte stream, and a slow link's
// send buffer holds seconds of it); a connection still carrying data is not
// lost, so the checker waits while signs come (see Liveness).
//
// Alive is safe for concurrent use and costs an atomic store: it is called
// on every read of the streams that hold it.
type Signs struct {
	epoch time.Time    // with its monotonic reading: at counts from it
	at    atomic.Int64 // nanoseconds from epoch to the last sign; 0: none
}

// Alive records a sign of life now.
func (s *Signs) Alive() { s.at.Store(int64(time.Since(s.epoch))) }

// last returns when the last sign came, zero if none did.
func (s *Signs) last() time.Time {
	n := s.at.Load()
	if n == 0 {
		return time.Time{}
	}
	return s.epoch.Add(time.Duration(n))
}

// Signs returns the record of p's signs of life, to be told of them by
// whatever reads from or writes to p (an MCP stream's connection). The
// record is p's as long as anything holds it: when the last holder is
// gone, the garbage collector takes it, and the checker's entry with it, so
// the records cost nothing once the streams that fed them end.
func (l *Liveness) Signs(p peer.ID) *Signs {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.signs[p].Value(); s != nil {
		return s
	}
	s := &Signs{epoch: l.epoch}
	wp := weak.Make(s)
	l.signs[p] = wp
	runtime.AddCleanup(s, l.forgetSigns, signsKey{p, wp})
	return s
}

type signsKey struct {
	p  peer.ID
	wp weak.Pointer[Signs]
}

// forgetSigns drops p's entry once its record is collected, unless a new
// record took its place.
func (l *Liveness) forgetSigns(k signsKey) {
	l.mu.Lock()
	if l.signs[k.p] == k.wp {
		delete(l.signs, k.p)
	}
	l.mu.Unlock()
}

// lastSign returns when p last gave a sign of life other than a ping's
// answer, zero if never (or if nothing records its signs).
func (l *Liveness) lastSign(p peer.ID) time.Time {
	l.mu.Lock()
	s := l.signs[p].Value()
	l.mu.Unlock()
	if s == nil {
		return time.Time{}
	}
	return s.last()
}
