package trigger

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/mcpmesh/mcpmesh/events"
)

// maxSeen is how many fired events a trigger remembers, to fire none twice
// (events come at least once: again after a reconnection, say).
const maxSeen = 4096

// state is what a trigger keeps across restarts: where each source's
// subscription is (its cursor), and the events it fired. It is written to
// its file before each firing (so a restart fires no event twice) and
// when the trigger closes.
type state struct {
	path string // "" in memory only

	mu      sync.Mutex
	cursors map[string]string // source peer ID → cursor
	seen    *events.Seen      // source/eventId of the events fired
	dirty   bool
}

type stateFile struct {
	Event   string            `json:"event"`
	Cursors map[string]string `json:"cursors"`
	Seen    []string          `json:"seen"`
}

// loadState reads the state of the trigger of event name from dir ("":
// none). A state of another event (the rule was changed) is not used.
func loadState(dir, name, event string) (*state, error) {
	s := &state{cursors: map[string]string{}, seen: events.NewSeen(maxSeen)}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("trigger state: %w", err)
	}
	s.path = filepath.Join(dir, name+".json")
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trigger state: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		log.Warnf("trigger %s: state %s does not parse (%v); starting from now", name, s.path, err)
		return s, nil
	}
	if f.Event != event {
		return s, nil
	}
	for p, c := range f.Cursors {
		if len(c) <= 128 {
			s.cursors[p] = c
		}
	}
	if len(f.Seen) > maxSeen {
		f.Seen = f.Seen[len(f.Seen)-maxSeen:]
	}
	s.seen.AddAll(f.Seen)
	return s, nil
}

func seenKey(source, id string) string { return source + "/" + id }

// cursor returns where the subscription to source resumes.
func (s *state) cursor(source string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursors[source]
}

// advance records that source's subscription reached cursor.
func (s *state) advance(source, cursor string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cursors[source] != cursor {
		s.cursors[source], s.dirty = cursor, true
	}
}

// fire records that e is fired, and writes the state: false if it was
// fired before.
func (s *state) fire(e *events.Event, event string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.seen.Add(seenKey(e.Source, e.ID)) {
		return false, nil
	}
	s.cursors[e.Source] = e.Cursor
	s.dirty = true
	return true, s.writeLocked(event)
}

// fired reports whether e was fired before.
func (s *state) fired(e *events.Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen.Has(seenKey(e.Source, e.ID))
}

// flush writes the state if it changed.
func (s *state) flush(event string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty {
		return nil
	}
	return s.writeLocked(event)
}

func (s *state) writeLocked(event string) error {
	if s.path == "" {
		s.dirty = false
		return nil
	}
	data, err := json.Marshal(stateFile{Event: event, Cursors: s.cursors, Seen: s.seen.IDs()})
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("trigger state: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("trigger state: %w", err)
	}
	s.dirty = false
	return nil
}
