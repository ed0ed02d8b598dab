package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/events/feed"
	"github.com/mcpmesh/mcpmesh/events/trigger"
)

// EventsRequest is the body of POST /v1/events/list, /v1/events/poll and
// /v1/events/watch: the peer ("" or "self" for the daemon itself) and, to
// poll or watch, the event type, a filter and where to start.
type EventsRequest struct {
	Peer      string          `json:"peer,omitempty"`
	Name      string          `json:"name,omitempty"`
	Where     json.RawMessage `json:"where,omitempty"`
	Cursor    string          `json:"cursor,omitempty"`
	MaxEvents int             `json:"maxEvents,omitempty"`
}

// WatchedEvent is one line of POST /v1/events/watch's answer: an event, a
// change of the subscription's state, or the error that ended it.
type WatchedEvent struct {
	Event     *events.Event `json:"event,omitempty"`
	Source    string        `json:"source,omitempty"`
	Active    bool          `json:"active,omitempty"`
	Truncated bool          `json:"truncated,omitempty"`
	Cursor    string        `json:"cursor,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// eventRoutes serves the daemon's events and triggers:
//
//	POST   /v1/events/list        the event types a peer lets the daemon subscribe to
//	POST   /v1/events/poll        events of a peer after a cursor
//	POST   /v1/events/watch       a subscription, one JSON object per line, until the client goes
//	GET    /v1/triggers           the triggers running, with what they did
//	POST   /v1/triggers           starts a trigger (a trigger.Rule)
//	DELETE /v1/triggers/{name}    stops one
func (s *Server) eventRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/events/list", s.handleEventList)
	mux.HandleFunc("POST /v1/events/poll", s.handleEventPoll)
	mux.HandleFunc("POST /v1/events/watch", s.handleEventWatch)
	mux.HandleFunc("GET /v1/triggers", s.handleTriggers)
	mux.HandleFunc("POST /v1/triggers", s.handleTriggerAdd)
	mux.HandleFunc("DELETE /v1/triggers/{name}", s.handleTriggerRemove)
}

// SetTriggers gives the API the daemon's triggers, for /v1/triggers.
func (s *Server) SetTriggers(e *trigger.Engine) { s.triggers.Store(e) }

func (s *Server) eventPeer(ctx context.Context, arg string) (lpeer.ID, error) {
	if arg == "" || arg == trigger.Self {
		return s.node.ID(), nil
	}
	return s.target(ctx, arg)
}

// readEventsRequest reads an events request and resolves its peer, answering
// the request itself (false) when either fails.
func (s *Server) readEventsRequest(w http.ResponseWriter, r *http.Request) (EventsRequest, lpeer.ID, bool) {
	var req EventsRequest
	if !readJSON(w, r, &req) {
		return req, "", false
	}
	p, err := s.eventPeer(r.Context(), req.Peer)
	if err != nil {
		writeError(w, http.StatusBadGateway, err)
		return req, "", false
	}
	return req, p, true
}

func (s *Server) handleEventList(w http.ResponseWriter, r *http.Request) {
	_, p, ok := s.readEventsRequest(w, r)
	if !ok {
		return
	}
	types, err := s.node.EventTypes(r.Context(), p)
	if err != nil {
		writeError(w, http.StatusBadGateway, err)
		return
	}
	writeJSON(w, types)
}

func (s *Server) handleEventPoll(w http.ResponseWriter, r *http.Request) {
	req, p, ok := s.readEventsRequest(w, r)
	if !ok {
		return
	}
	params := events.SubscribeParams{Name: req.Name, MaxEvents: req.MaxEvents}
	if req.Cursor != "" {
		params.Cursor = &req.Cursor
	}
	if len(req.Where) > 0 {
		params.Arguments, _ = json.Marshal(events.Arguments{Where: req.Where})
	}
	var res *events.PollResult
	var err error
	if p == s.node.ID() {
		err = errors.New("poll the daemon's own events with watch, or from a peer")
	} else {
		res, err = feed.Poll(r.Context(), s.node.Host(), p, params)
	}
	if err != nil {
		writeError(w, http.StatusBadGateway, err)
		return
	}
	writeJSON(w, res)
}

func (s *Server) handleEventWatch(w http.ResponseWriter, r *http.Request) {
	req, p, ok := s.readEventsRequest(w, r)
	if !ok {
		return
	}
	if err := events.CheckName(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if _, err := events.ParseFilter(req.Where); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.checkOffered(r.Context(), p, req.Name); err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher, _ := w.(http.Flusher)
	lines := make(chan WatchedEvent, 64)
	send := func(l WatchedEvent) {
		select {
		case lines <- l:
		case <-r.Context().Done():
		}
	}
	sub, err := s.node.Subscribe(p, feed.Options{Name: req.Name, Where: req.Where, Cursor: req.Cursor,
		Deliver: func(_ context.Context, e events.Event) {
			send(WatchedEvent{Event: &e, Source: e.Source, Cursor: e.Cursor})
		},
		OnActive: func(c string, tr bool) { send(WatchedEvent{Active: true, Truncated: tr, Cursor: c}) },
	})
	if err != nil {
		writeError(w, http.StatusBadGateway, err)
		return
	}
	defer sub.Close()
	enc := json.NewEncoder(w)
	lastErr := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case l := <-lines:
			enc.Encode(l)
		case <-tick.C:
			// A subscription that keeps failing says why, once per change.
			if e := sub.Status().LastError; e != "" && e != lastErr && !sub.Status().Connected {
				lastErr = e
				enc.Encode(WatchedEvent{Error: e})
			}
		case <-r.Context().Done():
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// offerCheckTimeout bounds the events/list a watch asks first.
const offerCheckTimeout = 10 * time.Second

// checkOffered refuses to watch an event type p does not offer this node
// (none declared, or its policy grants it not), naming those it does: the
// subscription would retry a refusal forever. A peer that does not answer
// events/list is not refused: the watch waits for it, saying why.
func (s *Server) checkOffered(ctx context.Context, p lpeer.ID, name string) error {
	ctx, cancel := context.WithTimeout(ctx, offerCheckTimeout)
	defer cancel()
	types, err := s.node.EventTypes(ctx, p)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(types))
	for _, t := range types {
		if t.Name == name {
			return nil
		}
		names = append(names, t.Name)
	}
	if p == s.node.ID() {
		return fmt.Errorf("this node has no event type %q; it has: %s", name, strings.Join(names, ", "))
	}
	who := "peer " + p.String()
	if len(names) == 0 {
		return fmt.Errorf("%s offers no event types to this node, so not %q: its policy grants this node no \"events\" (see 'Who may call what' in the README)", who, name)
	}
	return fmt.Errorf("%s offers no event type %q to this node (it has none of that name, or its policy does not grant it); it offers: %s", who, name, strings.Join(names, ", "))
}

func (s *Server) engine(w http.ResponseWriter) *trigger.Engine {
	e := s.triggers.Load()
	if e == nil {
		writeError(w, http.StatusServiceUnavailable, errors.New("this daemon runs no triggers"))
	}
	return e
}

func (s *Server) handleTriggers(w http.ResponseWriter, r *http.Request) {
	if e := s.engine(w); e != nil {
		writeJSON(w, e.List())
	}
}

func (s *Server) handleTriggerAdd(w http.ResponseWriter, r *http.Request) {
	e := s.engine(w)
	if e == nil {
		return
	}
	var rule trigger.Rule
	if !readJSON(w, r, &rule) {
		return
	}
	if err := e.Add(rule); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	for _, st := range e.List() {
		if st.Rule.Name == rule.Name {
			writeJSON(w, st)
			return
		}
	}
	writeError(w, http.StatusInternalServerError, fmt.Errorf("trigger %s started and gone", rule.Name))
}

func (s *Server) handleTriggerRemove(w http.ResponseWriter, r *http.Request) {
	e := s.engine(w)
	if e == nil {
		return
	}
	if err := e.Remove(r.PathValue("name")); err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, struct {
		Name string `json:"name"`
	}{r.PathValue("name")})
}

// EventTypes lists the event types peer lets the daemon subscribe to
// ("" for the daemon's own).
func (c *Client) EventTypes(ctx context.Context, peer string) ([]events.Type, error) {
	var out []events.Type
	err := c.do(ctx, http.MethodPost, "/v1/events/list", EventsRequest{Peer: peer}, &out)
	return out, err
}

// PollEvents asks peer for its events of req.Name after req.Cursor.
func (c *Client) PollEvents(ctx context.Context, req EventsRequest) (*events.PollResult, error) {
	var out events.PollResult
	err := c.do(ctx, http.MethodPost, "/v1/events/poll", req, &out)
	return &out, err
}

// WatchEvents subscribes through the daemon and calls found with each line
// until ctx ends.
func (c *Client) WatchEvents(ctx context.Context, req EventsRequest, found func(WatchedEvent)) error {
	resp, err := c.request(ctx, http.MethodPost, "/v1/events/watch", req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var l WatchedEvent
		if err := dec.Decode(&l); err == io.EOF || ctx.Err() != nil {
			return nil
		} else if err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		found(l)
	}
}

// Triggers lists the daemon's triggers.
func (c *Client) Triggers(ctx context.Context) ([]trigger.Status, error) {
	var out []trigger.Status
	err := c.do(ctx, http.MethodGet, "/v1/triggers", nil, &out)
	return out, err
}

// AddTrigger starts a trigger on the daemon.
func (c *Client) AddTrigger(ctx context.Context, r trigger.Rule) (trigger.Status, error) {
	var out trigger.Status
	err := c.do(ctx, http.MethodPost, "/v1/triggers", r, &out)
	return out, err
}

// RemoveTrigger stops a trigger of the daemon.
func (c *Client) RemoveTrigger(ctx context.Context, name string) error {
	var out struct{}
	return c.do(ctx, http.MethodDelete, "/v1/triggers/"+name, nil, &out)
}
