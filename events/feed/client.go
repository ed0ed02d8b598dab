package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/internal/retry"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

// dialTimeout bounds reaching a peer's feed.
const dialTimeout = 10 * time.Second

// maxCursor bounds a cursor a source sends: it is kept and sent back.
const maxCursor = 128

// maxDepth bounds the trigger depth an event may claim.
const maxDepth = 64

// open opens a stream to p's feed and sends one request.
func open(ctx context.Context, h host.Host, p lpeer.ID, method string, params any, limit int) (network.Stream, *transport.Conn, error) {
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, nil, err
	}
	st, err := h.NewStream(network.WithDialPeerTimeout(ctx, dialTimeout), p, Protocol)
	if err != nil {
		return nil, nil, fmt.Errorf("reach the event feed of %s: %w", identity.Short(p), err)
	}
	conn := transport.NewConnSize(st, limit, 4<<10)
	id, _ := jsonrpc.MakeID(float64(1))
	st.SetWriteDeadline(time.Now().Add(dialTimeout))
	if err := conn.Write(ctx, &jsonrpc.Request{ID: id, Method: method, Params: raw}); err != nil {
		st.Reset()
		return nil, nil, fmt.Errorf("%s to %s: %w", method, identity.Short(p), err)
	}
	st.SetWriteDeadline(time.Time{})
	return st, conn, nil
}

// call makes one request to p's feed and decodes its result into out.
func call(ctx context.Context, h host.Host, p lpeer.ID, method string, params, out any) error {
	st, conn, err := open(ctx, h, p, method, params, 8<<20)
	if err != nil {
		return err
	}
	defer conn.Close()
	st.CloseWrite()
	if d, ok := ctx.Deadline(); ok {
		st.SetReadDeadline(d)
	} else {
		st.SetReadDeadline(time.Now().Add(dialTimeout))
	}
	msg, err := conn.Read(ctx)
	if err != nil {
		return fmt.Errorf("%s on %s: %w", method, identity.Short(p), err)
	}
	resp, ok := msg.(*jsonrpc.Response)
	if !ok {
		return fmt.Errorf("%s on %s: the peer sent a request, not an answer", method, identity.Short(p))
	}
	if resp.Error != nil {
		return resp.Error
	}
	if err := json.Unmarshal(resp.Result, out); err != nil {
		return fmt.Errorf("%s on %s: %w", method, identity.Short(p), err)
	}
	return nil
}

// List asks p which event types this node may subscribe to there.
func List(ctx context.Context, h host.Host, p lpeer.ID) ([]events.Type, error) {
	var res events.ListResult
	if err := call(ctx, h, p, events.MethodList, struct{}{}, &res); err != nil {
		return nil, err
	}
	return res.Events, nil
}

// Poll asks p for the events after params.Cursor (nil: from now, which
// returns none and the cursor of now).
func Poll(ctx context.Context, h host.Host, p lpeer.ID, params events.SubscribeParams) (*events.PollResult, error) {
	var res events.PollResult
	if err := call(ctx, h, p, events.MethodPoll, &params, &res); err != nil {
		return nil, err
	}
	for i := range res.Events {
		res.Events[i].Source = p.String()
	}
	return &res, nil
}

// Options describe a push subscription. Name and Deliver are required.
type Options struct {
	// Name is the event type; Where, if set, a filter the source applies.
	Name  string
	Where json.RawMessage
	// Cursor is where to resume ("" from now); MaxAge, if set, skips older
	// events on resuming.
	Cursor string
	MaxAge time.Duration
	// Deliver is called with each event, in order, on the subscription's
	// goroutine. The subscription reads nothing more until it returns, so
	// a slow Deliver holds the source back (and past the source's log, a
	// gap is reported). ctx ends when the subscription closes. An event
	// delivered before (same source, same ID) within the last 1024 is not
	// delivered again.
	Deliver func(ctx context.Context, e events.Event)
	// OnCursor is told each position the subscription reaches: after
	// Deliver returns for an event, and on each heartbeat. Keep the last
	// to resume from it after a restart.
	OnCursor func(cursor string)
	// OnActive is told when the source confirms the subscription, and
	// when it reports a gap; truncated says events were skipped.
	OnActive func(cursor string, truncated bool)
	// Liveness is how long the subscription waits for a word from the
	// source (an event or a heartbeat) before it reconnects. Default four
	// heartbeats.
	Liveness time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting
	// (defaults 1s and 1m).
	MinBackoff, MaxBackoff time.Duration
	// MaxData bounds an event's data (default events.DefaultMaxData).
	MaxData int
}

// Status describes a subscription.
type Status struct {
	Peer        string    `json:"peer"`
	Name        string    `json:"name"`
	Connected   bool      `json:"connected"`
	Cursor      string    `json:"cursor,omitempty"`
	Events      int       `json:"events"`
	Duplicates  int       `json:"duplicates,omitempty"`
	Truncations int       `json:"truncations,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
	Since       time.Time `json:"since"`
}

// Subscription is a push subscription to one event type of one peer. It
// runs on a goroutine of its own until Close, reconnecting after any
// failure with its last cursor.
type Subscription struct {
	h      host.Host
	p      lpeer.ID
	local  *events.Source // set for a subscription to the node's own events
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	seen   *events.Seen // only the subscription's goroutine uses it

	mu     sync.Mutex
	status Status
}

// Subscribe starts a subscription to p's events of opts.Name.
func Subscribe(h host.Host, p lpeer.ID, opts Options) *Subscription {
	return start(h, p, nil, opts)
}

// SubscribeLocal starts a subscription to the events of the node's own
// source src (whose peer ID is self), read from its log directly: a node
// cannot open a stream to itself. It behaves as a remote one does.
func SubscribeLocal(src *events.Source, self lpeer.ID, opts Options) *Subscription {
	return start(nil, self, src, opts)
}

func start(h host.Host, p lpeer.ID, local *events.Source, opts Options) *Subscription {
	if opts.Liveness <= 0 {
		opts.Liveness = 4 * events.DefaultHeartbeat
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Minute
	}
	if opts.MaxData <= 0 {
		opts.MaxData = events.DefaultMaxData
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Subscription{h: h, p: p, local: local, opts: opts, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		seen:   events.NewSeen(1024),
		status: Status{Peer: p.String(), Name: opts.Name, Cursor: opts.Cursor, Since: time.Now()}}
	go func() {
		defer close(s.done)
		s.run()
	}()
	return s
}

// Close ends the subscription and waits for its goroutine (and so for a
// Deliver in progress) to return.
func (s *Subscription) Close() {
	s.cancel()
	<-s.done
}

// Peer returns the peer subscribed to.
func (s *Subscription) Peer() lpeer.ID { return s.p }

// Status reports on the subscription.
func (s *Subscription) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Subscription) update(f func(*Status)) {
	s.mu.Lock()
	f(&s.status)
	s.mu.Unlock()
}

func (s *Subscription) run() {
	if s.local != nil {
		if err := s.runLocal(); err != nil {
			s.update(func(st *Status) { st.LastError = err.Error() })
		}
		return
	}
	var backoff interface {
		Delay() time.Duration
		Reset()
	}
	for {
		active, err := s.once()
		if s.ctx.Err() != nil {
			return
		}
		if backoff == nil { // made on the first failure: most subscriptions never need one
			backoff = retry.Backoff(s.opts.MinBackoff, s.opts.MaxBackoff)
		}
		if active {
			backoff.Reset()
		}
		s.update(func(st *Status) {
			st.Connected = false
			if err != nil {
				st.LastError = err.Error()
			}
		})
		wait := backoff.Delay()
		log.Debugw("event subscription lost; reconnecting", "peer", s.p, "event", s.opts.Name, "error", err, "in", wait)
		if !retry.Sleep(s.ctx, wait) {
			return
		}
	}
}

// errBadSource is a source that broke the protocol.
var errBadSource = errors.New("the source broke the events protocol")

// once runs one stream of the subscription until it fails; active says
// whether the source confirmed it.
func (s *Subscription) once() (active bool, err error) {
	cursor := s.Status().Cursor
	params := events.SubscribeParams{Name: s.opts.Name, MaxAgeMs: s.opts.MaxAge.Milliseconds()}
	if cursor != "" {
		params.Cursor = &cursor
	}
	if len(s.opts.Where) > 0 {
		params.Arguments, _ = json.Marshal(events.Arguments{Where: s.opts.Where})
	}
	st, conn, err := open(s.ctx, s.h, s.p, events.MethodStream, &params, s.opts.MaxData+16<<10)
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(s.ctx, func() { st.Reset() })
	defer stop()
	defer conn.Close()
	for {
		st.SetReadDeadline(time.Now().Add(s.opts.Liveness))
		msg, err := conn.Read(s.ctx)
		if err != nil {
			conn.Break(err)
			return active, err
		}
		switch m := msg.(type) {
		case *jsonrpc.Response:
			if m.Error != nil {
				return active, fmt.Errorf("subscribe to %s on %s: %w", s.opts.Name, identity.Short(s.p), m.Error)
			}
			return active, fmt.Errorf("the source ended the subscription")
		case *jsonrpc.Request:
			if m.ID.IsValid() {
				conn.Break(errBadSource)
				return active, fmt.Errorf("%w: it sent a request (%s)", errBadSource, clipString(m.Method, 40))
			}
			done, err := s.notification(m, &active)
			if err != nil {
				conn.Break(err)
				return active, err
			}
			if done {
				return active, nil
			}
		}
	}
}

// notification handles one notification from the source; done says the
// source ended the subscription.
func (s *Subscription) notification(m *jsonrpc.Request, active *bool) (done bool, err error) {
	switch m.Method {
	case events.NotifyActive:
		var a events.Active
		if err := json.Unmarshal(m.Params, &a); err != nil || a.Cursor == "" || len(a.Cursor) > maxCursor {
			return false, fmt.Errorf("%w: a bad notifications/events/active", errBadSource)
		}
		*active = true
		s.update(func(st *Status) {
			st.Connected, st.Cursor, st.LastError = true, a.Cursor, ""
			if a.Truncated {
				st.Truncations++
			}
		})
		if s.opts.OnActive != nil {
			s.opts.OnActive(a.Cursor, a.Truncated)
		}
		s.advance(a.Cursor)
	case events.NotifyHeartbeat:
		var hb events.Heartbeat
		if err := json.Unmarshal(m.Params, &hb); err != nil || hb.Cursor == "" || len(hb.Cursor) > maxCursor {
			return false, fmt.Errorf("%w: a bad heartbeat", errBadSource)
		}
		s.update(func(st *Status) { st.Cursor = hb.Cursor })
		s.advance(hb.Cursor)
	case events.NotifyEvent:
		var e events.Event
		if err := json.Unmarshal(m.Params, &e); err != nil {
			return false, fmt.Errorf("%w: an event that does not decode: %v", errBadSource, err)
		}
		if err := s.check(&e); err != nil {
			return false, fmt.Errorf("%w: %v", errBadSource, err)
		}
		e.Source = s.p.String()
		if s.seen.Add(e.ID) {
			s.opts.Deliver(s.ctx, e)
			s.update(func(st *Status) { st.Events++; st.Cursor = e.Cursor })
		} else {
			s.update(func(st *Status) { st.Duplicates++; st.Cursor = e.Cursor })
		}
		s.advance(e.Cursor)
	case events.NotifyTerminated:
		var t events.Terminated
		json.Unmarshal(m.Params, &t)
		if t.Error == nil {
			t.Error = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "terminated"}
		}
		return true, fmt.Errorf("%s on %s ended by the source: %w", s.opts.Name, identity.Short(s.p), t.Error)
	case events.NotifyError:
		var t events.Terminated
		if json.Unmarshal(m.Params, &t) == nil && t.Error != nil {
			s.update(func(st *Status) { st.LastError = t.Error.Message })
		}
	default:
		// An unknown notification is ignored, as MCP ignores them.
	}
	return false, nil
}

func (s *Subscription) advance(cursor string) {
	if s.opts.OnCursor != nil {
		s.opts.OnCursor(cursor)
	}
}

// check refuses an event the subscription did not ask for or that breaks
// the bounds: a source is a peer, and peers are not trusted.
func (s *Subscription) check(e *events.Event) error {
	switch {
	case e.Name != s.opts.Name:
		return fmt.Errorf("an event %q on a subscription to %q", clipString(e.Name, 40), s.opts.Name)
	case e.ID == "" || len(e.ID) > events.MaxIDLen:
		return fmt.Errorf("an event without a usable eventId")
	case e.Cursor == "" || len(e.Cursor) > maxCursor:
		return fmt.Errorf("an event without a usable cursor")
	case e.Depth() < 0 || e.Depth() > maxDepth:
		return fmt.Errorf("an event of depth %d", e.Depth())
	}
	return events.CheckData(e.Data, s.opts.MaxData)
}

// runLocal reads the node's own log until the subscription closes.
func (s *Subscription) runLocal() error {
	filter, err := events.ParseFilter(s.opts.Where)
	if err != nil {
		return err
	}
	log := s.local.Log()
	pos, truncated, err := log.Position(s.Status().Cursor, s.opts.MaxAge)
	if err != nil {
		return err
	}
	active := func(pos uint64, truncated bool) {
		c := log.Cursor(pos)
		s.update(func(st *Status) {
			st.Connected, st.Cursor = true, c
			if truncated {
				st.Truncations++
			}
		})
		if s.opts.OnActive != nil {
			s.opts.OnActive(c, truncated)
		}
		s.advance(c)
	}
	active(pos, truncated)
	for {
		wake := log.Wait()
		evs, next, gap := log.Read(pos, batch)
		if gap {
			active(next, true)
		}
		for i := range evs {
			e := evs[i]
			if e.Name != s.opts.Name || !filter.Match(e.Data) {
				continue
			}
			e.Source = s.p.String()
			if s.seen.Add(e.ID) {
				s.opts.Deliver(s.ctx, e)
				s.update(func(st *Status) { st.Events++; st.Cursor = e.Cursor })
				s.advance(e.Cursor)
			}
			if s.ctx.Err() != nil {
				return nil
			}
		}
		pos = next
		if len(evs) > 0 {
			c := log.Cursor(pos)
			s.update(func(st *Status) { st.Cursor = c })
			s.advance(c)
		}
		if len(evs) == batch {
			continue
		}
		select {
		case <-wake:
		case <-s.ctx.Done():
			return nil
		}
	}
}
