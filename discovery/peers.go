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
// with: the peer was connected and is no longer, or the last dial to it
// failed, and no connection to it has been seen since.
var ErrPeerGone = errors.New("peer known to be gone (disconnected, not seen since)")

const (
	// maxGone bounds the peers remembered as gone; the oldest is forgotten
	// first (forgetting one only means the next lookup dials it again).
	maxGone = 4096
	// probeEvery is how often, at most, a gone peer that a lookup wanted is
	// dialed in the background to see whether it is back.
	probeEvery = 10 * time.Second
	// probeTimeout bounds one such dial.
	probeTimeout = 15 * time.Second
)

// goneEntry is a peer known to be gone.
type goneEntry struct {
	since   time.Time // when it was seen to go
	probing bool      // a background dial is running
	probed  time.Time // when the last background dial ended
}

// dhtHost is the host the DHT runs on: the node's host, except that the
// DHT's dials (it dials only to query a peer it is not connected to) fail
// at once for a peer known to be gone instead of waiting for the dial
// timeout: 5 s on a LAN, where a stopped node's TCP port refuses at once
// but its QUIC port stays silent. kad-dht then treats the peer as
// unreachable: the lookup goes on without it and the peer leaves the
// routing table, and a dial in the background finds out whether it came
// back (a connection puts it back in the table, through identify).
type dhtHost struct {
	host.Host
	s *Service
}

// NewStream fails at once too when it would have to dial a peer known to
// be gone: kad-dht's message sender opens a new stream to retry a request
// whose stream broke, which is how a peer that just stopped shows first.
func (h *dhtHost) NewStream(ctx context.Context, p lpeer.ID, pids ...protocol.ID) (network.Stream, error) {
	if h.Host.Network().Connectedness(p) != network.Connected && h.s.isGone(p) {
		h.s.probe(p)
		return nil, fmt.Errorf("open stream to %s: %w", p, ErrPeerGone)
	}
	return h.Host.NewStream(ctx, p, pids...)
}

func (h *dhtHost) Connect(ctx context.Context, pi lpeer.AddrInfo) error {
	if h.Host.Network().Connectedness(pi.ID) != network.Connected && h.s.isGone(pi.ID) {
		h.s.probe(pi.ID)
		return fmt.Errorf("dial %s: %w", pi.ID, ErrPeerGone)
	}
	err := h.Host.Connect(ctx, pi)
	if err != nil && ctx.Err() == nil {
		h.s.markGone(pi.ID, false)
	}
	return err
}

// isGone reports whether p is known to be gone.
func (s *Service) isGone(p lpeer.ID) bool {
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	_, ok := s.gone[p]
	return ok
}

// markGone records that p went away (disconnected) or, if not
// disconnected, that a dial to it failed.
func (s *Service) markGone(p lpeer.ID, disconnected bool) {
	if p == s.h.ID() {
		return
	}
	now := time.Now()
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	if e, ok := s.gone[p]; ok {
		if !disconnected {
			e.probed = now
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
		e.probed = now // a dial just failed: no need to try again at once
	}
	s.gone[p] = e
}

// clearGone forgets that p was gone: it is connected again.
func (s *Service) clearGone(p lpeer.ID) {
	s.goneMu.Lock()
	delete(s.gone, p)
	s.goneMu.Unlock()
}

// probe dials a gone peer in the background, at most every probeEvery and
// one dial at a time, to find out whether it is back. A success shows as a
// connection, which clears the mark.
func (s *Service) probe(p lpeer.ID) {
	s.goneMu.Lock()
	e, ok := s.gone[p]
	if !ok || e.probing || time.Since(e.probed) < probeEvery {
		s.goneMu.Unlock()
		return
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if closed {
		s.goneMu.Unlock()
		return
	}
	e.probing = true
	s.goneMu.Unlock()
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, probeTimeout)
		defer cancel()
		err := s.h.Connect(ctx, lpeer.AddrInfo{ID: p})
		log.Debugw("probe peer known to be gone", "peer", p, "error", err)
		s.goneMu.Lock()
		e.probing = false
		e.probed = time.Now()
		s.goneMu.Unlock()
	}()
}

// watchPeers follows the host's connections and identifications: peers
// that disconnect are gone until they connect again, a holder of our
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
