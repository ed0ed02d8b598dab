package transport

import (
	"bytes"
	"strconv"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
)

// flight is the peer's requests that a conn has read and not yet answered,
// by the id the SDK knows them by.
//
// The SDK's jsonrpc.ID holds an int64 or a string: it reads 1.5 as 1 and
// 9007199254740993 as 9007199254740992, and 30 digits as the smallest
// int64, and its answer carries what it holds. So the conn gives each
// request an id of its own (a sequence number) on the way in and puts the
// id the peer sent, byte for byte, back on the answer. That also lets the
// conn refuse what the SDK would leave unanswered: a request whose id is
// null (which the SDK reads as a notification), or whose id is already in
// flight (which the SDK answers with a null id, that is to no one).
type flight struct {
	mu      sync.Mutex
	byWire  map[string]int64      // the peer's id (its JSON text) → the SDK's
	pending map[int64]*inflightID // the SDK's id → the peer's, and what it holds
	seq     int64
	changed chan struct{} // closed when a request is answered, or the conn closes; then replaced
	closed  bool
	waiting int // reads waiting for an answer (tests look)

	opened   time.Time
	requests int64     // requests read in all
	last     time.Time // when the last request was read or answered
}

type inflightID struct {
	raw  []byte // the id as the peer sent it
	cost int64  // the budget its frame holds until it is answered
}

func (f *flight) init(now time.Time) {
	f.byWire = map[string]int64{}
	f.pending = map[int64]*inflightID{}
	f.changed = make(chan struct{})
	f.opened, f.last = now, now
}

// admit records a request whose id the peer sent as raw, whose frame holds
// cost of the budget, and returns the id to give the SDK and how many
// requests are in flight with it; ok is false if raw is in flight already.
func (f *flight) admit(raw []byte, cost int64, now time.Time) (id jsonrpc.ID, inFlight int, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.byWire[string(raw)]; dup {
		return jsonrpc.ID{}, len(f.pending), false
	}
	f.seq++
	raw = bytes.Clone(raw)
	f.byWire[string(raw)] = f.seq
	f.pending[f.seq] = &inflightID{raw: raw, cost: cost}
	f.requests++
	f.last = now
	return sdkcompat.IDFor(f.seq), len(f.pending), true
}

// answer forgets the request the SDK knows as id and returns the id the
// peer sent and the budget its frame held; ok is false if id is not one of
// the peer's requests in flight (an id of the SDK's own requests, say).
func (f *flight) answer(id jsonrpc.ID, now time.Time) (raw []byte, cost int64, idle bool, ok bool) {
	n, isInt := id.Raw().(int64)
	if !isInt {
		return nil, 0, false, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p, found := f.pending[n]
	if !found {
		return nil, 0, false, false
	}
	delete(f.pending, n)
	delete(f.byWire, string(p.raw))
	f.last = now
	// After close, changed stays closed: the SDK may still answer a
	// request it was serving when the conn closed.
	if !f.closed {
		close(f.changed)
		f.changed = make(chan struct{})
	}
	return p.raw, p.cost, len(f.pending) == 0, true
}

// sdkID returns the SDK's id of the peer's request in flight whose id the
// peer wrote as raw (in a notifications/cancelled).
func (f *flight) sdkID(raw []byte) (int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byWire[string(raw)]
	return n, ok
}

// wait returns once fewer than n requests are in flight (n = 1: none), or
// the conn is closed (false).
func (f *flight) wait(n int) bool { return f.waitFor(n, 0) }

// waitFor is wait, bounded to d if d > 0: it also returns (true) once d
// has passed.
func (f *flight) waitFor(n int, d time.Duration) bool {
	var timeout <-chan time.Time // made when first waited on
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return false
		}
		if len(f.pending) < n {
			f.mu.Unlock()
			return true
		}
		ch := f.changed
		f.waiting++
		f.mu.Unlock()
		if d > 0 && timeout == nil {
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		timedOut := false
		select {
		case <-ch:
		case <-timeout:
			timedOut = true
		}
		f.mu.Lock()
		f.waiting--
		f.mu.Unlock()
		if timedOut {
			return true
		}
	}
}

// close wakes every waiter for good, and returns the budget the requests in
// flight still hold.
func (f *flight) close() (held int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.changed)
	}
	for _, p := range f.pending {
		held += p.cost
		p.cost = 0
	}
	return held
}

// count returns how many requests are in flight.
func (f *flight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// state returns what Activity reports.
func (f *flight) state() Activity {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Activity{Opened: f.opened, Requests: f.requests, InFlight: len(f.pending), Last: f.last}
}

// Activity is how a session stands: when it opened, how many requests it
// has sent in all and has in flight, and when it last sent one or had one
// answered. A node that must make room evicts by it (limits.Sessions).
type Activity struct {
	Opened   time.Time
	Requests int64
	InFlight int
	Last     time.Time
}

// idText shows an id as sent, shortened for a message.
func idText(raw []byte) string {
	if len(raw) > maxIDTextShow {
		return string(raw[:maxIDTextShow]) + "…"
	}
	return string(raw)
}

// sdkIDText is the JSON text of an id the conn gives the SDK.
func sdkIDText(n int64) []byte { return strconv.AppendInt(nil, n, 10) }
