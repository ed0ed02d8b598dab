// Package feed carries a node's events over libp2p streams: the node serves
// its feed (events/list, events/poll and events/stream, the MCP Triggers &
// Events sketch's messages framed as MCP's stdio transport frames them) on
// protocol /mcpmesh/events/1.0.0, and subscribes to peers' feeds with a
// Subscription that reconnects and resumes from its cursor.
//
// One stream carries one request: a list, a poll, or a push subscription
// that lasts as long as the stream. Closing (or resetting) the stream ends
// the subscription, as aborting the request does over HTTP.
package feed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/internal/owner"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

var log = logging.Logger("mcpmesh/events")

// Protocol is the stream protocol of a node's event feed.
const Protocol protocol.ID = "/mcpmesh/events/1.0.0"

// AuditServer is the server name audit records of the feed carry.
const AuditServer = "events"

// Config is what a Server serves and how it guards it. Source and May are
// required.
type Config struct {
	Source *events.Source
	// May reports whether p may subscribe to the events called name (the
	// node's policy). It is asked when p subscribes or polls, and again
	// before each batch a subscription delivers: a grant withdrawn ends the
	// subscription (notifications/events/terminated, -32012).
	May func(p lpeer.ID, name string) bool
	// Visible, if set, reports whether one event may go to p: a resource
	// event about a resource p may not see does not.
	Visible func(p lpeer.ID, e *events.Event) bool
	// Admit, if set, counts a request against p's limits (rate, bans): an
	// error refuses it.
	Admit func(p lpeer.ID) error
	// Strike, if set, is told of each request p broke or was refused.
	Strike func(p lpeer.ID, why string)
	// Audit, if set, gets a record per request: subscriptions when they
	// end, polls, refusals.
	Audit *audit.Log

	// MaxPerPeer and MaxTotal bound the subscriptions held open (defaults
	// 16 per peer, 1024 in all).
	MaxPerPeer, MaxTotal int
	// Heartbeat is how often a quiet subscription hears from the source
	// (default events.DefaultHeartbeat).
	Heartbeat time.Duration
	// WriteTimeout ends a subscription whose subscriber has not taken an
	// event for that long (default 30s): a stalled reader holds a goroutine
	// and a stream, never a queue.
	WriteTimeout time.Duration
	// MaxRequest bounds the request frame (default 64 KiB).
	MaxRequest int
}

func (c *Config) setDefaults() {
	if c.MaxPerPeer <= 0 {
		c.MaxPerPeer = 16
	}
	if c.MaxTotal <= 0 {
		c.MaxTotal = 1024
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = events.DefaultHeartbeat
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.MaxRequest <= 0 {
		c.MaxRequest = 64 << 10
	}
}

// Server serves a node's feed to its peers. Each push subscription is a
// goroutine (and one more reading the stream for its end), owned by the
// server: Close ends them all and waits.
type Server struct {
	cfg   Config
	h     host.Host
	names identity.Texts

	ctx    context.Context
	cancel context.CancelFunc
	group  owner.Group

	mu      sync.Mutex
	perPeer map[lpeer.ID]int
	total   int
}

// batch is how many events a subscription takes from the log at a time.
const batch = 64

// maxExtraFrames bounds what a subscriber may send after its request,
// besides notifications/cancelled: nothing is expected.
const maxExtraFrames = 16

// pollMax bounds the events one poll returns.
const pollMax = 1000

// NewServer serves cfg's feed on h.
func NewServer(h host.Host, cfg Config) *Server {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, h: h, ctx: ctx, cancel: cancel, perPeer: map[lpeer.ID]int{}}
	h.SetStreamHandler(Protocol, s.handle)
	return s
}

// Close stops serving: subscriptions end, and Close waits for them.
func (s *Server) Close() {
	s.h.RemoveStreamHandler(Protocol)
	s.group.Stop()
	s.cancel()
	s.group.Wait()
}

// Subscriptions returns how many subscriptions are open.
func (s *Server) Subscriptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// requestTimeout bounds the wait for a stream's request.
const requestTimeout = 10 * time.Second

func (s *Server) handle(st network.Stream) {
	if !s.group.Enter() {
		st.Reset()
		return
	}
	defer s.group.Leave()
	p := st.Conn().RemotePeer()
	// A subscription's stream stays open and carries almost nothing in:
	// a small read buffer (a longer request is read all the same).
	conn := transport.NewConnSize(st, s.cfg.MaxRequest, 1<<10)
	// A request over the limit is answered with an error naming it, and
	// is a strike.
	struck := false
	conn.OnBadFrame(func(error) {
		struck = true
		s.strike(p, "events: bad request frame")
	})
	defer conn.Close()
	st.SetReadDeadline(time.Now().Add(requestTimeout))
	msg, err := conn.Read(s.ctx)
	if err != nil {
		if !struck && (errors.Is(err, transport.ErrFrameTooLarge) || !isEOF(err)) {
			s.strike(p, "events: bad request frame")
		}
		log.Debugw("events request", "peer", p, "error", err)
		return
	}
	st.SetReadDeadline(time.Time{})
	req, ok := msg.(*jsonrpc.Request)
	if !ok || !req.ID.IsValid() {
		conn.Break(errors.New("not a request"))
		s.strike(p, "events: not a request")
		return
	}
	reply := func(result any, rerr *jsonrpc.Error) {
		resp := &jsonrpc.Response{ID: req.ID}
		if rerr != nil {
			resp.Error = rerr
		} else {
			resp.Result, err = json.Marshal(result)
			if err != nil {
				resp.Error = events.Error(jsonrpc.CodeInternalError, nil, "encode result: %v", err)
			}
		}
		st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		conn.Write(s.ctx, resp)
	}
	switch req.Method {
	case events.MethodList:
		reply(s.list(p), nil)
	case events.MethodPoll:
		res, rerr := s.poll(p, req.Params)
		reply(res, rerr)
	case events.MethodStream:
		s.stream(st, conn, p, req, reply)
	case events.MethodSubscribe:
		reply(nil, events.Error(events.CodeUnsupported, map[string]string{"feature": "deliveryMode", "value": "webhook"},
			"webhook delivery is not offered in the mesh: use events/stream (push) or events/poll"))
	default:
		reply(nil, events.Error(jsonrpc.CodeMethodNotFound, nil, "method %q not found: the event feed answers events/list, events/poll and events/stream", clipString(req.Method, 40)))
	}
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, network.ErrReset) || errors.Is(err, context.Canceled)
}

func (s *Server) strike(p lpeer.ID, why string) {
	if s.cfg.Strike != nil {
		s.cfg.Strike(p, why)
	}
}

// list answers events/list: the types p may subscribe to.
func (s *Server) list(p lpeer.ID) *events.ListResult {
	res := &events.ListResult{Events: []events.Type{}}
	for _, t := range s.cfg.Source.Types() {
		if s.cfg.May(p, t.Name) {
			res.Events = append(res.Events, t)
		}
	}
	return res
}

// subscription is one events/poll or events/stream request, checked.
type subscription struct {
	name      string
	filter    *events.Filter
	pos       uint64
	truncated bool
}

// open checks a poll's or a subscription's params: the type exists, p may
// subscribe to it, is within its limits, and the arguments and cursor are
// valid. A refusal is audited (and struck, unless it is a limit).
func (s *Server) open(p lpeer.ID, method string, raw json.RawMessage) (*subscription, *jsonrpc.Error) {
	rec := audit.Record{Time: time.Now(), Caller: s.names.Of(p), Server: AuditServer, Method: method}
	refuse := func(reason string, strike bool, e *jsonrpc.Error) (*subscription, *jsonrpc.Error) {
		rec.Outcome, rec.Reason = audit.Refused, reason
		s.audit(rec)
		if strike {
			s.strike(p, "events: "+reason)
		}
		return nil, e
	}
	var params events.SubscribeParams
	if err := json.Unmarshal(raw, &params); err != nil {
		return refuse("invalid", true, events.Error(events.CodeInvalidParams, nil, "%s: params: %v", method, err))
	}
	rec.Name = clipString(params.Name, events.MaxNameLen)
	if _, ok := s.cfg.Source.Declared(params.Name); !ok {
		return refuse("not found", false, events.Error(events.CodeNotFound, map[string]string{"kind": "event"},
			"no event type %q on %s (events/list names those there are)", clipString(params.Name, 60), identity.Short(s.h.ID())))
	}
	if !s.cfg.May(p, params.Name) {
		return refuse("policy", true, events.Error(events.CodeForbidden, nil,
			"not permitted: %s may not subscribe to %s on %s", identity.Short(p), params.Name, identity.Short(s.h.ID())))
	}
	if s.cfg.Admit != nil {
		if err := s.cfg.Admit(p); err != nil {
			return refuse("rate", false, events.Error(events.CodeResourceExhausted, map[string]string{"limit": "rate"}, "%v", err))
		}
	}
	var args events.Arguments
	if len(params.Arguments) > 0 && string(params.Arguments) != "null" {
		if err := strictDecode(params.Arguments, &args); err != nil {
			return refuse("invalid", true, events.Error(events.CodeInvalidParams, nil, "%s %s: arguments: %v (the only argument is \"where\")", method, params.Name, err))
		}
	}
	filter, err := events.ParseFilter(args.Where)
	if err != nil {
		return refuse("invalid", true, events.Error(events.CodeInvalidParams, nil, "%s %s: arguments: %v", method, params.Name, err))
	}
	cursor := ""
	if params.Cursor != nil {
		cursor = *params.Cursor
	}
	if params.MaxAgeMs < 0 {
		params.MaxAgeMs = 0
	}
	pos, truncated, err := s.cfg.Source.Log().Position(cursor, params.MaxAge())
	if err != nil {
		return refuse("invalid", true, events.Error(events.CodeInvalidParams, nil, "%s %s: %v", method, params.Name, err))
	}
	return &subscription{name: params.Name, filter: filter, pos: pos, truncated: truncated}, nil
}

func (s *Server) audit(rec audit.Record) {
	if s.cfg.Audit != nil {
		s.cfg.Audit.Add(rec)
	}
}

// poll answers events/poll.
func (s *Server) poll(p lpeer.ID, raw json.RawMessage) (*events.PollResult, *jsonrpc.Error) {
	sub, rerr := s.open(p, events.MethodPoll, raw)
	if rerr != nil {
		return nil, rerr
	}
	var params events.SubscribeParams
	json.Unmarshal(raw, &params) // decoded once already
	max := params.MaxEvents
	if max <= 0 || max > pollMax {
		max = pollMax
	}
	res := &events.PollResult{Events: []events.Event{}, Truncated: sub.truncated, NextPollMs: 1000}
	log := s.cfg.Source.Log()
	pos := sub.pos
	// Read no more events than may still be returned, so that the cursor
	// is exactly after the last one looked at; bound the scan too.
	for scanned := 0; len(res.Events) < max && scanned < 16*pollMax; {
		evs, next, gap := log.Read(pos, min(batch, max-len(res.Events)))
		res.Truncated = res.Truncated || gap
		scanned += len(evs)
		for i := range evs {
			if s.deliverable(p, sub, &evs[i]) {
				res.Events = append(res.Events, evs[i])
			}
		}
		pos = next
		if len(evs) == 0 {
			break
		}
	}
	res.Cursor = log.Cursor(pos)
	res.HasMore = pos < log.Head()
	s.audit(audit.Record{Time: time.Now(), Caller: s.names.Of(p), Server: AuditServer, Method: events.MethodPoll, Name: sub.name, Outcome: audit.OK})
	return res, nil
}

// deliverable reports whether e goes to p on sub.
func (s *Server) deliverable(p lpeer.ID, sub *subscription, e *events.Event) bool {
	if e.Name != sub.name || !sub.filter.Match(e.Data) {
		return false
	}
	return s.cfg.Visible == nil || s.cfg.Visible(p, e)
}

// take counts a new subscription of p against the bounds.
func (s *Server) take(p lpeer.ID) *jsonrpc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perPeer[p] >= s.cfg.MaxPerPeer {
		return events.Error(events.CodeResourceExhausted, map[string]any{"limit": "subscriptions", "max": s.cfg.MaxPerPeer},
			"too many subscriptions: %s holds %d on %s, the most a peer may", identity.Short(p), s.cfg.MaxPerPeer, identity.Short(s.h.ID()))
	}
	if s.total >= s.cfg.MaxTotal {
		return events.Error(events.CodeResourceExhausted, map[string]any{"limit": "subscriptions", "max": s.cfg.MaxTotal},
			"too many subscriptions on %s (%d in all); try again later", identity.Short(s.h.ID()), s.cfg.MaxTotal)
	}
	s.perPeer[p]++
	s.total++
	return nil
}

func (s *Server) release(p lpeer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perPeer[p]--; s.perPeer[p] <= 0 {
		delete(s.perPeer, p)
	}
	s.total--
}

// stream runs one push subscription until the subscriber closes the
// stream, the source closes, the subscriber stalls past WriteTimeout, or
// its grant is withdrawn.
func (s *Server) stream(st network.Stream, conn *transport.Conn, p lpeer.ID, req *jsonrpc.Request, reply func(any, *jsonrpc.Error)) {
	sub, rerr := s.open(p, events.MethodStream, req.Params)
	if rerr == nil {
		rerr = s.take(p)
		if rerr != nil {
			s.audit(audit.Record{Time: time.Now(), Caller: s.names.Of(p), Server: AuditServer, Method: events.MethodStream, Name: sub.name, Outcome: audit.Refused, Reason: "subscriptions"})
		}
	}
	if rerr != nil {
		reply(nil, rerr)
		return
	}
	defer s.release(p)
	start := time.Now()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// The subscriber ends the subscription by closing or resetting the
	// stream, or with notifications/cancelled; anything else it sends is
	// read and dropped (within the frame limit).
	ended := make(chan struct{})
	if !s.group.Go(func() {
		defer close(ended)
		defer cancel()
		for extra := 0; ; extra++ {
			msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			if n, ok := msg.(*jsonrpc.Request); ok && n.Method == "notifications/cancelled" {
				return
			}
			if extra == maxExtraFrames {
				s.strike(p, "events: frames after the request")
				return
			}
		}
	}) {
		return
	}
	meta := &events.Meta{SubscriptionID: idJSON(req.ID)}
	outcome, reason := s.push(ctx, st, conn, p, sub, meta)
	cancel()
	st.Reset() // unblocks the reader
	<-ended
	s.audit(audit.Record{Time: start, Caller: s.names.Of(p), Server: AuditServer, Method: events.MethodStream, Name: sub.name,
		Outcome: outcome, Reason: reason, Duration: time.Since(start)})
}

// push writes the subscription's notifications until it ends, and says how
// it ended.
func (s *Server) push(ctx context.Context, st network.Stream, conn *transport.Conn, p lpeer.ID, sub *subscription, meta *events.Meta) (audit.Outcome, string) {
	log := s.cfg.Source.Log()
	write := func(method string, params any) error {
		raw, err := json.Marshal(params)
		if err != nil {
			return err
		}
		st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		return conn.Write(ctx, &jsonrpc.Request{Method: method, Params: raw})
	}
	failed := func(err error) (audit.Outcome, string) {
		if ctx.Err() != nil {
			return audit.OK, "" // the subscriber or the node ended it
		}
		return audit.Error, "write: " + err.Error()
	}
	pos := sub.pos
	if err := write(events.NotifyActive, events.Active{Cursor: log.Cursor(pos), Truncated: sub.truncated, Meta: meta}); err != nil {
		return failed(err)
	}
	beat := time.NewTicker(s.cfg.Heartbeat)
	defer beat.Stop()
	for {
		wake := log.Wait()
		evs, next, gap := log.Read(pos, batch)
		if gap {
			// The log dropped events this subscriber had not taken: say so,
			// and go on from what it still holds.
			if err := write(events.NotifyActive, events.Active{Cursor: log.Cursor(next), Truncated: true, Meta: meta}); err != nil {
				return failed(err)
			}
		}
		if len(evs) > 0 && !s.cfg.May(p, sub.name) {
			write(events.NotifyTerminated, events.Terminated{Meta: meta, Error: events.Error(events.CodeForbidden, map[string]string{"reason": "access revoked"},
				"not permitted any more: %s may not subscribe to %s on %s", identity.Short(p), sub.name, identity.Short(s.h.ID()))})
			return audit.Refused, "policy"
		}
		for i := range evs {
			if !s.deliverable(p, sub, &evs[i]) {
				continue
			}
			evs[i].Meta = withSubscription(evs[i].Meta, meta)
			if err := write(events.NotifyEvent, &evs[i]); err != nil {
				return failed(err)
			}
		}
		pos = next
		if len(evs) == batch {
			if ctx.Err() != nil {
				return audit.OK, ""
			}
			continue
		}
		select {
		case <-wake:
		case <-beat.C:
			if err := write(events.NotifyHeartbeat, events.Heartbeat{Cursor: log.Cursor(pos), Meta: meta}); err != nil {
				return failed(err)
			}
		case <-ctx.Done():
			return audit.OK, ""
		}
	}
}

// withSubscription returns an event's meta with the subscription's ID.
func withSubscription(m, sub *events.Meta) *events.Meta {
	if m == nil {
		return sub
	}
	c := *m
	c.SubscriptionID = sub.SubscriptionID
	return &c
}

func idJSON(id jsonrpc.ID) json.RawMessage {
	b, err := json.Marshal(id.Raw())
	if err != nil {
		return nil
	}
	return b
}

// strictDecode decodes one JSON object into v, refusing unknown fields.
func strictDecode(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func clipString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
