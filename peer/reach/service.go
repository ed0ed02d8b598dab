package reach

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	lconfig "github.com/libp2p/go-libp2p/config"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	bhost "github.com/libp2p/go-libp2p/p2p/host/basic"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

var log = logging.Logger("mcpmesh/reach")

// Service is a node's reachability: the libp2p options that turn on
// AutoNAT, the relay service, AutoRelay, hole punching and port mapping
// (Options, given to libp2p.New), then what runs beside the host once it
// exists (Start): a relay service that is always on, the circuit addresses
// of private relays, moving MCP sessions off relayed connections, and the
// node's reachability status.
type Service struct {
	cfg     Config
	scan    time.Duration // see relayScan
	started time.Time

	host   atomic.Pointer[host.Host]
	natmgr atomic.Pointer[bhost.NATManager]

	relay   *relayv2.Relay // RelayOn only
	emitter event.Emitter  // tells AutoRelay the reachability is unknown, in Auto
	finding chan struct{}  // closed once AutoRelay has started looking for relays
	once    sync.Once
	hooks   atomic.Pointer[Hooks]
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// Hooks are what a node wants to hear from its Service.
type Hooks struct {
	// Direct is called when a peer gets a direct connection, in addition
	// to or instead of relayed ones.
	Direct func(peer.ID)
	// AddrsChanged is called when the addresses the host announces change
	// (a relay reservation taken or lost, a port mapped).
	AddrsChanged func()
}

// New checks cfg and returns a service for it; give its Options to the
// host and Start it once the host exists.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, scan: relayScan, finding: make(chan struct{})}, nil
}

// Config returns the service's configuration.
func (s *Service) Config() Config { return s.cfg }

// relayScan is how often AutoRelay may ask for relay candidates again
// (libp2p's default is 30 s): a relay that joins the mesh is used within
// this time.
const relayScan = 10 * time.Second

// Options returns the libp2p options of the configuration. They leave an
// address factory or NAT manager given by earlier options in place (the
// factory is composed with the service's own).
func (s *Service) Options() []libp2p.Option {
	opts := []libp2p.Option{
		// Every node answers AutoNAT dial-back requests, within libp2p's
		// default rate (30 a minute, 3 per peer): a mesh has no public
		// IPFS peers to ask.
		libp2p.EnableNATService(),
		libp2p.AutoNATServiceRateLimit(30, 3, time.Minute),
		// AutoNAT v2 checks each address on its own (client and server,
		// rate-limited by libp2p: 60 checks a minute, 12 per peer).
		libp2p.EnableAutoNATv2(),
		libp2p.EnableRelay(),
		libp2p.EnableAutoRelayWithPeerSource(s.relaySource,
			autorelay.WithMinCandidates(1),
			autorelay.WithBootDelay(0),
			autorelay.WithNumRelays(max(2, len(s.cfg.Relays))),
			autorelay.WithMaxCandidates(max(4, len(s.cfg.Relays))),
			autorelay.WithMinInterval(s.scan),
			autorelay.WithBackoff(time.Minute), // libp2p: an hour, too long for a mesh relay that restarts
		),
		func(c *lconfig.Config) error {
			prev := c.AddrsFactory
			c.AddrsFactory = func(addrs []ma.Multiaddr) []ma.Multiaddr {
				if prev != nil {
					addrs = prev(addrs)
				}
				return s.withCircuitAddrs(addrs)
			}
			// AutoRelay tells its tracer when it starts looking for relays:
			// Close waits for that after telling it the reachability (see
			// finderWatch). libp2p's own tracer, if metrics are on, still
			// gets every call.
			reg := c.PrometheusRegisterer
			if c.DisableMetrics || reg == nil {
				reg = prometheus.NewRegistry()
			}
			inner := autorelay.NewMetricsTracer(autorelay.WithRegisterer(reg))
			c.AutoRelayOpts = append(c.AutoRelayOpts, autorelay.WithMetricsTracer(finderWatch{inner, s}))
			if s.cfg.PortMapping && c.NATManager == nil {
				c.NATManager = func(n network.Network) bhost.NATManager {
					m := bhost.NewNATManager(n)
					s.natmgr.Store(&m)
					return m
				}
			}
			return nil
		},
	}
	switch s.cfg.Reachability {
	case Public:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case Private:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	if s.cfg.RelayService == RelayAuto {
		opts = append(opts, libp2p.EnableRelayService(s.relayOptions()...))
	}
	if s.cfg.HolePunching {
		opts = append(opts, libp2p.EnableHolePunching())
	}
	return opts
}

func (s *Service) relayOptions() []relayv2.Option {
	opts := []relayv2.Option{relayv2.WithResources(s.cfg.RelayLimits.resources())}
	if s.cfg.Banned != nil {
		opts = append(opts, relayv2.WithACL(relayACL{s.cfg.Banned}))
	}
	return opts
}

// relayACL refuses reservations and relayed connections of banned peers.
type relayACL struct{ banned func(peer.ID) bool }

func (a relayACL) AllowReserve(p peer.ID, _ ma.Multiaddr) bool { return !a.banned(p) }

func (a relayACL) AllowConnect(src peer.ID, _ ma.Multiaddr, dest peer.ID) bool {
	return !a.banned(src) && !a.banned(dest)
}

// Start runs what the service adds to h: the relay service if it is always
// on, and the watch on connections and addresses behind hooks.
func (s *Service) Start(h host.Host, hooks Hooks) error {
	s.host.Store(&h)
	s.started = time.Now()
	s.hooks.Store(&hooks)
	if s.cfg.RelayService == RelayOn {
		r, err := relayv2.New(h, s.relayOptions()...)
		if err != nil {
			return fmt.Errorf("relay service: %w", err)
		}
		s.relay = r
	}
	if s.cfg.Reachability == Auto && hostReachability(h) == network.ReachabilityUnknown {
		// AutoRelay looks for relays only once told the reachability is
		// private or unknown, and AutoNAT says nothing until it knows: on a
		// network without public addresses it never does. Say "unknown" now,
		// so a node no outsider can dial takes reservations from the start
		// (AutoNAT's own verdict, when it comes, replaces this one).
		em, err := h.EventBus().Emitter(new(event.EvtLocalReachabilityChanged), eventbus.Stateful)
		if err != nil {
			return fmt.Errorf("reachability emitter: %w", err)
		}
		s.emitter = em
		if err := em.Emit(event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityUnknown}); err != nil {
			return fmt.Errorf("emit reachability: %w", err)
		}
	}
	sub, err := h.EventBus().Subscribe([]any{new(event.EvtPeerConnectednessChanged), new(event.EvtLocalAddressesUpdated)}, eventbus.Name("mcpmesh/reach"))
	if err != nil {
		return fmt.Errorf("subscribe to connection events: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go s.events(ctx, sub)
	return nil
}

func (s *Service) events(ctx context.Context, sub event.Subscription) {
	defer s.wg.Done()
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			hooks := s.hooks.Load()
			switch e := e.(type) {
			case event.EvtPeerConnectednessChanged:
				if e.Connectedness == network.Connected && hooks.Direct != nil {
					hooks.Direct(e.Peer)
				}
			case event.EvtLocalAddressesUpdated:
				s.addrsChanged()
			}
		}
	}
}

// finderWatch is AutoRelay's metrics tracer, passing every call on, that
// tells the service when AutoRelay has started looking for relays.
type finderWatch struct {
	autorelay.MetricsTracer
	s *Service
}

func (w finderWatch) RelayFinderStatus(active bool) {
	w.MetricsTracer.RelayFinderStatus(active)
	if active {
		w.s.once.Do(func() { close(w.s.finding) })
	}
}

// A reservation taken or lost changes the circuit addresses the host
// announces at once (the address factory runs on every Addrs call), but the
// host tells of it only at its next 5 s tick when AutoRelay's own address
// list did not change (a relay with private addresses only): say it now,
// so the card follows the reservation.
func (w finderWatch) ReservationRequestFinished(isRefresh bool, err error) {
	w.MetricsTracer.ReservationRequestFinished(isRefresh, err)
	if !isRefresh && err == nil {
		w.s.addrsChanged()
	}
}

func (w finderWatch) ReservationEnded(n int) {
	w.MetricsTracer.ReservationEnded(n)
	if n > 0 {
		w.s.addrsChanged()
	}
}

func (s *Service) addrsChanged() {
	if h := s.hooks.Load(); h != nil && h.AddrsChanged != nil {
		h.AddrsChanged()
	}
}

// Close stops what Start started. The host's own services stop with it.
func (s *Service) Close() error {
	if s.emitter != nil {
		// AutoRelay.Close (go-libp2p v0.51) stops its relay finder before
		// waiting for the goroutine that starts it on a reachability event:
		// an event still pending then starts a finder that nothing stops.
		// Let AutoRelay take in the one this service sent before the host
		// closes.
		select {
		case <-s.finding:
		case <-time.After(2 * time.Second):
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	var err error
	if s.relay != nil {
		err = s.relay.Close()
	}
	if s.emitter != nil {
		s.emitter.Close()
	}
	return err
}

func hostReachability(h host.Host) network.Reachability {
	if r, ok := h.(interface{ Reachability() network.Reachability }); ok {
		return r.Reachability()
	}
	return network.ReachabilityUnknown
}
