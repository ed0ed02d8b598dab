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
	since   time.Time // when it disconnected, or the dial failed
	failed  bool      // a dial failed since: gone, not merely suspect
	probing bool      // a background dial is running
	probed  time.Time // when the last dial ended
}

// dhtHost is the host the DHT runs on: the node's host, but for how the
// DHT dials (it dials only to query a peer it is not connected to, or to
// retry a request whose stream broke). A stopped node's TCP port refuses at
// once, but its QUIC port stays silent until the dial times out: 5 s on a
// LAN, and kad-dht waits for every one of the closest peers it tried. So:
//
//   - a peer known to be gone (its last dial failed, not connected since)
//     is not dialed: the dial fails at once, kad-dht treats the peer as
//     unreachable (the lookup goes on without it, and it leaves the
//     routing table), and a dial in the background finds out whether it
//     came back (a connection puts it back in the table, through
//     identify);
//   - a peer that disconnected is only suspect: the connection manager
//     trims healthy peers too, at both ends. It is dialed, but for at most
//     minSuspectDial or suspectDialRTTs round trips, and becomes gone if
//     that fails.
type dhtHost struct {
	host.Host
	s *Service
}

func (h *dhtHost) NewStream(ctx context.Context, p lpeer.ID, pids ...protocol.ID) (network.Stream, error) {
	ctx, err := h.s.beforeDial(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("open stream to %s: %w", p, err)
	}
	st, err := h.Host.NewStream(ctx, p, pids...)
	h.s.afterDial(ctx, p, err)
	return st, err
}

func (h *dhtHost) Connect(ctx context.Context, pi lpeer.AddrInfo) error {
	ctx, err := h.s.beforeDial(ctx, pi.ID)
	if err != nil {
		return fmt.Errorf("dial %s: %w", pi.ID, err)
	}
	err = h.Host.Connect(ctx, pi)
	h.s.afterDial(ctx, pi.ID, err)
	return err
}

// beforeDial is called before something that may dial p: it fails at once
// if p is known to be gone (and starts a probe), and bounds the dial if p
// is suspect.
func (s *Service) beforeDial(ctx context.Context, p lpeer.ID) (context.Context, error) {
	if s.h.Network().Connectedness(p) != network.NotConnected {
		return ctx, nil // connected, or through a relay: no dial, or not ours to judge
	}
	if s.dialGone.Load() {
		return ctx, nil
	}
	s.goneMu.Lock()
	e, ok := s.gone[p]
	failed := ok && e.failed
	s.goneMu.Unlock()
	switch {
	case failed:
		s.probe(p)
		return ctx, ErrPeerGone
	case ok:
		d := minSuspectDial
		if rtt := s.h.Peerstore().LatencyEWMA(p); rtt > 0 {
			d = max(d, suspectDialRTTs*rtt)
		}
		return network.WithDialPeerTimeout(ctx, d), nil
	}
	return ctx, nil
}

// afterDial notes a dial's outcome: a peer that could not be reached is
// gone (a relayed connection counts as reached).
func (s *Service) afterDial(ctx context.Context, p lpeer.ID, err error) {
	if err != nil && ctx.Err() == nil && s.h.Network().Connectedness(p) == network.NotConnected {
		s.markGone(p, false)
	}
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
			e.failed, e.probed = true, now
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
		e.failed, e.probed = true, now // a dial just failed: no need to try again at once
	}
	s.gone[p] = e
}

// clearGone forgets that p was gone or suspect: it is connected again.
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
	if !ok || !e.failed || e.probing || time.Since(e.probed) < probeEvery {
		s.goneMu.Unlock()
		return
	}
	select {
	case s.probes <- struct{}{}:
	default:
		s.goneMu.Unlock()
		return // the next lookup that wants it will try again
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if closed {
		<-s.probes
		s.goneMu.Unlock()
		return
	}
	e.probing = true
	s.goneMu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() { <-s.probes }()
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
