// Package limits keeps one peer from taking a node's service away from the
// others: a bound on the calls a peer may have in flight, a rate of calls per
// peer, strikes for refusals and broken frames that get a peer that persists
// banned (refused and disconnected) for a while, and libp2p resource manager
// limits per peer and per MCP protocol.
//
// A [Limiter] holds the per-peer state; the node asks it to [Limiter.Admit]
// each call it serves and tells it of each [Limiter.Strike]. Its
// [Limiter.Gater] keeps banned peers from connecting again, and
// [ResourceManager] bounds what any peer can make libp2p hold (streams,
// memory) before a call is even read.
package limits

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

var log = logging.Logger("mcpmesh/limits")

// Config sets a node's limits. A zero field takes its default (see
// DefaultConfig); a negative MaxConcurrentPerPeer, Rate, Strikes,
// MaxConcurrentPerPrincipal, PrincipalRate, MaxMessageValues,
// MaxMessageDepth, MaxBytesPerPeer, MaxBytesInFlight, WindowPerSession,
// PacedPerSession, MaxHandshakingPerPeer, HandshakeTimeout, IdleTimeout or
// LargeFrameRate turns that limit off.
type Config struct {
	// MaxConcurrentPerPeer bounds the calls one peer may have in flight at
	// once (default 64: each holds goroutines and a task, ~20 KB beyond its
	// message, and 50 peers at the bound stay within the memory bound of
	// DESIGN.md).
	MaxConcurrentPerPeer int
	// Rate is how many calls per second one peer may start, on average
	// (default 1000), with bursts of up to Burst calls (default 2000): a token
	// bucket per peer.
	Rate  float64
	Burst int
	// Strikes is how many strikes (refused calls, broken or oversized
	// frames) within about StrikeWindow get a peer banned (default 50 within
	// 10s). Strikes leak away at Strikes per StrikeWindow.
	Strikes      int
	StrikeWindow time.Duration
	// BanFor is how long a banned peer is refused and disconnected (default
	// one minute).
	BanFor time.Duration
	// MaxConcurrentPerPrincipal, PrincipalRate and PrincipalBurst bound the
	// calls made on behalf of one principal (the peer at the root of a
	// verified delegation) through other peers: a gateway, a relay, an agent.
	// They keep one user of a shared relay from using up the relay's own
	// limits here (defaults 64 in flight, 250 calls/s, bursts of 500: a
	// quarter of a peer's). Such a call counts against both the peer that
	// makes it and its principal; a principal's own calls count against its
	// peer limits only. Refusals for a principal's limits are not strikes:
	// the peer carrying its calls is not at fault.
	MaxConcurrentPerPrincipal int
	PrincipalRate             float64
	PrincipalBurst            int
	// MaxPeers bounds how many peers (and, apart, principals) the limiter
	// keeps state for (default 10000). Peers whose state is back to that of a newcomer are forgotten
	// first; past the bound, the least recently seen peer without calls in
	// flight is.
	MaxPeers int

	// MaxStreamsPerPeer bounds the inbound streams one peer may hold open on
	// the node, all protocols together (default 256).
	MaxStreamsPerPeer int
	// MaxMemoryPerPeer bounds the memory libp2p may reserve for one peer
	// (default 64 MiB).
	MaxMemoryPerPeer int64
	// MaxStreamsPerProtocolPeer bounds the inbound streams one peer may hold
	// open on one shared MCP server (default 64; a node needs one per server
	// it calls).
	MaxStreamsPerProtocolPeer int
	// MaxStreamsPerProtocol bounds the inbound streams all peers together
	// may hold open on one shared MCP server (default 2048).
	MaxStreamsPerProtocol int

	// MaxMessageValues and MaxMessageDepth bound one inbound message once
	// decoded: the JSON values it holds (every scalar, key, array and
	// object; default 65536) and how deep they nest (default 64). They
	// are counted as the message arrives; one over either is refused with
	// an error before anything decodes it (a strike).
	MaxMessageValues int
	MaxMessageDepth  int
	// MaxBytesPerPeer and MaxBytesInFlight bound the memory that the
	// messages in flight hold, as transport.FrameCost estimates it (the
	// message, its copies and its decoded values): those of one peer
	// (default 48 MiB, room for one message of the largest size and
	// values) and of all peers together (default 96 MiB, a quarter of it
	// kept for ordinary small requests). A message over the peer's budget
	// is refused with an error (a strike), one over the node's with an
	// error saying the node is busy (no strike).
	MaxBytesPerPeer  int64
	MaxBytesInFlight int64
	// WindowPerSession is how many requests one session may have in flight
	// (default 64, as MaxConcurrentPerPeer): at the window the node stops
	// reading that session until it answers one, so a peer that pipelines
	// waits instead of queueing work.
	WindowPerSession int
	// PacedPerSession is how many requests one session may have in flight
	// before each further one waits for an answer, up to 10 ms
	// (transport.PaceWait), before the node reads it (default 4): a peer
	// that pipelines quick requests has about that many served at a time,
	// so that its backlog does not multiply the other peers' latency,
	// while slow calls still reach the window.
	PacedPerSession int
	// MaxSessions bounds the inbound MCP sessions the node holds, all
	// peers and servers together (default 1024), MaxHandshaking those that
	// have not sent a request yet (default 256), MaxHandshakingPerPeer
	// those of one peer (default 8). A session past a bound makes room by
	// evicting another: the oldest silent one of the same peer, else one of
	// the peer holding the most sessions, silent first, then idle the
	// longest (see Sessions). So identities that cost nothing to make
	// cannot keep a newcomer out.
	MaxSessions           int
	MaxHandshaking        int
	MaxHandshakingPerPeer int
	// HandshakeTimeout is how long a new session may take to send its
	// first request (default 10s); IdleTimeout how long a session with
	// nothing in flight may go without one (default 30m) before it is
	// closed.
	HandshakeTimeout time.Duration
	IdleTimeout      time.Duration
	// LargeFramesAtOnce bounds how many sessions, of all peers, may be
	// reading a message longer than transport.LargeFrame (64 KiB) at once
	// (default one per two cores, at least one): the others wait their
	// turn, so that peers sending large messages cannot take every core
	// from the small ones.
	LargeFramesAtOnce int
	// LargeFrameRate is how fast the node reads those messages, all
	// sessions together, in bytes per second (default 8 MiB/s).
	LargeFrameRate int
	// ConnsPerIP bounds the connections open at once with one IP address,
	// both directions (default 64; libp2p's own is 8, too few for a team
	// behind one NAT). Loopback is not bounded.
	ConnsPerIP int
	// ConnRatePerIP and ConnBurstPerIP bound how fast connections with one
	// public IP address may be opened, both directions (default 1 a second,
	// bursts of 64; libp2p's own, one every 5 s in bursts of 16, trips on a
	// node restarted a few times). Loopback and private addresses (RFC 1918,
	// CGNAT, link-local, IPv6 ULA) are not rate limited: the concurrent
	// bound still holds there.
	ConnRatePerIP  float64
	ConnBurstPerIP int
}

// DefaultConfig returns the default limits.
func DefaultConfig() Config {
	return Config{
		MaxConcurrentPerPeer:      64,
		Rate:                      1000,
		Burst:                     2000,
		MaxConcurrentPerPrincipal: 64,
		PrincipalRate:             250,
		PrincipalBurst:            500,
		Strikes:                   50,
		StrikeWindow:              10 * time.Second,
		BanFor:                    time.Minute,
		MaxPeers:                  10000,
		MaxStreamsPerPeer:         256,
		MaxMemoryPerPeer:          64 << 20,
		MaxStreamsPerProtocolPeer: 64,
		MaxStreamsPerProtocol:     2048,
		MaxMessageValues:          transport.DefaultMaxValues,
		MaxMessageDepth:           transport.DefaultMaxDepth,
		MaxBytesPerPeer:           48 << 20,
		MaxBytesInFlight:          96 << 20,
		WindowPerSession:          transport.DefaultWindow,
		PacedPerSession:           transport.DefaultPaced,
		MaxSessions:               1024,
		MaxHandshaking:            256,
		MaxHandshakingPerPeer:     8,
		HandshakeTimeout:          transport.DefaultHandshakeTimeout,
		IdleTimeout:               transport.DefaultIdleTimeout,
		LargeFramesAtOnce:         max(runtime.GOMAXPROCS(0)/2, 1),
		LargeFrameRate:            transport.DefaultLargeFrameRate,
		ConnsPerIP:                64,
		ConnRatePerIP:             1,
		ConnBurstPerIP:            64,
	}
}

// withDefaults fills the zero fields of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&c.MaxConcurrentPerPeer, d.MaxConcurrentPerPeer)
	if c.Rate == 0 {
		c.Rate = d.Rate
	}
	if c.Burst <= 0 {
		c.Burst = max(d.Burst, int(math.Ceil(c.Rate)))
	}
	setInt(&c.MaxConcurrentPerPrincipal, d.MaxConcurrentPerPrincipal)
	if c.PrincipalRate == 0 {
		c.PrincipalRate = d.PrincipalRate
	}
	if c.PrincipalBurst <= 0 {
		c.PrincipalBurst = max(d.PrincipalBurst, int(math.Ceil(c.PrincipalRate)))
	}
	setInt(&c.Strikes, d.Strikes)
	setDur(&c.StrikeWindow, d.StrikeWindow)
	setDur(&c.BanFor, d.BanFor)
	if c.MaxPeers <= 0 {
		c.MaxPeers = d.MaxPeers
	}
	if c.MaxStreamsPerPeer <= 0 {
		c.MaxStreamsPerPeer = d.MaxStreamsPerPeer
	}
	if c.MaxMemoryPerPeer <= 0 {
		c.MaxMemoryPerPeer = d.MaxMemoryPerPeer
	}
	if c.MaxStreamsPerProtocolPeer <= 0 {
		c.MaxStreamsPerProtocolPeer = d.MaxStreamsPerProtocolPeer
	}
	if c.MaxStreamsPerProtocol <= 0 {
		c.MaxStreamsPerProtocol = d.MaxStreamsPerProtocol
	}
	setInt(&c.MaxMessageValues, d.MaxMessageValues)
	setInt(&c.MaxMessageDepth, d.MaxMessageDepth)
	if c.MaxBytesPerPeer == 0 {
		c.MaxBytesPerPeer = d.MaxBytesPerPeer
	}
	if c.MaxBytesInFlight == 0 {
		c.MaxBytesInFlight = d.MaxBytesInFlight
	}
	setInt(&c.WindowPerSession, d.WindowPerSession)
	setInt(&c.PacedPerSession, d.PacedPerSession)
	setInt(&c.LargeFrameRate, d.LargeFrameRate)
	setInt(&c.MaxSessions, d.MaxSessions)
	setInt(&c.MaxHandshaking, d.MaxHandshaking)
	setInt(&c.MaxHandshakingPerPeer, d.MaxHandshakingPerPeer)
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.LargeFramesAtOnce <= 0 {
		c.LargeFramesAtOnce = d.LargeFramesAtOnce
	}
	// Sessions are evicted to make room before the resource manager
	// refuses a stream on a server's protocol (which counts them too, per
	// server): the bounds stay below its own, with room for the streams
	// that arrive while one is being made.
	if room := c.MaxStreamsPerProtocol * 7 / 8; c.MaxSessions <= 0 || c.MaxSessions > room {
		c.MaxSessions = max(room, 1)
	}
	if c.MaxHandshaking <= 0 || c.MaxHandshaking > c.MaxSessions {
		c.MaxHandshaking = c.MaxSessions
	}
	if c.ConnsPerIP <= 0 {
		c.ConnsPerIP = d.ConnsPerIP
	}
	if c.ConnRatePerIP <= 0 {
		c.ConnRatePerIP = d.ConnRatePerIP
	}
	if c.ConnBurstPerIP <= 0 {
		c.ConnBurstPerIP = max(d.ConnBurstPerIP, int(math.Ceil(c.ConnRatePerIP)))
	}
	return c
}

// Reasons a call is refused, in [Refusal.Reason].
const (
	ReasonRate        = "rate"
	ReasonConcurrency = "concurrency"
	ReasonBanned      = "banned"
)

// Refusal is the error of a call refused for one of the caller's limits.
type Refusal struct {
	// Reason is ReasonRate, ReasonConcurrency or ReasonBanned.
	Reason string
	// Peer is the refused caller.
	Peer peer.ID
	// For is the principal whose limit refused the call, when the call was
	// made on its behalf and its limit (not Peer's) was reached.
	For peer.ID
	// Limit describes the limit in force, e.g. "32 in flight".
	Limit string
	// RetryAfter is when a call may succeed again, if known (0 if not).
	RetryAfter time.Duration
}

// Error implements error.
func (r *Refusal) Error() string {
	if r.For != "" {
		switch r.Reason {
		case ReasonConcurrency:
			return fmt.Sprintf("too many concurrent calls for %s (through %s): limit %s", r.For, r.Peer, r.Limit)
		case ReasonRate:
			return fmt.Sprintf("rate limit: %s for %s (through %s); retry in %v", r.Limit, r.For, r.Peer, r.RetryAfter.Round(time.Millisecond))
		}
	}
	switch r.Reason {
	case ReasonConcurrency:
		return fmt.Sprintf("too many concurrent calls from %s: limit %s", r.Peer, r.Limit)
	case ReasonRate:
		return fmt.Sprintf("rate limit: %s for %s; retry in %v", r.Limit, r.Peer, r.RetryAfter.Round(time.Millisecond))
	case ReasonBanned:
		return fmt.Sprintf("%s is banned for %v (persisted over its limits)", r.Peer, r.RetryAfter.Round(time.Second))
	default:
		return fmt.Sprintf("call from %s refused: %s (%s)", r.Peer, r.Reason, r.Limit)
	}
}

// IsRefusal reports whether err is or wraps a *Refusal, and returns it.
func IsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}

// Limiter holds the limits' state for each peer. It is safe for concurrent
// use and starts no goroutine: bans end when they are next looked at, and
// idle peers are forgotten as new ones come.
type Limiter struct {
	cfg  Config
	self peer.ID
	now  func() time.Time // time.Now; tests change it

	mu         sync.Mutex
	peers      table
	principals table // calls on behalf of a principal, through other peers
	onBan      []func(peer.ID, time.Time, string)
	memory     int64 // held by all peers' messages in flight (Budget)
	large      *transport.Gate

	sessions sessionTable
}

// table is the state of peers, or of principals, by ID.
type table struct {
	m       map[peer.ID]*peerState
	sweepAt int // sweep forgettable entries when the map grows past this
}

// peerState is what the limiter knows of one peer.
type peerState struct {
	calls    *rate.Limiter // nil when Rate is off
	strikes  *rate.Limiter // nil when Strikes is off
	inflight int
	memory   int64 // held by its messages in flight (Budget)
	seen     time.Time
	banned   time.Time // banned until then
}

// minSweep is the map size below which the limiter does not bother sweeping.
const minSweep = 256

// New returns a limiter with cfg's limits (zero fields take their defaults).
// self, the node's own ID, is never limited.
func New(cfg Config, self peer.ID) *Limiter {
	cfg = cfg.withDefaults()
	return &Limiter{
		cfg:        cfg,
		large:      transport.NewGate(cfg.LargeFramesAtOnce, cfg.LargeFrameRate),
		self:       self,
		now:        time.Now,
		peers:      table{m: make(map[peer.ID]*peerState), sweepAt: minSweep},
		principals: table{m: make(map[peer.ID]*peerState), sweepAt: minSweep},
	}
}

// Config returns the limits in force, defaults filled in.
func (l *Limiter) Config() Config { return l.cfg }

// Admit asks to start one call from p. It returns a *Refusal if p is banned,
// has MaxConcurrentPerPeer calls in flight, or is over its rate; otherwise
// the caller must call release (once) when the call ends.
func (l *Limiter) Admit(p peer.ID) (release func(), err error) {
	return l.AdmitFor(p, "")
}

// AdmitFor asks to start one call from p on behalf of principal, as Admit
// does, and also against principal's limits (MaxConcurrentPerPrincipal,
// PrincipalRate) when principal is neither "" nor p. A refusal for
// principal's limits has For set; nothing is counted unless the call is
// admitted.
func (l *Limiter) AdmitFor(p, principal peer.ID) (release func(), err error) {
	if p == l.self {
		return func() {}, nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.state(p, now)
	if now.Before(s.banned) {
		return nil, &Refusal{Reason: ReasonBanned, Peer: p, Limit: l.cfg.BanFor.String(), RetryAfter: s.banned.Sub(now)}
	}
	if r := l.check(s, now, l.cfg.MaxConcurrentPerPeer, l.cfg.Rate); r != nil {
		r.Peer = p
		return nil, r
	}
	var ps *peerState
	if principal != "" && principal != p && principal != l.self {
		ps = l.principalState(principal, now)
		if r := l.check(ps, now, l.cfg.MaxConcurrentPerPrincipal, l.cfg.PrincipalRate); r != nil {
			r.Peer, r.For = p, principal
			return nil, r
		}
		ps.take(now)
	}
	s.take(now)
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			s.inflight--
			if ps != nil {
				ps.inflight--
			}
			l.mu.Unlock()
		})
	}, nil
}

// check returns the refusal a call would get from s's limits, or nil; it
// changes nothing. l.mu must be held.
func (l *Limiter) check(s *peerState, now time.Time, maxInflight int, perSecond float64) *Refusal {
	if maxInflight > 0 && s.inflight >= maxInflight {
		return &Refusal{Reason: ReasonConcurrency, Limit: fmt.Sprintf("%d in flight", maxInflight)}
	}
	if s.calls != nil {
		if tokens := s.calls.TokensAt(now); tokens < 1 {
			wait := time.Duration((1 - tokens) / perSecond * float64(time.Second))
			return &Refusal{Reason: ReasonRate, Limit: fmt.Sprintf("%g calls/s", perSecond), RetryAfter: wait}
		}
	}
	return nil
}

// take counts one admitted call in s. l.mu must be held.
func (s *peerState) take(now time.Time) {
	if s.calls != nil {
		s.calls.AllowN(now, 1)
	}
	s.inflight++
}

// Strike records that p misbehaved (why says how: a refused call, a broken
// frame...). Strikes enough within the strike window ban p for BanFor: the
// OnBan functions run, once per ban, before Strike returns.
func (l *Limiter) Strike(p peer.ID, why string) {
	if p == l.self || l.cfg.Strikes < 0 {
		return
	}
	now := l.now()
	l.mu.Lock()
	s := l.state(p, now)
	if now.Before(s.banned) || s.strikes.AllowN(now, 1) {
		l.mu.Unlock()
		return
	}
	s.banned = now.Add(l.cfg.BanFor)
	s.strikes = l.newStrikes() // a full allowance when the ban ends
	until := s.banned
	onBan := l.onBan
	l.mu.Unlock()
	log.Warnw("peer banned", "peer", p, "for", l.cfg.BanFor, "why", why)
	for _, f := range onBan {
		f(p, until, why)
	}
}

// Banned reports whether p is banned, and until when.
func (l *Limiter) Banned(p peer.ID) (until time.Time, ok bool) {
	if p == l.self {
		return time.Time{}, false
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s, found := l.peers.m[p]
	if !found || !now.Before(s.banned) {
		return time.Time{}, false
	}
	return s.banned, true
}

// OnBan adds f to the functions run when a peer gets banned, with the peer,
// the end of its ban and the reason of its last strike. f runs on the
// goroutine of the strike that banned the peer and must not block.
func (l *Limiter) OnBan(f func(p peer.ID, until time.Time, why string)) {
	l.mu.Lock()
	l.onBan = append(l.onBan, f)
	l.mu.Unlock()
}

// Peers returns how many peers the limiter holds state for.
func (l *Limiter) Peers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.peers.m)
}

// Principals returns how many principals the limiter holds state for.
func (l *Limiter) Principals() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.principals.m)
}

func (l *Limiter) newStrikes() *rate.Limiter {
	if l.cfg.Strikes < 0 {
		return nil
	}
	// Strikes-1 in a burst are forgiven; the Strikes-th bans.
	leak := rate.Limit(float64(l.cfg.Strikes) / l.cfg.StrikeWindow.Seconds())
	return rate.NewLimiter(leak, l.cfg.Strikes-1)
}

// state returns p's state, creating it. l.mu must be held.
func (l *Limiter) state(p peer.ID, now time.Time) *peerState {
	return l.entry(&l.peers, p, now, func() *peerState {
		s := &peerState{strikes: l.newStrikes()}
		if l.cfg.Rate > 0 {
			s.calls = rate.NewLimiter(rate.Limit(l.cfg.Rate), l.cfg.Burst)
		}
		return s
	})
}

// principalState returns the state of principal, creating it. l.mu must be
// held.
func (l *Limiter) principalState(principal peer.ID, now time.Time) *peerState {
	return l.entry(&l.principals, principal, now, func() *peerState {
		s := &peerState{}
		if l.cfg.PrincipalRate > 0 {
			s.calls = rate.NewLimiter(rate.Limit(l.cfg.PrincipalRate), l.cfg.PrincipalBurst)
		}
		return s
	})
}

// entry returns p's entry in t, creating it with newState. l.mu must be held.
func (l *Limiter) entry(t *table, p peer.ID, now time.Time, newState func() *peerState) *peerState {
	s, ok := t.m[p]
	if !ok {
		if len(t.m) >= t.sweepAt || len(t.m) >= l.cfg.MaxPeers {
			l.sweep(t, now)
		}
		s = newState()
		t.m[p] = s
	}
	s.seen = now
	return s
}

// sweep forgets the entries of t whose state is that of a newcomer (nothing
// in flight, not banned, full buckets), then, if the map is still at
// MaxPeers, the least recently seen entries without calls in flight, bans
// included. l.mu must be held. Sweeps are amortized: the next one waits
// until the map has doubled.
func (l *Limiter) sweep(t *table, now time.Time) {
	for p, s := range t.m {
		if l.fresh(s, now) {
			delete(t.m, p)
		}
	}
	if len(t.m) >= l.cfg.MaxPeers {
		// Forget an eighth of the entries at once, the least recently seen
		// first, so that a flood of new peers costs a sort now and then.
		idle := make([]peer.ID, 0, len(t.m))
		for p, s := range t.m {
			if s.inflight == 0 && s.memory == 0 {
				idle = append(idle, p)
			}
		}
		slices.SortFunc(idle, func(a, b peer.ID) int { return t.m[a].seen.Compare(t.m[b].seen) })
		n := min(len(idle), max(1, l.cfg.MaxPeers/8))
		bans := 0
		for _, p := range idle[:n] {
			if now.Before(t.m[p].banned) {
				bans++
			}
			delete(t.m, p)
		}
		if bans > 0 {
			log.Warnw("too many peers tracked: forgot some bans", "bans", bans, "max", l.cfg.MaxPeers)
		}
		// With every peer in flight, the map outgrows MaxPeers: their calls
		// are bounded by the stream limits.
	}
	t.sweepAt = max(minSweep, 2*len(t.m))
}

// fresh reports whether s is what a newcomer's state would be.
func (l *Limiter) fresh(s *peerState, now time.Time) bool {
	if s.inflight > 0 || s.memory > 0 || now.Before(s.banned) {
		return false
	}
	if s.calls != nil && s.calls.TokensAt(now) < float64(s.calls.Burst()) {
		return false
	}
	return s.strikes == nil || s.strikes.TokensAt(now) >= float64(s.strikes.Burst())
}
