package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// PoolConfig bounds the sessions a Pool gives callers.
type PoolConfig struct {
	// MaxSessions bounds the callers' sessions open at once, MaxPerCaller
	// those of one caller (a peer). Zero means DefaultMaxSessions and
	// DefaultMaxPerCaller.
	MaxSessions, MaxPerCaller int
	// Spares is how many processes a program's pool keeps started ahead of
	// their callers. Zero means DefaultSpares; negative, none.
	Spares int
	// IdleTimeout ends a session that has carried no message either way for
	// that long and has nothing in flight. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// The defaults of PoolConfig. A program process costs tens of megabytes (a
// Node.js server about 50 MB, a Go one about 10 MB): 16 bound a node's
// share to about a gigabyte at worst, and 4 per caller leave room for a
// peer's own pooled session and a few of its hosts' sessions while no one
// peer takes them all. Idle sessions end after the time the HTTP gateway
// keeps an idle host session.
const (
	DefaultMaxSessions  = 16
	DefaultMaxPerCaller = 4
	DefaultSpares       = 1
	DefaultIdleTimeout  = 30 * time.Minute
)

// ErrPoolFull is what Acquire returns (errors.Is) when a bound is reached.
var ErrPoolFull = errors.New("too many sessions")

// ErrPoolClosed is what Acquire returns once the pool is closed.
var ErrPoolClosed = errors.New("share stopped")

// Pool gives each caller session a session of its own with an upstream: a
// process of its own for a program (one started ahead, so that the first
// call does not wait for the program to start), a session of its own for
// an HTTP server. Its goroutines (spares being started, the idle sweep) are
// its own: Close ends them and every session, and waits.
type Pool struct {
	up  *Upstream
	cfg PoolConfig

	mu       sync.Mutex
	spares   []*Session
	starting int // spares being started
	leases   map[*Lease]struct{}
	byCaller map[string]int
	closed   bool
	lastErr  string
	wg       sync.WaitGroup
	stop     chan struct{}
	backoff  time.Duration // before the next spare, after a failed start
}

// NewPool returns the pool of up's sessions, and starts its spares.
func NewPool(up *Upstream, cfg PoolConfig) *Pool {
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxPerCaller <= 0 {
		cfg.MaxPerCaller = DefaultMaxPerCaller
	}
	switch {
	case !up.Process || cfg.Spares < 0:
		cfg.Spares = 0 // an HTTP session costs nothing before its first request
	case cfg.Spares == 0:
		cfg.Spares = DefaultSpares
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	p := &Pool{up: up, cfg: cfg, leases: map[*Lease]struct{}{}, byCaller: map[string]int{}, stop: make(chan struct{})}
	p.mu.Lock()
	p.refillLocked()
	p.mu.Unlock()
	p.wg.Add(1)
	go p.sweep()
	return p
}

// Config returns the pool's bounds, defaults filled in.
func (p *Pool) Config() PoolConfig { return p.cfg }

// A Lease is one caller's session with the upstream. Release ends it.
type Lease struct {
	*Session
	pool     *Pool
	caller   string
	last     atomic.Int64 // unix nanoseconds of the last frame either way
	busy     atomic.Pointer[func() bool]
	released atomic.Bool
}

// SetBusy tells the pool how to know that the session has something in
// flight: the idle sweep leaves it open then.
func (l *Lease) SetBusy(f func() bool) { l.busy.Store(&f) }

// isBusy reports what SetBusy's function says (false without one).
func (l *Lease) isBusy() bool {
	f := l.busy.Load()
	return f != nil && (*f)()
}

// ReadFrame implements Conn, noting the activity.
func (l *Lease) ReadFrame() ([]byte, error) {
	if w := l.Session.warm; w != nil {
		<-w.done
		if f, err, ok := w.take(); ok {
			l.last.Store(time.Now().UnixNano())
			return f, err
		}
	}
	f, err := l.Session.ReadFrame()
	l.last.Store(time.Now().UnixNano())
	return f, err
}

// WriteFrame implements Conn, noting the activity.
func (l *Lease) WriteFrame(frame []byte) error {
	l.last.Store(time.Now().UnixNano())
	return l.Session.WriteFrame(frame)
}

// Close implements Conn: it releases the lease.
func (l *Lease) Close() error {
	l.Release()
	return nil
}

// Release ends the session (and its program) and frees its place.
func (l *Lease) Release() {
	if l.released.Swap(true) {
		return
	}
	l.Session.Close()
	p := l.pool
	p.mu.Lock()
	delete(p.leases, l)
	if p.byCaller[l.caller]--; p.byCaller[l.caller] <= 0 {
		delete(p.byCaller, l.caller)
	}
	p.mu.Unlock()
}

// Acquire returns a session of its own for a session of caller: a spare
// started ahead if one is ready, else a new one. When caller or the pool
// has as many as it may, the least recently active idle session (of
// caller, or of anyone for the pool's bound) ends to make room: hosts
// often leave sessions open that they no longer use (nothing in MCP makes
// them end one), and those must not lock their callers out until the idle
// timeout. Acquire fails with ErrPoolFull, naming the bound, only when
// every session that could make room has something in flight.
func (p *Pool) Acquire(ctx context.Context, caller string) (*Lease, error) {
	for attempt := 0; ; attempt++ {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		var full error
		var victim *Lease
		if n := len(p.leases); n >= p.cfg.MaxSessions {
			full = fmt.Errorf("%w: share %s has %d sessions open, each with a call in flight, the most it may have (sessions per share: shares.%s.sessions.max in the node's config)", ErrPoolFull, p.up.Name, n, p.up.Name)
			victim = p.idlestLocked("")
		} else if n := p.byCaller[caller]; n >= p.cfg.MaxPerCaller {
			full = fmt.Errorf("%w: share %s has %d sessions open for %s, each with a call in flight, the most one caller may have (sessions per caller: shares.%s.sessions.perCaller in the node's config)", ErrPoolFull, p.up.Name, n, caller, p.up.Name)
			victim = p.idlestLocked(caller)
		}
		if full == nil {
			break // p.mu held
		}
		p.mu.Unlock()
		if victim == nil || attempt >= 4 { // 4: others racing for the places freed
			return nil, full
		}
		shareLog.Infof("share %s: ending the least recently active idle session (caller %s) to make room for a new one of %s", p.up.Name, victim.caller, caller)
		victim.Release()
	}
	l := &Lease{pool: p, caller: caller}
	p.leases[l] = struct{}{}
	p.byCaller[caller]++
	var s *Session
	for len(p.spares) > 0 && s == nil {
		s, p.spares = p.spares[0], p.spares[1:]
		if done, _ := s.Exited(); done {
			s.Close() // a spare that died waiting
			s = nil
		}
	}
	p.refillLocked()
	p.mu.Unlock()
	if s == nil {
		var err error
		if s, err = p.up.Open(); err != nil {
			l.released.Store(true)
			p.mu.Lock()
			delete(p.leases, l)
			if p.byCaller[caller]--; p.byCaller[caller] <= 0 {
				delete(p.byCaller, caller)
			}
			p.lastErr = err.Error()
			p.mu.Unlock()
			return nil, fmt.Errorf("share %s: %w", p.up.Name, err)
		}
	}
	l.last.Store(time.Now().UnixNano())
	p.mu.Lock()
	l.Session = s
	closed := p.closed
	p.mu.Unlock()
	if closed { // Close ran meanwhile and did not see this session
		l.Release()
		return nil, ErrPoolClosed
	}
	return l, nil
}

// idlestLocked returns the open session of caller ("" for any caller) that
// has carried nothing for the longest and has nothing in flight, or nil.
func (p *Pool) idlestLocked(caller string) *Lease {
	var idlest *Lease
	for l := range p.leases {
		if l.Session == nil || (caller != "" && l.caller != caller) || l.isBusy() {
			continue
		}
		if idlest == nil || l.last.Load() < idlest.last.Load() {
			idlest = l
		}
	}
	return idlest
}

// refillLocked starts spares up to the configured count, one at a time.
func (p *Pool) refillLocked() {
	if p.closed || p.starting > 0 || len(p.spares) >= p.cfg.Spares {
		return
	}
	p.starting++
	wait := p.backoff
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if wait > 0 && !p.sleep(wait) {
			p.mu.Lock()
			p.starting--
			p.mu.Unlock()
			return
		}
		s, err := p.up.Open()
		if err == nil && p.up.Process {
			s.warm = warmUp(s, &p.wg, p.stop)
		}
		p.mu.Lock()
		p.starting--
		switch {
		case err != nil:
			p.lastErr = err.Error()
			p.backoff = min(max(2*p.backoff, time.Second), 30*time.Second)
			shareLog.Warnw("start a spare process", "server", p.up.Name, "error", err, "retry in", p.backoff)
		case p.closed:
			p.mu.Unlock()
			s.Close()
			return
		default:
			p.backoff = 0
			p.spares = append(p.spares, s)
		}
		p.refillLocked()
		p.mu.Unlock()
	}()
}

// sleep waits d, or until the pool closes (false).
func (p *Pool) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.stop:
		return false
	}
}

// sweep ends idle sessions, and starts spares again after failures.
func (p *Pool) sweep() {
	defer p.wg.Done()
	every := min(max(p.cfg.IdleTimeout/4, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-p.cfg.IdleTimeout).UnixNano()
		var idle []*Lease
		p.mu.Lock()
		for l := range p.leases {
			if l.Session != nil && l.last.Load() < cutoff && !l.isBusy() {
				idle = append(idle, l)
			}
		}
		p.refillLocked()
		p.mu.Unlock()
		for _, l := range idle {
			shareLog.Infof("share %s: ending a session idle for %v (caller %s)", p.up.Name, p.cfg.IdleTimeout, l.caller)
			l.Release()
		}
	}
}

// Stats reports the callers' sessions open, the spares ready, and the last
// failure to start a session ("" for none).
func (p *Pool) Stats() (sessions, spares int, lastErr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.leases), len(p.spares), p.lastErr
}

// Close ends every session and spare, and waits for the pool's goroutines.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	spares := p.spares
	p.spares = nil
	leases := make([]*Lease, 0, len(p.leases))
	for l := range p.leases {
		if l.Session != nil {
			leases = append(leases, l)
		}
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range spares {
		wg.Go(func() { s.Close() })
	}
	for _, l := range leases {
		wg.Go(l.Release)
	}
	wg.Wait()
	p.wg.Wait()
}

// A spare program is warmed up before a caller gets it: it is sent an MCP
// ping (which a client may send before initialize) and its answer is
// awaited, so that the caller's initialize does not wait for the program's
// own start-up (a Node.js program loads its modules for a second or more
// after its process starts). The answer is the pool's, never passed on.
const warmUpPing = `{"jsonrpc":"2.0","id":"mcpmesh-warm-up","method":"ping"}`

var warmUpID = []byte(`"mcpmesh-warm-up"`)

// warmUpWait bounds how long a spare's warm-up is waited for before the
// spare is offered anyway (a program that never answers a ping before
// initialize): then its first caller waits for its start-up, as without
// warm-up.
const warmUpWait = 20 * time.Second

// warming is a spare's warm-up: done is closed once its reader has read the
// ping's answer, or something else (kept for the caller), or failed.
type warming struct {
	done  chan struct{}
	mu    sync.Mutex
	frame []byte // read during warm-up, not the ping's answer: the caller's
	err   error
	taken bool
}

// take returns, once, what the warm-up read that is the caller's.
func (w *warming) take() ([]byte, error, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.taken || (w.frame == nil && w.err == nil) {
		return nil, nil, false
	}
	w.taken = true
	return w.frame, w.err, true
}

// warmUp pings s and reads its first frame in a goroutine of wg, which
// ends with that frame (or an error: closing s ends the read); it waits for
// that up to warmUpWait or until stop is closed.
func warmUp(s *Session, wg *sync.WaitGroup, stop <-chan struct{}) *warming {
	w := &warming{done: make(chan struct{})}
	if err := s.Conn.WriteFrame([]byte(warmUpPing)); err != nil {
		w.err = err
		close(w.done)
		return w
	}
	wg.Go(func() {
		defer close(w.done)
		f, err := s.Conn.ReadFrame()
		if err == nil && isAnswerTo(f, warmUpID) {
			return
		}
		w.mu.Lock()
		w.frame, w.err = f, err
		w.mu.Unlock()
	})
	t := time.NewTimer(warmUpWait)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	case <-stop:
	}
	return w
}

// isAnswerTo reports whether frame is a response (result or error) to the
// request with the JSON ID id.
func isAnswerTo(frame, id []byte) bool {
	var env struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	return json.Unmarshal(frame, &env) == nil && env.Method == "" && bytes.Equal(bytes.TrimSpace(env.ID), id)
}
