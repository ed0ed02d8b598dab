package reach

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// Default liveness timing: a ping every second while a peer is held, and a
// connection silent for three seconds is lost.
const (
	DefaultLivenessInterval = time.Second
	DefaultLivenessTimeout  = 3 * time.Second
)

// Lost describes a peer that stopped answering.
type Lost struct {
	Peer peer.ID
	// Conn is the connection the unanswered ping went over (nil if no
	// stream could even be opened: then every connection to Peer is closed).
	Conn network.Conn
	// Silent is how long the peer went without answering; At is when the
	// connection was closed for it.
	Silent time.Duration
	At     time.Time
}

// Liveness tells within seconds that a peer this node is working with has
// gone: a partition that drops packets silently, or a node killed without a
// word, is otherwise seen only after the transport's idle timeout (30 s and
// more over QUIC, longer still over TCP).
//
// While a peer is held (Hold: a call in flight to it, a task served for it)
// a goroutine pings it with libp2p's ping protocol every interval, on
// whatever connection the peer is best reached by (relayed ones included).
// When a ping goes unanswered for timeout, that connection is closed: every
// stream on it resets, so calls to the peer fail at once ("connection lost")
// and the handlers serving it are cancelled. The swarm's dial backoff for the
// peer is cleared, so the first call once the link heals dials at once.
//
// A peer nobody holds costs nothing: no ping, and no goroutine either once
// an interval has passed since its last hold (the watch waits that long for
// the next one, so that a peer called again and again, one short call after
// another, is not a new goroutine and timer per call). A hold shorter than
// one interval sends no ping at all.
type Liveness struct {
	h                 host.Host
	interval, timeout time.Duration
	onLost            func(Lost)

	mu      sync.Mutex
	watches map[peer.ID]*watch
	recent  map[peer.ID]Lost // losses of the last minute, for error messages
	signs   map[signsKey]weak.Pointer[Signs]
	epoch   time.Time // what Signs count from
	closed  bool
	wg      sync.WaitGroup

	pings  atomic.Uint64
	losses atomic.Uint64
}

type watch struct {
	refs   int
	since  time.Time // when refs last went from 0 to 1
	cancel context.CancelFunc
}

// NewLiveness returns a checker for the peers of h. onLost, if not nil, is
// called (on the watching goroutine) after a lost connection was closed.
func NewLiveness(h host.Host, interval, timeout time.Duration, onLost func(Lost)) *Liveness {
	if interval <= 0 {
		interval = DefaultLivenessInterval
	}
	if timeout <= 0 {
		timeout = DefaultLivenessTimeout
	}
	return &Liveness{h: h, interval: interval, timeout: timeout, onLost: onLost, watches: map[peer.ID]*watch{}, recent: map[peer.ID]Lost{},
		signs: map[signsKey]weak.Pointer[Signs]{}, epoch: time.Now()}
}

// Hold watches p until release is called; holds are counted, so p is
// watched while any is held. release may be called more than once.
func (l *Liveness) Hold(p peer.ID) (release func()) {
	if p == l.h.ID() {
		return func() {}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return func() {}
	}
	w := l.watches[p]
	if w == nil {
		ctx, cancel := context.WithCancel(context.Background())
		w = &watch{cancel: cancel}
		l.watches[p] = w
		l.wg.Add(1)
		go l.watch(ctx, p, w)
	}
	if w.refs == 0 {
		w.since = time.Now()
	}
	w.refs++
	var released atomic.Bool
	return func() {
		if released.CompareAndSwap(false, true) {
			l.mu.Lock()
			w.refs--
			l.mu.Unlock()
		}
	}
}

// due says what the watch w of p does at its timer: end (no hold since the
// last interval began: it is let go), wait longer (held for less than an
// interval), or ping.
func (l *Liveness) due(p peer.ID, w *watch) (end bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.refs == 0 {
		w.cancel()
		if l.watches[p] == w {
			delete(l.watches, p)
		}
		return true, 0
	}
	return false, l.interval - time.Since(w.since)
}

// Close stops every watch and waits for them.
func (l *Liveness) Close() {
	l.mu.Lock()
	l.closed = true
	for p, w := range l.watches {
		w.cancel()
		delete(l.watches, p)
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// recentLoss is how long a loss is remembered for LostRecently.
const recentLoss = time.Minute

// LostRecently returns the last loss of p if it happened within d (at most
// a minute ago): a call that failed for a lost connection can say why.
func (l *Liveness) LostRecently(p peer.ID, d time.Duration) (Lost, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	x, ok := l.recent[p]
	if !ok || time.Since(x.At) > min(d, recentLoss) {
		return Lost{}, false
	}
	return x, true
}

// LivenessStats counts what the checker did.
type LivenessStats struct {
	Watched int    // peers held now
	Pings   uint64 // ping round trips attempted since start
	Losses  uint64 // connections closed for silence since start
}

// Stats returns the checker's counters.
func (l *Liveness) Stats() LivenessStats {
	l.mu.Lock()
	n := 0
	for _, w := range l.watches {
		if w.refs > 0 {
			n++
		}
	}
	l.mu.Unlock()
	return LivenessStats{Watched: n, Pings: l.pings.Load(), Losses: l.losses.Load()}
}

// errNoPing marks a peer that does not answer the ping protocol at all: it
// cannot be watched, which is no reason to drop it.
var errNoPing = errors.New("peer does not speak ping")

func (l *Liveness) watch(ctx context.Context, p peer.ID, w *watch) {
	defer l.wg.Done()
	var s network.Stream
	defer func() {
		if s != nil {
			s.Reset()
		}
	}()
	buf := make([]byte, 2*ping.PingSize)
	t := time.NewTimer(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if end, wait := l.due(p, w); end {
			return
		} else if wait > 0 {
			t.Reset(wait)
			continue
		}
		if l.h.Network().Connectedness(p) == network.NotConnected {
			// Nothing to watch: the streams on the last connection are gone
			// already. A new connection is watched once it comes.
			t.Reset(l.interval)
			continue
		}
		start := time.Now()
		conn, err := l.roundTrip(ctx, p, &s, buf)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errNoPing):
			log.Debugw("cannot watch peer: it does not answer pings", "peer", p)
			return
		case errors.Is(err, errSilent):
			l.lost(Lost{Peer: p, Conn: conn, Silent: time.Since(start)})
		}
		t.Reset(l.interval)
	}
}

// errSilent marks a ping that went unanswered until the timeout.
var errSilent = errors.New("no answer to ping")

// roundTrip sends one ping and waits for its answer, reopening the ping
// stream once if it ended (the responder closes its side every 30 s).
// errSilent, with the connection used, means the peer did not answer within
// the timeout.
func (l *Liveness) roundTrip(ctx context.Context, p peer.ID, sp *network.Stream, buf []byte) (network.Conn, error) {
	deadline := time.Now().Add(l.timeout)
	var conn network.Conn
	for try := 0; try < 2; try++ {
		if *sp == nil {
			sctx, cancel := context.WithDeadline(ctx, deadline)
			// Never dial: a peer with no connection has no call to fail.
			sctx = network.WithNoDial(network.WithAllowLimitedConn(sctx, "liveness"), "liveness")
			s, err := l.h.NewStream(sctx, p, ping.ID)
			cancel()
			switch {
			case err == nil:
				*sp = s
			case ctx.Err() != nil:
				return nil, ctx.Err()
			case !time.Now().Before(deadline):
				if l.showsLife(p, nil) {
					// Negotiation waits behind data the peer still sends:
					// try again at the next interval.
					return nil, nil
				}
				return nil, errSilent // identify or negotiation never came back
			case l.h.Network().Connectedness(p) == network.NotConnected:
				return nil, nil
			default:
				return nil, errNoPing
			}
		}
		s := *sp
		conn = s.Conn()
		l.pings.Add(1)
		s.SetDeadline(deadline)
		out, in := buf[:ping.PingSize], buf[ping.PingSize:]
		rand.Read(out)
		sent := time.Now()
		_, err := s.Write(out)
		if err == nil {
			_, err = io.ReadFull(s, in)
		}
		if err == nil && bytes.Equal(out, in) {
			l.h.Peerstore().RecordLatency(p, time.Since(sent))
			return conn, nil
		}
		s.Reset()
		*sp = nil
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !time.Now().Before(deadline) {
			if l.showsLife(p, conn) {
				// The answer waits behind data the peer still sends (a
				// stream whose read timed out is not read again: its
				// protocol negotiation may be what timed out).
				log.Debugw("ping unanswered within the timeout, but the peer gives signs of life", "peer", p)
				return conn, nil
			}
			return conn, errSilent
		}
	}
	return conn, nil // the stream broke twice without a timeout: try again next time
}

// showsLife reports whether conn, a connection to p, gave a sign of life
// other than a ping's answer (see Signs) within the timeout; with conn nil
// (the ping stream never opened, so its connection is not known), whether
// any connection to p did.
func (l *Liveness) showsLife(p peer.ID, conn network.Conn) bool {
	conns := []network.Conn{conn}
	if conn == nil {
		conns = l.h.Network().ConnsToPeer(p)
	}
	for _, c := range conns {
		if time.Since(l.lastSign(c)) < l.timeout {
			return true
		}
	}
	return false
}

// lost closes the silent connection (or every connection to the peer) and
// clears the dial backoff, so that the next call redials at once.
func (l *Liveness) lost(x Lost) {
	l.losses.Add(1)
	x.At = time.Now()
	l.mu.Lock()
	for p, old := range l.recent {
		if x.At.Sub(old.At) > recentLoss {
			delete(l.recent, p)
		}
	}
	l.recent[x.Peer] = x
	l.mu.Unlock()
	var err error
	if x.Conn != nil {
		err = x.Conn.Close()
	} else {
		err = l.h.Network().ClosePeer(x.Peer)
	}
	if err != nil {
		log.Debugw("close silent connection", "peer", x.Peer, "error", err)
	}
	if sw, ok := l.h.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(x.Peer)
	}
	if l.onLost != nil {
		l.onLost(x)
	}
}
