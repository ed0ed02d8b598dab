package console

import (
	"context"
	"sync"
	"time"

	"github.com/mcpmesh/mcpmesh/discovery"
)

// The mesh view shows each peer's card. Cards are fetched in the
// background, a few at a time, and kept: the feed never waits on the
// network.
const (
	cardRefresh  = time.Minute      // a card is fetched again this long after the last try
	cardRetry    = 30 * time.Second // a fetch that failed is tried again after this
	cardTimeout  = 5 * time.Second
	cardFetches  = 4    // fetches in flight at most
	maxCardsKept = 1024 // peers whose cards are kept
)

type cardCache struct {
	s *Server

	mu       sync.Mutex
	m        map[string]*cardEntry
	inflight int
}

type cardEntry struct {
	card *discovery.Card // the newest fetched, nil if none
	err  string          // the last fetch's error, if it failed
	at   time.Time       // when the last fetch ended (zero: never)
	busy bool
}

func newCardCache(s *Server) *cardCache {
	return &cardCache{s: s, m: map[string]*cardEntry{}}
}

// get returns the card kept for peer (nil if none yet) and the last
// fetch's error, and starts a fetch when one is due.
func (c *cardCache) get(peer string) (*discovery.Card, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	e := c.m[peer]
	if e == nil {
		if len(c.m) >= maxCardsKept {
			c.evictLocked()
		}
		e = &cardEntry{}
		c.m[peer] = e
	}
	due := e.at.IsZero() ||
		(e.err != "" && now.Sub(e.at) > cardRetry) ||
		(e.err == "" && now.Sub(e.at) > cardRefresh) ||
		(e.card != nil && now.After(e.card.Expires()))
	if due && !e.busy && c.inflight < cardFetches {
		e.busy = true
		c.inflight++
		if !c.s.group.Go(func() { c.fetch(peer, e) }) {
			e.busy = false
			c.inflight--
		}
	}
	card := e.card
	if card != nil && now.After(card.Expires()) {
		card = nil
	}
	return card, e.err
}

func (c *cardCache) fetch(peer string, e *cardEntry) {
	ctx, cancel := context.WithTimeout(c.s.ctx, cardTimeout)
	card, err := c.s.n.Card(ctx, peer)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	e.busy = false
	c.inflight--
	e.at = time.Now()
	if err != nil {
		e.err = err.Error()
		return
	}
	e.card, e.err = card, ""
}

// evictLocked drops the entry tried longest ago that is not being fetched.
func (c *cardCache) evictLocked() {
	var oldest string
	var at time.Time
	for p, e := range c.m {
		if !e.busy && (oldest == "" || e.at.Before(at)) {
			oldest, at = p, e.at
		}
	}
	delete(c.m, oldest)
}

// describe fills p's card fields from its card, if one is kept.
func (c *cardCache) describe(p *Peer) {
	card, err := c.get(p.ID)
	if card == nil {
		p.CardError = err
		return
	}
	p.Name, p.Description, p.Tags = card.Name, card.Description, card.Tags
	for _, srv := range card.Servers {
		s := SharedServer{Name: srv.Name, Resources: len(srv.Resources) + len(srv.ResourceTemplates), Prompts: len(srv.Prompts)}
		for _, t := range srv.Tools {
			s.Tools = append(s.Tools, SharedTool{Name: t.Name, Description: t.Description, Tags: t.Tags})
		}
		p.Shares = append(p.Shares, s)
	}
}
