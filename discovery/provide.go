package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	record "github.com/libp2p/go-libp2p-record"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
)

// Records live on the K peers closest to their key, and a peer that
// restarts comes back with none. Kademlia's answer (the paper's section
// 2.5) is that whoever holds a record hands it to a newly met peer that is
// among the K closest to its key; kad-dht accepts a provider record only
// from the provider itself, so here the node does it for its own records
// (its card and one provider record per capability):
//
//   - it remembers, for each record, the peers that took it (the K closest
//     found by its last walk, plus closer ones met since);
//   - when a DHT server connects (identify completed on a new connection: a
//     new node, a node back from a restart, a reconnection) and is one of
//     them, or is closer to the key than one of them, it sends that peer
//     the record directly (PUT_VALUE for the card, ADD_PROVIDER for a
//     capability): one request, no walk;
//   - when more than half of the peers that took a capability's record
//     have disconnected since (each may have restarted and lost it), the
//     next card republish provides it again with a walk. The card itself
//     is put with a walk at every republish.
//
// In a mesh without restarts this costs nothing; DESIGN.md (Discovery)
// compares it with re-providing everything every card period.

// provision is what the node knows of one record it publishes.
type provision struct {
	key     string    // the DHT key: a capability's multihash, or the card's key
	kid     kb.ID     // the key in the DHT's key space
	at      time.Time // last stored with a DHT walk
	holders map[lpeer.ID]bool
	// holders: peers that took the record; false once the peer
	// disconnected after taking it (it may have restarted and lost it).
}

func newProvision(key string) *provision {
	return &provision{key: key, kid: kb.ConvertKey(key), holders: map[lpeer.ID]bool{}}
}

// needsWalk reports whether the record should be stored again with a walk:
// no peer took it, or most of those that did may have lost it.
func (p *provision) needsWalk() bool {
	lost := 0
	for _, held := range p.holders {
		if !held {
			lost++
		}
	}
	return len(p.holders) == 0 || 2*lost > len(p.holders)
}

// wants reports whether peer, which just connected, should be handed the
// record: it took it before (a new connection may be the peer back from a
// restart: killed over QUIC, its old connection can outlive the restart, so
// no disconnection ever shows), or it is closer to the key than some
// holder, or there are fewer than k holders.
func (p *provision) wants(peer lpeer.ID, k int) bool {
	if _, ok := p.holders[peer]; ok {
		return true
	}
	if len(p.holders) < k {
		return true
	}
	d := kb.Xor(kb.ConvertPeerID(peer), p.kid)
	for h := range p.holders {
		if bytes.Compare(d, kb.Xor(kb.ConvertPeerID(h), p.kid)) < 0 {
			return true
		}
	}
	return false
}

// stored records that a walk just stored the record on peers.
func (p *provision) stored(at time.Time, peers []lpeer.ID, k int) {
	p.at = at
	clear(p.holders)
	for _, h := range peers {
		p.took(h, k)
	}
}

// took records that peer holds the record, keeping the k closest holders.
func (p *provision) took(peer lpeer.ID, k int) {
	p.holders[peer] = true
	if len(p.holders) <= k {
		return
	}
	all := make([]lpeer.ID, 0, len(p.holders))
	for h := range p.holders {
		all = append(all, h)
	}
	for _, far := range kb.SortClosestPeers(all, p.kid)[k:] {
		delete(p.holders, far)
	}
}

func (s *Service) kadProtocol() protocol.ID { return s.cfg.ProtocolPrefix + "/kad/1.0.0" }

const (
	// provideTimeout bounds the walk and the puts of one capability.
	provideTimeout = 30 * time.Second
	// putTimeout bounds one record sent to one peer.
	putTimeout = 10 * time.Second
)

// putCard stores the sealed card locally and on the K peers closest to its
// key (kad-dht's PutValue) and notes which peers it was sent to. It calls
// local once the card is stored locally, before the walk to other peers.
func (s *Service) putCard(ctx context.Context, data []byte, local func()) error {
	key := CardKey(s.h.ID())
	ctx, cancel := context.WithCancel(ctx)
	ctx, events := routing.RegisterForQueryEvents(ctx)
	sent := make(chan []lpeer.ID)
	go func() {
		var peers []lpeer.ID
		first := true
		for ev := range events {
			// PutValue stores locally, then walks (GetClosestPeers): the
			// walk's first event, even a QueryError for want of peers,
			// comes after the local store.
			if first {
				first = false
				local()
			}
			if ev.Type == routing.Value { // published just before each put
				peers = append(peers, ev.ID)
			}
		}
		sent <- peers
	}()
	start := time.Now()
	err := s.dht.PutValue(ctx, key, data)
	cancel() // closes events
	peers := <-sent
	if err != nil {
		return err
	}
	local() // no event if the walk was cut short
	k := s.dht.BucketSize()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cardData = data
	if s.card == nil || s.card.key != key {
		s.card = newProvision(key)
	}
	s.card.stored(start, peers, k)
	return nil
}

// provide stores the node's provider record for c on the K peers closest
// to its key (found with a DHT walk) and returns those that took it. It is
// kad-dht's Provide, keeping the list of peers; the local record is stored
// before (advertiseLocally).
func (s *Service) provide(ctx context.Context, c Capability) ([]lpeer.ID, error) {
	key := c.CID().Hash()
	self := lpeer.AddrInfo{ID: s.h.ID()}
	peers, err := s.dht.GetClosestPeers(ctx, string(key))
	if err != nil {
		return nil, err
	}
	self.Addrs = s.dht.FilteredAddrs()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		took []lpeer.ID
		errs []error
	)
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, putTimeout)
			defer cancel()
			err := s.pm.PutProviderAddrs(pctx, p, key, self)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			took = append(took, p)
		}()
	}
	wg.Wait()
	if len(took) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("no peer took the record: %w", errors.Join(errs...))
	}
	return took, nil
}

// holderLost notes that peer disconnected: where it held a record of ours,
// it may have lost it.
func (s *Service) holderLost(peer lpeer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.card != nil && s.card.holders[peer] {
		s.card.holders[peer] = false
	}
	for _, p := range s.provided {
		if p.holders[peer] {
			p.holders[peer] = false
		}
	}
}

// maxHandOffs bounds the hand-offs in flight; past it, one is skipped and
// the next republish repairs what it would have.
const maxHandOffs = 16

// peerJoined hands peer, a DHT server that just connected, the records it
// should hold: each in one request, without a walk.
func (s *Service) peerJoined(peer lpeer.ID) {
	if peer == s.h.ID() {
		return
	}
	k := s.dht.BucketSize()
	var (
		caps []Capability
		card []byte
	)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if s.card != nil && s.card.wants(peer, k) {
		card = s.cardData
	}
	for c, p := range s.provided {
		if !p.at.IsZero() && p.wants(peer, k) {
			caps = append(caps, c)
		}
	}
	if len(caps) == 0 && card == nil {
		s.mu.Unlock()
		return
	}
	select {
	case s.handOffs <- struct{}{}:
	default:
		s.mu.Unlock()
		log.Debugw("too many record hand-offs in flight; left to the next republish", "peer", peer)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() { <-s.handOffs }()
		if err := s.handOff(peer, card, caps, k); err != nil {
			log.Debugw("hand records to peer", "peer", peer, "error", err)
		}
	}()
}

// handOff sends peer the card (if not nil) and the provider records of caps.
func (s *Service) handOff(peer lpeer.ID, card []byte, caps []Capability, k int) error {
	if card != nil {
		key := CardKey(s.h.ID())
		ctx, cancel := context.WithTimeout(s.ctx, putTimeout)
		err := s.pm.PutValue(ctx, peer, record.MakePutRecord(key, card)) // answer checked by checkedSender
		cancel()
		if err != nil {
			return fmt.Errorf("card: %w", err)
		}
		s.mu.Lock()
		if s.card != nil && s.card.key == key {
			s.card.took(peer, k)
		}
		s.mu.Unlock()
	}
	self := lpeer.AddrInfo{ID: s.h.ID(), Addrs: s.dht.FilteredAddrs()}
	for _, c := range caps {
		ctx, cancel := context.WithTimeout(s.ctx, putTimeout)
		err := s.pm.PutProviderAddrs(ctx, peer, c.CID().Hash(), self)
		cancel()
		if err != nil {
			return fmt.Errorf("provider record of %s: %w", c, err)
		}
		s.mu.Lock()
		if p := s.provided[c]; p != nil {
			p.took(peer, k)
		}
		s.mu.Unlock()
	}
	log.Debugw("handed records to peer", "peer", peer, "card", card != nil, "capabilities", len(caps))
	return nil
}

// RecordStatus is where one of the node's records stands.
type RecordStatus struct {
	// Capability is the capability a provider record advertises; the zero
	// value for the card.
	Capability Capability
	// StoredAt is when a DHT walk last stored the record; zero: not yet.
	StoredAt time.Time
	// Holders is how many peers took the record; Lost how many of them
	// disconnected since (they may have restarted and lost it).
	Holders, Lost int
}

// Records reports where the node's card and provider records stand.
func (s *Service) Records() []RecordStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	status := func(c Capability, p *provision) RecordStatus {
		r := RecordStatus{Capability: c, StoredAt: p.at, Holders: len(p.holders)}
		for _, held := range p.holders {
			if !held {
				r.Lost++
			}
		}
		return r
	}
	var out []RecordStatus
	for c, p := range s.provided {
		out = append(out, status(c, p))
	}
	slices.SortFunc(out, func(a, b RecordStatus) int { return strings.Compare(a.Capability.String(), b.Capability.String()) })
	if s.card != nil {
		out = slices.Insert(out, 0, status(Capability{}, s.card))
	}
	return out
}
