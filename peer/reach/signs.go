package reach

import (
	"runtime"
	"sync/atomic"
	"time"
	"weak"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Signs records the last sign of life of one connection to a peer other
// than an answer to a ping: bytes read from it on a stream, or a write to
// it that went on against backpressure (the peer acknowledging what it was
// sent). A ping's answer can wait longer than the timeout behind a large
// message on the same connection (yamux over TCP is one byte stream, and a
// slow link's send buffer holds seconds of it); a connection still carrying
// data is not lost, so the checker waits while signs come (see Liveness).
// The signs are a connection's, not a peer's: bytes on one connection to a
// peer say nothing of another, which may be dead (a peer's old TCP
// connection after a network change, while it calls this node on a new
// one).
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

// signsKey names a connection: its peer, and its ID in the host.
type signsKey struct {
	p    peer.ID
	conn string
}

func keyOf(c network.Conn) signsKey { return signsKey{c.RemotePeer(), c.ID()} }

// Signs returns the record of the signs of life of c, a connection to a
// peer, to be told of them by whatever reads from or writes to a stream on
// c (an MCP stream's connection). The record is c's as long as anything
// holds it: when the last holder is gone, the garbage collector takes it,
// and the checker's entry with it, so the records cost nothing once the
// streams that fed them end.
func (l *Liveness) Signs(c network.Conn) *Signs {
	k := keyOf(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.signs[k].Value(); s != nil {
		return s
	}
	s := &Signs{epoch: l.epoch}
	wp := weak.Make(s)
	l.signs[k] = wp
	runtime.AddCleanup(s, l.forgetSigns, signsEntry{k, wp})
	return s
}

type signsEntry struct {
	k  signsKey
	wp weak.Pointer[Signs]
}

// forgetSigns drops a connection's entry once its record is collected,
// unless a new record took its place.
func (l *Liveness) forgetSigns(e signsEntry) {
	l.mu.Lock()
	if l.signs[e.k] == e.wp {
		delete(l.signs, e.k)
	}
	l.mu.Unlock()
}

// lastSign returns when c last gave a sign of life other than a ping's
// answer, zero if never (or if nothing records its signs).
func (l *Liveness) lastSign(c network.Conn) time.Time {
	k := keyOf(c)
	l.mu.Lock()
	s := l.signs[k].Value()
	l.mu.Unlock()
	if s == nil {
		return time.Time{}
	}
	return s.last()
}
