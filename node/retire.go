package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/sessions"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// drainPoll is how often UnshareGracefully looks whether the calls in flight
// on a server being removed have been answered.
const drainPoll = 50 * time.Millisecond

// liveRelays are the relayed sessions of one shared server (a program's,
// an endpoint's or a peer's), so that removing the server can wait for
// their calls in flight and answer those that outlive the wait.
type liveRelays struct {
	mu       sync.Mutex
	set      map[*liveRelay]struct{}
	draining atomic.Bool // being removed: no new requests
}

// liveRelay is one relayed session: whether it has a call in flight, and
// how to answer those calls with a failure.
type liveRelay struct {
	busy func() bool
	lose func(error)
}

func (l *liveRelays) add(r *liveRelay) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.set == nil {
		l.set = map[*liveRelay]struct{}{}
	}
	l.set[r] = struct{}{}
}

func (l *liveRelays) remove(r *liveRelay) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.set, r)
}

// busy returns the relays with calls in flight.
func (l *liveRelays) busy() []*liveRelay {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*liveRelay
	for r := range l.set {
		if r.busy() {
			out = append(out, r)
		}
	}
	return out
}

// refuseWhileDraining passes frames from the caller on to next, but, once
// the server is being removed, answers new requests with an error instead
// (answers to the server's own requests, and notifications, still pass:
// the calls in flight may need them to finish).
func (l *liveRelays) refuseWhileDraining(name string, self lpeer.ID, next relay.FrameRewrite) relay.FrameRewrite {
	return func(f *relay.Frame) error {
		if l.draining.Load() {
			if req := f.Request(); req != nil && req.ID.IsValid() {
				reply, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{
					Code:    jsonrpc.CodeInternalError,
					Message: fmt.Sprintf("server %q is being removed from node %s: it takes no new requests", name, self),
				}})
				if err != nil {
					return err
				}
				f.Answer(reply)
				return nil
			}
		}
		if next == nil {
			return nil
		}
		return next(f)
	}
}

// ErrUnshared is the cause a call in flight on a removed server is failed
// with, when it was not answered within the time UnshareGracefully gave it.
var ErrUnshared = errors.New("the server was removed from the node")

// Unshare stops sharing the server called name at once: new sessions are
// refused; open sessions to it are closed, and the calls in flight on them
// fail with ErrUnshared.
func (n *Node) Unshare(name string) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return n.UnshareGracefully(ctx, name)
}

// UnshareGracefully stops sharing the server called name: at once, peers
// can open no new session to it and the node's card no longer lists it;
// the calls in flight on sessions relayed to a program, an endpoint or a
// peer may finish until ctx ends (a grace period), while new requests on
// those sessions are refused with an error; then what is still in
// flight fails with ErrUnshared, open sessions are closed and the program's
// processes stopped. It returns once all of that is done.
func (n *Node) UnshareGracefully(ctx context.Context, name string) error {
	// Close waits for a removal under way, whose share is no longer its
	// to stop.
	if !n.group.Enter() {
		return ErrClosed
	}
	defer n.group.Leave()
	n.mu.Lock()
	s, ok := n.servers[name]
	if ok {
		delete(n.servers, name)
		n.host.RemoveStreamHandler(transport.ProtocolID(name))
	}
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("no server named %q is shared", name)
	}
	s.live.draining.Store(true)
	n.changed() // the card drops it now, not after the grace period
	n.stopWatch(name)

	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for len(s.live.busy()) > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-n.ctx.Done():
			ctx = n.ctx // closing: Close stops the rest
		case <-tick.C:
		}
	}
	cause := fmt.Errorf("%w: %s no longer shares %q", ErrUnshared, n.host.ID(), name)
	for _, r := range s.live.busy() {
		r.lose(cause)
	}

	n.mu.Lock()
	var toClose []*sdkmcp.ServerSession
	for ss, server := range n.inbound {
		if server == name {
			toClose = append(toClose, ss)
		}
	}
	n.mu.Unlock()
	if s.stop != nil {
		s.stop()
	}
	for _, ss := range toClose {
		ss.Close()
	}
	n.pool.Drop(sessions.Key{Peer: n.host.ID(), Server: name}, nil)
	return nil
}
