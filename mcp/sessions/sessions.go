// Package sessions keeps the MCP client sessions a node has open to its
// peers' servers: one per peer and server, shared by every concurrent call,
// opened on first use and forgotten when it ends.
package sessions

import (
	"context"
	"errors"
	"sync"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// ErrClosed is returned by a closed [Pool].
var ErrClosed = errors.New("session pool closed")

// DialFunc opens a new MCP client session to the server called server on
// peer p. ctx bounds the dial and handshake only.
type DialFunc func(ctx context.Context, p lpeer.ID, server string) (*sdkmcp.ClientSession, error)

// Key names one client session: a peer and one of its servers.
type Key struct {
	Peer   lpeer.ID
	Server string
}

func (k Key) String() string { return k.Peer.String() + "/" + k.Server }

// Pool keeps at most one open MCP client session per peer and server,
// shared by every concurrent caller. A session that ends (the peer closed
// it, the connection dropped) is forgotten, and the next Get dials anew.
type Pool struct {
	dial  DialFunc
	onEnd func(Key, *sdkmcp.ClientSession)

	mu     sync.Mutex
	m      map[Key]*sessionEntry
	closed bool
	wg     sync.WaitGroup // one watcher per open session
}

type sessionEntry struct {
	ready chan struct{} // closed when cs or err is set
	cs    *sdkmcp.ClientSession
	err   error
}

// NewPool returns an empty pool that opens sessions with dial. onEnd,
// if not nil, is called once for each session after it has ended.
func NewPool(dial DialFunc, onEnd func(Key, *sdkmcp.ClientSession)) *Pool {
	return &Pool{dial: dial, onEnd: onEnd, m: map[Key]*sessionEntry{}}
}

// Get returns the open session to key, dialing one if there is none. Callers
// that ask for the same key while a dial is in flight wait for that dial.
// The dial itself runs under dialCtx, not ctx, so that one caller giving up
// does not fail the others; ctx only bounds this caller's wait.
func (s *Pool) Get(ctx context.Context, key Key, dialCtx func() (context.Context, context.CancelFunc)) (*sdkmcp.ClientSession, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	e, ok := s.m[key]
	if !ok {
		e = &sessionEntry{ready: make(chan struct{})}
		s.m[key] = e
		s.wg.Add(1)
		go s.open(key, e, dialCtx)
	}
	s.mu.Unlock()

	select {
	case <-e.ready:
		return e.cs, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// open dials key and, on success, watches the session until it ends.
func (s *Pool) open(key Key, e *sessionEntry, dialCtx func() (context.Context, context.CancelFunc)) {
	defer s.wg.Done()
	ctx, cancel := dialCtx()
	cs, err := s.dial(ctx, key.Peer, key.Server)
	cancel()

	s.mu.Lock()
	if err == nil && s.closed {
		err = ErrClosed
		cs.Close()
		cs = nil
	}
	e.cs, e.err = cs, err
	if err != nil {
		delete(s.m, key) // failures are not cached: the next Get dials again
	}
	close(e.ready)
	s.mu.Unlock()
	if err != nil {
		return
	}
	cs.Wait()
	// Close even so: on 2026-07-28 sessions the SDK's subscriptions/listen
	// goroutine ends only on Close, not when the peer ends the session.
	cs.Close()
	s.forget(key, cs)
	if s.onEnd != nil {
		s.onEnd(key, cs)
	}
}

func (s *Pool) forget(key Key, cs *sdkmcp.ClientSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok && e.cs == cs {
		delete(s.m, key)
	}
}

// Drop closes the session to key if it is cs (or any session, if cs is nil).
// The next Get dials anew.
func (s *Pool) Drop(key Key, cs *sdkmcp.ClientSession) {
	s.mu.Lock()
	e, ok := s.m[key]
	if !ok || (cs != nil && e.cs != cs) {
		s.mu.Unlock()
		return
	}
	select {
	case <-e.ready:
	default:
		s.mu.Unlock()
		return // still dialing: nothing to drop yet
	}
	delete(s.m, key)
	s.mu.Unlock()
	if e.cs != nil {
		e.cs.Close()
	}
}

// Retire takes cs, the session to key, out of the pool without closing it:
// the next Get dials anew while calls in flight on cs finish. Its owner
// closes it. Retire reports whether cs was in the pool.
func (s *Pool) Retire(key Key, cs *sdkmcp.ClientSession) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok || e.cs != cs {
		return false
	}
	delete(s.m, key)
	return true
}

// Lookup returns the open session to key, if there is one, without dialing.
func (s *Pool) Lookup(key Key) (*sdkmcp.ClientSession, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return nil, false
	}
	select {
	case <-e.ready:
		return e.cs, e.cs != nil
	default:
		return nil, false
	}
}

// Open lists the keys of the sessions open now.
func (s *Pool) Open() []Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []Key
	for k, e := range s.m {
		select {
		case <-e.ready:
			if e.cs != nil {
				keys = append(keys, k)
			}
		default:
		}
	}
	return keys
}

// Close closes every session and waits for in-flight dials to finish.
func (s *Pool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var open []*sdkmcp.ClientSession
	for _, e := range s.m {
		select {
		case <-e.ready:
			if e.cs != nil {
				open = append(open, e.cs)
			}
		default:
		}
	}
	s.mu.Unlock()
	// A session the peer already ended fails to close with EOF or a reset:
	// nothing to report, the session is gone either way.
	for _, cs := range open {
		cs.Close()
	}
	s.wg.Wait()
	return nil
}
