// Package inbox holds event subscriptions for an MCP host that cannot
// hold a stream itself: the gateway's mesh_subscribe starts one, and
// mesh_events waits for what it brings, so that a host's model waits for
// an event with one tool call instead of polling tools by hand.
package inbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/events/feed"
)

// Node is what an inbox needs of a node; *node.Node implements it.
type Node interface {
	ID() lpeer.ID
	Subscribe(p lpeer.ID, opts feed.Options) (*feed.Subscription, error)
	Find(ctx context.Context, query string, found func(discovery.Found)) error
}

// Bounds of an inbox.
const (
	// MaxSubscriptions bounds the subscriptions one inbox holds.
	MaxSubscriptions = 16
	// maxProviders bounds the peers a subscription to "any" provider
	// follows.
	maxProviders = 8
	// maxBuffered bounds the events a subscription keeps until they are
	// taken; past it the oldest go and the next batch says truncated.
	maxBuffered = 256
	// idle is how long a subscription lives without being waited on.
	idle = 10 * time.Minute
	// maxWait bounds one wait.
	maxWait = 60 * time.Second
	// maxData bounds the data of one event handed to a host: every byte
	// is paid in its context.
	maxData = 4 << 10
)

// Inbox holds subscriptions and the events they bring until taken. It is
// safe for concurrent use.
type Inbox struct {
	n Node

	mu     sync.Mutex
	subs   map[string]*entry
	wake   chan struct{} // closed when an event arrives
	closed bool
}

type entry struct {
	id, event string
	from      string
	where     json.RawMessage
	feeds     []*feed.Subscription
	buf       []Event
	dropped   bool
	lastUsed  time.Time
}

// New returns an empty inbox acting through n.
func New(n Node) *Inbox {
	return &Inbox{n: n, subs: map[string]*entry{}, wake: make(chan struct{})}
}

// Close ends every subscription.
func (ib *Inbox) Close() {
	ib.mu.Lock()
	ib.closed = true
	subs := ib.subs
	ib.subs = map[string]*entry{}
	ib.mu.Unlock()
	for _, e := range subs {
		e.close()
	}
}

func (e *entry) close() {
	for _, f := range e.feeds {
		f.Close()
	}
}

// Event is an event as a host sees it.
type Event struct {
	Sub  string          `json:"sub"`
	From string          `json:"from"`
	Name string          `json:"event"`
	ID   string          `json:"id"`
	Time time.Time       `json:"time"`
	Data json.RawMessage `json:"data"`
}

// Subscribe starts a subscription to event from peer from (a peer ID, "self"
// or "any": every provider the mesh knows), filtered by where, and returns
// its ID. The same subscription asked again returns the same ID.
func (ib *Inbox) Subscribe(ctx context.Context, from, event string, where json.RawMessage) (string, error) {
	if err := events.CheckName(event); err != nil {
		return "", err
	}
	if _, err := events.ParseFilter(where); err != nil {
		return "", err
	}
	if from == "" {
		from = "any"
	}
	var peers []lpeer.ID
	switch from {
	case "any":
	case "self":
		peers = []lpeer.ID{ib.n.ID()}
	default:
		p, err := lpeer.Decode(from)
		if err != nil {
			return "", fmt.Errorf("from %q: want a peer ID, \"self\" or \"any\"", from)
		}
		peers = []lpeer.ID{p}
	}
	ib.mu.Lock()
	gone := ib.sweepLocked()
	defer closeAll(gone)
	for _, e := range ib.subs {
		if e.event == event && e.from == from && string(e.where) == string(where) {
			e.lastUsed = time.Now()
			ib.mu.Unlock()
			return e.id, nil
		}
	}
	if ib.closed {
		ib.mu.Unlock()
		return "", errors.New("gateway closed")
	}
	if len(ib.subs) >= MaxSubscriptions {
		ib.mu.Unlock()
		return "", fmt.Errorf("too many subscriptions (%d): wait on the ones you have, or let them lapse (%v unused)", MaxSubscriptions, idle)
	}
	e := &entry{id: newID(), event: event, from: from, where: where, lastUsed: time.Now()}
	ib.subs[e.id] = e
	ib.mu.Unlock()

	if from == "any" {
		fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ib.n.Find(fctx, "event:"+event, func(f discovery.Found) {
			if len(peers) < maxProviders && !slices.Contains(peers, f.Card.Peer) {
				peers = append(peers, f.Card.Peer)
			}
		})
		cancel()
		if len(peers) == 0 {
			ib.drop(e.id)
			return "", fmt.Errorf("no peer in the mesh offers events %s that you may subscribe to", event)
		}
	}
	for _, p := range peers {
		sub, err := ib.n.Subscribe(p, feed.Options{Name: event, Where: where,
			Deliver: func(_ context.Context, ev events.Event) { ib.deliver(e, ev) },
			OnActive: func(_ string, truncated bool) {
				if truncated {
					ib.mu.Lock()
					e.dropped = true
					ib.mu.Unlock()
				}
			}})
		if err != nil {
			ib.drop(e.id)
			return "", err
		}
		ib.mu.Lock()
		live := ib.subs[e.id] == e
		if live {
			e.feeds = append(e.feeds, sub)
		}
		ib.mu.Unlock()
		if !live {
			sub.Close()
		}
	}
	return e.id, nil
}

func (ib *Inbox) drop(id string) {
	ib.mu.Lock()
	e := ib.subs[id]
	delete(ib.subs, id)
	ib.mu.Unlock()
	if e != nil {
		e.close()
	}
}

// sweepLocked forgets the subscriptions no one has waited on for a while
// and returns them, to be closed once ib.mu is released (closing waits for
// a delivery in progress, which takes ib.mu).
func (ib *Inbox) sweepLocked() []*entry {
	var gone []*entry
	for id, e := range ib.subs {
		if time.Since(e.lastUsed) > idle {
			delete(ib.subs, id)
			gone = append(gone, e)
		}
	}
	return gone
}

func closeAll(es []*entry) {
	for _, e := range es {
		e.close()
	}
}

// deliver keeps an event of subscription e until it is taken.
func (ib *Inbox) deliver(e *entry, ev events.Event) {
	data := ev.Data
	if len(data) > maxData {
		data, _ = json.Marshal(map[string]any{"_truncated": fmt.Sprintf("%d bytes: too long to show here; fetch it with a tool", len(ev.Data))})
	}
	ib.mu.Lock()
	defer ib.mu.Unlock()
	if len(e.buf) == maxBuffered {
		e.buf = append(e.buf[:0], e.buf[1:]...)
		e.dropped = true
	}
	e.buf = append(e.buf, Event{Sub: e.id, From: ev.Source, Name: ev.Name, ID: ev.ID, Time: ev.Time, Data: data})
	close(ib.wake)
	ib.wake = make(chan struct{})
}

// Batch is what Wait returns.
type Batch struct {
	Events []Event `json:"events"`
	// Truncated says events were dropped before these (a subscription's
	// buffer was full, or a source's log no longer held them).
	Truncated bool `json:"truncated,omitempty"`
	// Waiting lists the subscriptions waited on, with their sources'
	// state, when nothing came.
	Waiting []string `json:"waiting,omitempty"`
}

// Wait returns up to most events of the subscriptions ids (all of them if
// none), waiting up to wait for the first.
func (ib *Inbox) Wait(ctx context.Context, ids []string, wait time.Duration, most int) (*Batch, error) {
	switch {
	case wait <= 0:
		wait = 30 * time.Second
	case wait > maxWait:
		wait = maxWait
	}
	if most <= 0 || most > 100 {
		most = 10
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		ib.mu.Lock()
		gone := ib.sweepLocked()
		var chosen []*entry
		if len(ids) == 0 {
			for _, e := range ib.subs {
				chosen = append(chosen, e)
			}
		} else {
			for _, id := range ids {
				e, ok := ib.subs[id]
				if !ok {
					ib.mu.Unlock()
					closeAll(gone)
					return nil, fmt.Errorf("no subscription %q (it lapsed after %v unused, or never was): subscribe again", id, idle)
				}
				chosen = append(chosen, e)
			}
		}
		if len(chosen) == 0 {
			ib.mu.Unlock()
			closeAll(gone)
			return nil, errors.New("no subscriptions: start one with mesh_subscribe")
		}
		b := &Batch{Events: []Event{}}
		for _, e := range chosen {
			e.lastUsed = time.Now()
			n := min(len(e.buf), most-len(b.Events))
			b.Events = append(b.Events, e.buf[:n]...)
			e.buf = append(e.buf[:0], e.buf[n:]...)
			if e.dropped {
				b.Truncated, e.dropped = true, false
			}
		}
		wake := ib.wake
		ib.mu.Unlock()
		closeAll(gone)
		if len(b.Events) > 0 {
			slices.SortFunc(b.Events, func(x, y Event) int { return x.Time.Compare(y.Time) })
			return b, nil
		}
		select {
		case <-wake:
		case <-timer.C:
			for _, e := range chosen {
				for _, f := range e.feeds {
					st := f.Status()
					s := fmt.Sprintf("%s %s from %s: connected %v", e.id, e.event, st.Peer, st.Connected)
					if st.LastError != "" {
						s += ", " + st.LastError
					}
					b.Waiting = append(b.Waiting, s)
				}
			}
			return b, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return "sub-" + hex.EncodeToString(b[:])
}
