package discovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
)

// ErrPeerGone is what a lookup's dial to a peer known to be gone fails
// with: the last dial to it failed, and no connection to it has been seen
// since.
var ErrPeerGone = errors.New("peer known to be gone (the last dial failed, not connected since)")

const (
	// maxGone bounds the peers remembered as gone or suspect; the oldest is
	// forgotten first (forgetting one only means the next lookup dials it
	// again).
	maxGone = 4096
	// minSuspectDial is the least time a lookup's dial to a peer that
	// disconnected may take; suspectDialRTTs times its last measured round
	// trip is the usual (a new connection takes 3 to 4).
	minSuspectDial  = time.Second
	suspectDialRTTs = 8
	// probeEvery is how often, at most, a gone peer that a lookup wanted is
	// dialed in the background to see whether it is back.
	probeEvery = 10 * time.Second
	// probeTimeout bounds one such dial.
	probeTimeout = 15 * time.Second
	// maxProbes bounds the probes in flight: peers a lookup heard of from
	// others cost at most this many dials at once, whatever they claim.
	maxProbes = 8
)

// goneEntry is a peer that disconnected (suspect) or could not be dialed
// (gone), not connected since.
type goneEntry struct {
	since  time.Time     // when it disconnected, or the dial failed
	failed bool          // a dial failed since: gone, not merely suspect
	dial   chan struct{} // closed when the background dial in flight ends; nil: none
	dialed time.Time     // when the last background dial ended
}

// dhtHost is the host the DHT runs on: the node's host, but for how the
// DHT dials (it dials only to query a peer it is not connected to, or to
// retry a request whose stream broke). A stopped node's TCP port refuses at
// once, but its QUIC port stays silent until the dial times out: 5 s on a
// LAN, and kad-dht waits for every one of the closest peers it tried. So:
//
//   - a peer that disconnected is only suspect (the connection manager
//     trims healthy peers too, at both ends): it is dialed, but for at most
//     max(minSuspectDial, suspectDialRTTs round trips), in the background,
//     so that the outcome counts even when the lookup that wanted it ends
//     first, and concurrent lookups wait on the same dial;
//   - a peer whose dial failed is known to be gone, until a connection to
//     it shows: it is not dialed, kad-dht treats it as unreachable (the
//     lookup goes on without it, and it leaves the routing table), and a
//     probe in the background, when a lookup wants it, finds out whether it
//     came back (a connection puts it back in the table, through identify).
type dhtHost struct {
	host.Host
	s *Service
}

func (h *dhtHost) NewStream(ctx context.Context, p lpeer.ID, pids ...protocol.ID) (network.Stream, error) {
	if err := h.s.beforeDial(ctx, p); err != nil {
		return nil, fmt.Errorf("open stream to %s: %w", p, err)
	}
	st, err := h.Host.NewStream(ctx, p, pids...)
	h.s.afterDial(ctx, p, err)
	return st, err
}

func (h *dhtHost) Connect(ctx context.Context, pi lpeer.AddrInfo) error {
	if err := h.s.beforeDial(ctx, pi.ID); err != nil {
		return fmt.Errorf("dial %s: %w", pi.ID, err)
	}
	err := h.Host.Connect(ctx, pi)
	h.s.afterDial(ctx, pi.ID, err)
	return err
}

// beforeDial is called before something that may dial p. A gone peer
// fails at once (and is probed); a suspect one is dialed in the background
// for a short while, and beforeDial waits for that dial.
func (s *Service) beforeDial(ctx context.Context, p lpeer.ID) error {
	if s.h.Network().Connectedness(p) != network.NotConnected || s.dialGone.Load() {
		return nil // connected, or through a relay: no dial, or not ours to judge
	}
	s.goneMu.Lock()
	e, ok := s.gone[p]
	if !ok {
		s.goneMu.Unlock()
		return nil
	}
	if e.failed {
		s.goneMu.Unlock()
		s.probe(p)
		return ErrPeerGone
	}
	d := minSuspectDial
	if rtt := s.h.Peerstore().LatencyEWMA(p); rtt > 0 {
		d = max(d, suspectDialRTTs*rtt)
	}
	done := s.dialLocked(p, e, d, nil)
	s.goneMu.Unlock()
	if done == nil {
		return ErrPeerGone // closing
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.isGone(p) {
		return ErrPeerGone
	}
	return nil
}

// afterDial notes a dial's outcome: a peer that could not be reached is
// gone (a relayed connection counts as reached).
func (s *Service) afterDial(ctx context.Context, p lpeer.ID, err error) {
	if err != nil && ctx.Err() == nil && s.h.Network().Connectedness(p) == network.NotConnected {
		s.markGone(p, false)
	}
}

// dialLocked starts a background dial of p bounded by d, unless one is in
// flight, and returns the channel closed when it ends (nil if the service
// is closing). slot, if not nil, is released when the dial ends. goneMu is
// held.
func (s *Service) dialLocked(p lpeer.ID, e *goneEntry, d time.Duration, slot chan struct{}) chan struct{} {
	if e.dial != nil {
		if slot != nil {
			<-slot
		}
		return e.dial
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if closed {
		if slot != nil {
			<-slot
		}
		return nil
	}
	done := make(chan struct{})
	e.dial = done
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, d)
		err := s.h.Connect(network.WithDialPeerTimeout(ctx, d), lpeer.AddrInfo{ID: p})
		cancel()
		log.Debugw("dial peer that disconnected or was gone", "peer", p, "error", err)
		if err != nil && s.ctx.Err() == nil && s.h.Network().Connectedness(p) == network.NotConnected {
			s.markGone(p, false)
		}
		s.goneMu.Lock()
		e.dial, e.dialed = nil, time.Now()
		s.goneMu.Unlock()
		if slot != nil {
			<-slot
		}
		close(done)
	}()
	return done
}

// isGone reports whether p is known to be gone.
func (s *Service) isGone(p lpeer.ID) bool {
	if s.dialGone.Load() {
		return false
	}
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	e, ok := s.gone[p]
	return ok && e.failed
}

// markGone records that p disconnected (suspect), or that a dial to it
// failed (gone).
func (s *Service) markGone(p lpeer.ID, disconnected bool) {
	if p == s.h.ID() {
		return
	}
	now := time.Now()
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	if e, ok := s.gone[p]; ok {
		if !disconnected {
			e.failed, e.dialed = true, now
		}
		return
	}
	if len(s.gone) >= maxGone {
		var oldest lpeer.ID
		var at time.Time
		for q, e := range s.gone {
			if oldest == "" || e.since.Before(at) {
				oldest, at = q, e.since
			}
		}
		delete(s.gone, oldest)
	}
	e := &goneEntry{since: now}
	if !disconnected {
		e.failed, e.dialed = true, now // a dial just failed: no need to try again at once
	}
	s.gone[p] = e
}

// clearGone forgets that p was gone or suspect: it is connected again.
func (s *Service) clearGone(p lpeer.ID) {
	s.goneMu.Lock()
	delete(s.gone, p)
	s.goneMu.Unlock()
}

// probe dials a gone peer in the background, at most every probeEvery,
// one dial per peer and maxProbes in all at a time, to find out whether it
// is back. A success shows as a connection, which clears the mark.
func (s *Service) probe(p lpeer.ID) {
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	e, ok := s.gone[p]
	if !ok || !e.failed || e.dial != nil || time.Since(e.dialed) < probeEvery {
		return
	}
	select {
	case s.probes <- struct{}{}:
		s.dialLocked(p, e, probeTimeout, s.probes)
	default: // the next lookup that wants it will try again
	}
}

// watchPeers follows the host's connections and identifications: peers
// that disconnect are suspect until they connect again, a holder of our
// provider records that disconnects may have lost them, and a DHT server
// that connects gets the records it should hold (see provide.go).
func (s *Service) watchPeers(sub event.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-s.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			switch ev := e.(type) {
			case event.EvtPeerConnectednessChanged:
				if ev.Connectedness == network.NotConnected {
					s.markGone(ev.Peer, true)
					s.holderLost(ev.Peer)
				} else {
					s.clearGone(ev.Peer)
				}
			case event.EvtPeerIdentificationCompleted:
				for _, proto := range ev.Protocols {
					if proto == s.kadProtocol() {
						s.peerJoined(ev.Peer)
						break
					}
				}
			}
		}
	}
}

func (s *Service) subscribePeers() (event.Subscription, error) {
	return s.h.EventBus().Subscribe([]any{
		new(event.EvtPeerConnectednessChanged),
		new(event.EvtPeerIdentificationCompleted),
	}, eventbus.BufSize(256), eventbus.Name("mcpmesh/discovery"))
}
