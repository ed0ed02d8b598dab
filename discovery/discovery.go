package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	logging "github.com/ipfs/go-log/v2"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"

	"github.com/mcpmesh/mcpmesh/internal/retry"
	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

var log = logging.Logger("mcpmesh/discovery")

// Config tunes discovery. The zero value is usable: every field has a
// default.
type Config struct {
	// ProtocolPrefix keeps the mesh's DHT apart from the public IPFS one.
	// Default "/mcpmesh".
	ProtocolPrefix protocol.ID
	// CardTTL is how long a published card stays valid; a node that leaves
	// drops out of lookups within this time. Default 3 minutes.
	CardTTL time.Duration
	// RepublishEvery is how often the card is republished while nothing
	// changes. Default CardTTL/3.
	RepublishEvery time.Duration
	// ReprovideEvery is how often provider records are renewed. Default 1h.
	ReprovideEvery time.Duration
	// ProviderValidity is how long other nodes keep a provider record.
	// Default 4×ReprovideEvery.
	ProviderValidity time.Duration
	// MDNS finds peers on the local network and connects to them.
	MDNS bool
	// MDNSService is the mDNS service name; meshes that must not meet on a
	// LAN use different names. Default "mcpmesh".
	MDNSService string
	// MeshKey is the private network key of the mesh, if any. mDNS then
	// announces under a name derived from it (PrivateMDNSService), never
	// under MDNSService in the clear.
	MeshKey []byte
	// Debounce coalesces bursts of changes into one republish. Default 200ms.
	Debounce time.Duration
}

// withDefaults returns c with every unset field at its default.
func (c Config) withDefaults() Config {
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.ProtocolPrefix == "" {
		c.ProtocolPrefix = "/mcpmesh"
	}
	if c.CardTTL <= 0 {
		c.CardTTL = 3 * time.Minute
	}
	if c.RepublishEvery <= 0 {
		c.RepublishEvery = c.CardTTL / 3
	}
	if c.ReprovideEvery <= 0 {
		c.ReprovideEvery = time.Hour
	}
	if c.ProviderValidity <= 0 {
		c.ProviderValidity = 4 * c.ReprovideEvery
	}
	if c.MDNSService == "" {
		c.MDNSService = "mcpmesh"
	}
	if c.Debounce <= 0 {
		c.Debounce = 200 * time.Millisecond
	}
}

// CardBuilder returns the node's card as of now, unsigned and without
// sequence number or times: the service fills those in.
type CardBuilder func(ctx context.Context) (*cardpb.Card, error)

// Service publishes a node's card and capabilities and looks up others'.
type Service struct {
	h   host.Host
	key crypto.PrivKey
	cfg Config
	dht *dht.IpfsDHT

	pm *dhtpb.ProtocolMessenger

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	poke     chan struct{}
	hurry    chan struct{} // a Sync waits: publish without the debounce
	mdns     interface{ Close() error }
	handOffs chan struct{} // record hand-offs in flight (provide.go)
	probes   chan struct{} // probes of gone peers in flight (peers.go)

	mu       sync.Mutex
	closed   bool
	provided map[Capability]*provision // what we advertise (provide.go)
	card     *provision                // where the card was put (provide.go)
	cardData []byte                    // the sealed card last put
	seq      uint64
	last     *Card // the card last published

	// What Sync waits for: changes counts Changed calls (and the start),
	// stored is the count the card stored locally last reflects, and
	// storedCh is closed (and replaced) whenever stored moves.
	changes  uint64
	stored   uint64
	storedCh chan struct{}

	goneMu   sync.Mutex
	gone     map[lpeer.ID]*goneEntry // peers known to be gone (peers.go)
	dialGone atomic.Bool             // tests: dial them anyway, as before
}

// New starts a DHT node in server mode on h (so that meshes of two or three
// nodes work: a client-mode DHT on a LAN never fills its routing table) and,
// if configured, mDNS. Publishing starts with Start.
func New(h host.Host, key crypto.PrivKey, cfg Config) (*Service, error) {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		h: h, key: key, cfg: cfg,
		ctx: ctx, cancel: cancel,
		poke:     make(chan struct{}, 1),
		hurry:    make(chan struct{}, 1),
		changes:  1, // the first card
		storedCh: make(chan struct{}),
		handOffs: make(chan struct{}, maxHandOffs),
		probes:   make(chan struct{}, maxProbes),
		provided: map[Capability]*provision{},
		gone:     map[lpeer.ID]*goneEntry{},
		// Sequence numbers from the clock keep increasing across restarts
		// without any state on disk.
		seq: uint64(time.Now().UnixNano()),
	}
	// Subscribe before the DHT starts, so that no connection is missed.
	sub, err := s.subscribePeers()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch peers: %w", err)
	}
	kad, err := dht.New(&dhtHost{Host: h, s: s},
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(cfg.ProtocolPrefix),
		dht.Validator(Validator{}),
		dht.MaxRecordAge(cfg.CardTTL),
		dht.ProviderManagerOpts(records.ProvideValidity(cfg.ProviderValidity)),
		dht.BootstrapPeers(), // the node brings its own peers; never the public IPFS ones
		dht.WithCustomMessageSender(newCheckedSender),
	)
	if err != nil {
		sub.Close()
		cancel()
		return nil, fmt.Errorf("start DHT: %w", err)
	}
	s.dht = kad
	if s.pm, err = dhtpb.NewProtocolMessenger(kad.MessageSender()); err != nil {
		sub.Close()
		kad.Close()
		cancel()
		return nil, fmt.Errorf("start DHT: %w", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watchPeers(sub)
	}()
	if cfg.MDNS {
		service := cfg.MDNSService
		if len(cfg.MeshKey) > 0 {
			service = PrivateMDNSService(cfg.MeshKey, cfg.MDNSService)
			log.Infow("mDNS in a private mesh: announcing under a name derived from the mesh key; peer IDs and addresses stay visible on the local network", "service", service)
		}
		svc := mdns.NewMdnsService(h, service, &mdnsNotifee{s: s})
		if err := svc.Start(); err != nil {
			s.Close()
			return nil, fmt.Errorf("start mDNS: %w", err)
		}
		s.mdns = svc
	}
	return s, nil
}

// DHT returns the underlying Kademlia DHT.
func (s *Service) DHT() *dht.IpfsDHT { return s.dht }

// Start begins publishing the card that build returns: now, on every
// Changed, and before it expires.
func (s *Service) Start(build CardBuilder) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.publishLoop(build)
	}()
}

// Changed asks for the card to be rebuilt and republished soon.
func (s *Service) Changed() {
	s.mu.Lock()
	s.changes++
	s.mu.Unlock()
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// Sync waits until a card that reflects every Changed made before the call
// is stored locally, so that a peer that asks this node gets it: what a
// daemon waits for before it says it is ready. It does not wait for the
// card to reach other peers. It returns early if the service closes.
func (s *Service) Sync(ctx context.Context) error {
	s.mu.Lock()
	want := s.changes
	s.mu.Unlock()
	for {
		s.mu.Lock()
		done, ch := s.stored >= want, s.storedCh
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case s.hurry <- struct{}{}:
		default:
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("card not yet published: %w", ctx.Err())
		case <-s.ctx.Done():
			return errors.New("discovery closed before the card was published")
		}
	}
}

// markStored records that the card built for change count gen is stored
// locally, and wakes Sync.
func (s *Service) markStored(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen <= s.stored {
		return
	}
	s.stored = gen
	close(s.storedCh)
	s.storedCh = make(chan struct{})
}

// Published returns the card last published, or nil.
func (s *Service) Published() *Card {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Close stops publishing and the DHT. Records already stored elsewhere
// expire on their own.
func (s *Service) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	var errs []error
	if s.mdns != nil {
		errs = append(errs, s.mdns.Close())
	}
	s.wg.Wait()
	errs = append(errs, s.dht.Close())
	return errors.Join(errs...)
}

func (s *Service) publishLoop(build CardBuilder) {
	republish := time.NewTimer(0)
	defer republish.Stop()
	backoff := retry.Backoff(time.Second, s.cfg.RepublishEvery)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-republish.C:
		case <-s.hurry:
		case <-s.poke:
			// Let a burst of changes settle into one card, unless a Sync
			// waits for it.
			select {
			case <-time.After(s.cfg.Debounce):
			case <-s.hurry:
			case <-s.ctx.Done():
				return
			}
		}
		next := s.cfg.RepublishEvery
		if err := s.publish(build); err != nil {
			if s.ctx.Err() != nil {
				return
			}
			next = min(backoff.Delay(), next)
			log.Debugw("publish card", "error", err, "retry", next)
		} else {
			backoff.Reset()
		}
		republish.Reset(next)
	}
}

// publish builds, signs and stores the card, then advertises what it lists.
func (s *Service) publish(build CardBuilder) error {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	s.mu.Lock()
	gen := s.changes // what this card reflects: it is built after this
	s.mu.Unlock()
	card, err := build(ctx)
	if err != nil {
		return fmt.Errorf("build card: %w", err)
	}
	now := time.Now()
	s.mu.Lock()
	s.seq = max(s.seq+1, uint64(now.UnixNano()))
	card.Seq = s.seq
	s.mu.Unlock()
	card.IssuedAtMs = now.UnixMilli()
	card.ExpiresAtMs = now.Add(s.cfg.CardTTL).UnixMilli()
	data, err := SealCard(card, s.key)
	if err != nil {
		return err
	}
	opened, err := OpenCard(data, s.h.ID(), now)
	if err != nil {
		return fmt.Errorf("check own card: %w", err)
	}
	s.mu.Lock()
	s.last = opened
	s.mu.Unlock()

	// The card is stored locally first, so peers that ask us find it even
	// when the put to others fails (no peers yet). The card and the
	// capabilities go out at once, each walk with its own timeout.
	// Its own provider records are stored locally before the card is
	// marked stored, so that once Sync returns a peer asking this node
	// finds every capability, not only the card.
	due, ownErr := s.advertiseLocally(ctx, Capabilities(opened))
	var putErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		putErr = s.putCard(ctx, data, func() { s.markStored(gen) })
	}()
	provErr := s.provideAll(s.ctx, due)
	<-done
	return errors.Join(putErr, ownErr, provErr)
}

// Capabilities lists what a card advertises: its tool names, every tag and
// its event types.
func Capabilities(c *Card) []Capability {
	seen := map[Capability]bool{}
	var out []Capability
	add := func(kind, name string) {
		c := Capability{Kind: kind, Name: name}
		if name != "" && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	for _, t := range c.Tags {
		add("tag", t)
	}
	for _, srv := range c.Servers {
		for _, t := range srv.Tools {
			add("tool", t.Name)
			for _, tag := range t.Tags {
				add("tag", tag)
			}
		}
	}
	for _, e := range c.Events {
		add("event", e.Name)
	}
	return out
}

// maxProvides bounds the capabilities provided at once: each is a DHT walk,
// and a node with many tools should not wait for one walk after another.
const maxProvides = 8

// advertiseLocally keeps the capabilities listed (those no longer listed
// are dropped, and so expire from the DHT), stores the node's own provider
// record of each that is due in its local provider store, and returns
// those due for a walk: new ones, old ones when due, and those whose
// records may have been lost (provide.go).
func (s *Service) advertiseLocally(ctx context.Context, caps []Capability) ([]Capability, error) {
	now := time.Now()
	s.mu.Lock()
	keep := map[Capability]*provision{}
	var due []Capability
	for _, c := range caps {
		p, ok := s.provided[c]
		if !ok {
			p = newProvision(string(c.CID().Hash()))
		}
		keep[c] = p
		if p.at.IsZero() || now.Sub(p.at) >= s.cfg.ReprovideEvery || p.needsWalk() {
			due = append(due, c)
		}
	}
	s.provided = keep
	s.mu.Unlock()

	self := lpeer.AddrInfo{ID: s.h.ID()}
	var errs []error
	for _, c := range due {
		if err := s.dht.ProviderStore().AddProvider(ctx, c.CID().Hash(), self); err != nil {
			errs = append(errs, fmt.Errorf("store own provider record of %s: %w", c, err))
		}
	}
	return due, errors.Join(errs...)
}

// provideAll stores the provider records of due on the peers closest to
// each, maxProvides walks at a time.
func (s *Service) provideAll(ctx context.Context, due []Capability) error {
	now := time.Now()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, maxProvides)
	)
	for _, c := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			pctx, cancel := context.WithTimeout(ctx, provideTimeout)
			defer cancel()
			took, err := s.provide(pctx, c)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("provide %s: %w", c, err))
				mu.Unlock()
				return // not recorded: retried on the next publish
			}
			k := s.dht.BucketSize()
			s.mu.Lock()
			defer s.mu.Unlock()
			if p := s.provided[c]; p != nil {
				p.stored(now, took, k)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Card fetches and verifies p's card from the DHT.
func (s *Service) Card(ctx context.Context, p lpeer.ID) (*Card, error) {
	if p == s.h.ID() {
		if c := s.Published(); c != nil {
			return c, nil
		}
	}
	data, err := s.dht.GetValue(ctx, CardKey(p))
	if err != nil {
		if errors.Is(err, routing.ErrNotFound) {
			return nil, fmt.Errorf("no card for %s in the mesh (it is not running, or has not published yet)", p)
		}
		return nil, fmt.Errorf("fetch card of %s: %w", p, err)
	}
	c, err := OpenCard(data, p, time.Now())
	if err != nil {
		return nil, fmt.Errorf("card of %s: %w", p, err)
	}
	// The card's addresses let us reach p without a further lookup.
	s.h.Peerstore().AddAddrs(p, c.Multiaddrs(), peerstore.TempAddrTTL)
	return c, nil
}

// Match is one thing on a card that a query matched: a tool of a server,
// or an event type of the node.
type Match struct {
	Server string
	Tool   *cardpb.Tool
	Event  *cardpb.EventType
}

// Found is a provider of a capability, with its verified card.
type Found struct {
	Card    *Card
	Matches []Match
}

// Find looks up the providers of c and calls found for each one whose
// current card still lists c, as results arrive, until the lookup ends or
// ctx is done. found is called from one goroutine at a time.
func (s *Service) Find(ctx context.Context, c Capability, found func(Found)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[lpeer.ID]bool{}
	)
	// The lookup ends early if it stalls on peers that do not answer
	// (stall.go); the card fetches go on under ctx.
	lookupCtx, stopLookup := context.WithCancel(ctx)
	defer stopLookup()
	lookupCtx, events := routing.RegisterForQueryEvents(lookupCtx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchLookup(ctx, events, stopLookup)
	}()
	defer func() { <-watched }()
	defer stopLookup() // before waiting for the watch: it ends with the lookup's context
	for info := range s.dht.FindProvidersAsync(lookupCtx, c.CID(), 0) {
		if seen[info.ID] {
			continue
		}
		seen[info.ID] = true
		s.h.Peerstore().AddAddrs(info.ID, info.Addrs, peerstore.TempAddrTTL)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The provider answers for its own card in one request; a DHT
			// lookup is the fallback when it cannot be reached.
			card, err := s.cardFromPeer(ctx, info.ID)
			if err != nil {
				card, err = s.Card(ctx, info.ID)
			}
			if err != nil {
				// A provider record outlives a node that left; its card does not.
				log.Debugw("skip provider", "peer", info.ID, "capability", c, "error", err)
				return
			}
			matches := MatchCard(card, c)
			if len(matches) == 0 && !(c.Kind == "tag" && slices.Contains(card.Tags, c.Name)) {
				return // no longer offered
			}
			mu.Lock()
			defer mu.Unlock()
			if ctx.Err() == nil {
				found(Found{Card: card, Matches: matches})
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// MatchCard returns what on card matches c.
func MatchCard(card *Card, c Capability) []Match {
	var out []Match
	if c.Kind == "event" {
		for _, e := range card.Events {
			if e.Name == c.Name {
				out = append(out, Match{Event: e})
			}
		}
		return out
	}
	for _, srv := range card.Servers {
		for _, t := range srv.Tools {
			if (c.Kind == "tool" && t.Name == c.Name) || (c.Kind == "tag" && (slices.Contains(t.Tags, c.Name) || slices.Contains(card.Tags, c.Name))) {
				out = append(out, Match{Server: srv.Name, Tool: t})
			}
		}
	}
	return out
}
