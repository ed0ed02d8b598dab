package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Source is what a node emits: the event types it declares and the log of
// their events. Its methods are safe for concurrent use.
type Source struct {
	log     *Log
	maxData int

	mu      sync.RWMutex
	types   map[string]Type
	changed func() // told when the types change (the card is republished)
}

// NewSource returns a source that logs to l and refuses events whose data
// is over maxData bytes (0: DefaultMaxData).
func NewSource(l *Log, maxData int) *Source {
	if maxData <= 0 {
		maxData = DefaultMaxData
	}
	return &Source{log: l, maxData: maxData, types: map[string]Type{}}
}

// OnChange makes the source call f when its types change. Call it before
// the source is used.
func (s *Source) OnChange(f func()) { s.changed = f }

// Log returns the source's log.
func (s *Source) Log() *Log { return s.log }

// MaxData returns the bound on an event's data.
func (s *Source) MaxData() int { return s.maxData }

// Declare adds the event type t, or replaces the one of its name. Names
// starting "mcp." or "mesh." are kept for the events every node emits.
func (s *Source) Declare(t Type) error {
	if Reserved(t.Name) {
		return fmt.Errorf("event type %s: names starting \"mcp.\" or \"mesh.\" are kept for the events every node emits", t.Name)
	}
	return s.declare(t)
}

// DeclareBuiltin adds one of the event types every node emits (a node calls
// it for its own).
func (s *Source) DeclareBuiltin(t Type) error { return s.declare(t) }

func (s *Source) declare(t Type) error {
	if err := t.Check(); err != nil {
		return err
	}
	t.Delivery = []string{Push, Poll}
	if len(t.InputSchema) == 0 {
		t.InputSchema = ArgumentsSchema
	}
	t.Meta = &TypeMeta{Replay: true}
	s.mu.Lock()
	s.types[t.Name] = t
	s.mu.Unlock()
	if s.changed != nil {
		s.changed()
	}
	return nil
}

// Undeclare removes the event type called name; its events already logged
// stay there until they age out.
func (s *Source) Undeclare(name string) {
	s.mu.Lock()
	_, ok := s.types[name]
	delete(s.types, name)
	s.mu.Unlock()
	if ok && s.changed != nil {
		s.changed()
	}
}

// Types lists the declared types, by name.
func (s *Source) Types() []Type {
	s.mu.RLock()
	out := make([]Type, 0, len(s.types))
	for _, t := range s.types {
		out = append(out, t)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Type) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Declared reports whether name is a declared type, and returns it.
func (s *Source) Declared(name string) (Type, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.types[name]
	return t, ok
}

// Occurrence is an event as its emitter gives it.
type Occurrence struct {
	Name string
	// ID is the emitter's stable identifier of the event (an upstream's
	// event ID), if it has one: subscribers de-duplicate by it. Empty: the
	// log makes one.
	ID string
	// Data is the payload: anything that encodes as a JSON object, or a
	// json.RawMessage holding one.
	Data any
	// Depth counts the events that led to this one through triggers.
	Depth int
}

// Emit logs an event of a declared type and returns it as stored.
func (s *Source) Emit(o Occurrence) (Event, error) {
	if _, ok := s.Declared(o.Name); !ok {
		return Event{}, fmt.Errorf("emit %s: no such event type is declared on this node", clip(o.Name, 40))
	}
	if o.ID != "" {
		if err := checkID(o.ID); err != nil {
			return Event{}, fmt.Errorf("emit %s: %w", o.Name, err)
		}
	}
	var data json.RawMessage
	switch d := o.Data.(type) {
	case json.RawMessage:
		if err := CheckData(d, s.maxData); err != nil {
			return Event{}, fmt.Errorf("emit %s: %w", o.Name, err)
		}
		data = d
	case nil:
		data = json.RawMessage(`{}`)
	default:
		var err error
		if data, err = json.Marshal(d); err != nil {
			return Event{}, fmt.Errorf("emit %s: encode data: %w", o.Name, err)
		}
		// Valid JSON by construction: only its size and kind are checked.
		if len(data) > s.maxData || data[0] != '{' {
			return Event{}, fmt.Errorf("emit %s: %w", o.Name, CheckData(data, s.maxData))
		}
	}
	e := Event{ID: o.ID, Name: o.Name, Time: time.Now().UTC(), Data: data}
	if o.Depth > 0 {
		e.Meta = &Meta{Depth: o.Depth}
	}
	return s.log.Append(e), nil
}

// CheckData reports whether data is a JSON object of at most max bytes.
func CheckData(data json.RawMessage, max int) error {
	if len(data) > max {
		return fmt.Errorf("data of %d bytes, over the %d-byte limit (keep payloads minimal: fetch the rest with a tool)", len(data), max)
	}
	d := bytes.TrimSpace(data)
	if len(d) == 0 || d[0] != '{' || !json.Valid(d) {
		return fmt.Errorf("data must be a JSON object")
	}
	return nil
}

// Seen remembers the IDs of the last events handled, to drop one that
// comes again (delivery is at least once). It holds at most its size; the
// oldest go first. Not safe for concurrent use.
type Seen struct {
	max  int
	ring []string
	next int
	set  map[string]struct{}
}

// NewSeen returns a set that remembers up to max IDs. It grows as IDs come
// (a subscription that sees few events costs little).
func NewSeen(max int) *Seen {
	return &Seen{max: max, set: map[string]struct{}{}}
}

// Add remembers id and reports whether it is new.
func (s *Seen) Add(id string) bool {
	if _, ok := s.set[id]; ok {
		return false
	}
	if len(s.ring) < s.max {
		s.ring = append(s.ring, id)
	} else {
		delete(s.set, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % s.max
	}
	s.set[id] = struct{}{}
	return true
}

// Has reports whether id is remembered.
func (s *Seen) Has(id string) bool {
	_, ok := s.set[id]
	return ok
}

// IDs returns the remembered IDs, oldest first, to be kept across a
// restart (AddAll takes them back).
func (s *Seen) IDs() []string {
	if len(s.ring) < s.max {
		return slices.Clone(s.ring)
	}
	return append(slices.Clone(s.ring[s.next:]), s.ring[:s.next]...)
}

// AddAll remembers ids, oldest first.
func (s *Seen) AddAll(ids []string) {
	for _, id := range ids {
		s.Add(id)
	}
}
