package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/mcpmesh/mcpmesh/internal/pattern"
)

// Filter is a condition on an event's data, as subscriptions and triggers
// write it: {"uri": "file:///reports/*", "state": ["failed", "cancelled"],
// "task.budget": 8}. Each key is a dotted path into the data (array items
// by index); each value is what the field must be: a string matches
// strings, "*" standing for any run of characters; a number, true, false
// or null must be equal; a list means any of its items. An event matches
// when every key does; a field that is missing matches nothing. The empty
// filter matches every event.
//
// A filter is simple on purpose, as the sketch's arguments are ("no rich
// query language"), and cheap for a source to run for a subscriber it
// does not trust: bounded in keys, alternatives, depth and pattern
// length, and matched in time linear in the data.
type Filter struct {
	conds []cond
	src   map[string]json.RawMessage
}

type cond struct {
	path []string
	alts []alt
}

// alt is one value a field may have: a pattern for strings, or the JSON
// text of a number, boolean or null.
type alt struct {
	str    *pattern.Pattern
	number float64
	kind   byte // 's' string, 'n' number, 't' true, 'f' false, '0' null
}

// Bounds of a filter.
const (
	maxConds = 16
	maxAlts  = 16
	maxDepth = 8
	maxValue = 256
)

// ParseFilter reads a filter from its JSON form (an object; empty or null
// for none). Errors say which key is at fault.
func ParseFilter(raw json.RawMessage) (*Filter, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return &Filter{}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("filter: want an object of field paths to values: %v", err)
	}
	if len(m) > maxConds {
		return nil, fmt.Errorf("filter: %d fields, at most %d", len(m), maxConds)
	}
	f := &Filter{src: m}
	for key, v := range m {
		path := strings.Split(key, ".")
		if key == "" || len(path) > maxDepth || len(key) > maxValue {
			return nil, fmt.Errorf("filter: field %q: want a dotted path of at most %d parts", clip(key, 40), maxDepth)
		}
		for _, p := range path {
			if p == "" {
				return nil, fmt.Errorf("filter: field %q: empty part in the path", clip(key, 40))
			}
		}
		alts, err := parseAlts(v)
		if err != nil {
			return nil, fmt.Errorf("filter: field %q: %w", clip(key, 40), err)
		}
		f.conds = append(f.conds, cond{path: path, alts: alts})
	}
	return f, nil
}

func parseAlts(v json.RawMessage) ([]alt, error) {
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return nil, err
		}
		if len(items) == 0 || len(items) > maxAlts {
			return nil, fmt.Errorf("a list of 1 to %d values", maxAlts)
		}
		alts := make([]alt, 0, len(items))
		for _, it := range items {
			a, err := parseAlt(bytes.TrimSpace(it))
			if err != nil {
				return nil, err
			}
			alts = append(alts, a)
		}
		return alts, nil
	}
	a, err := parseAlt(v)
	if err != nil {
		return nil, err
	}
	return []alt{a}, nil
}

func parseAlt(v json.RawMessage) (alt, error) {
	switch {
	case len(v) == 0:
		return alt{}, fmt.Errorf("no value")
	case v[0] == '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return alt{}, err
		}
		if len(s) > maxValue {
			return alt{}, fmt.Errorf("a string of at most %d bytes", maxValue)
		}
		p := pattern.Compile(s)
		return alt{kind: 's', str: &p}, nil
	case string(v) == "true":
		return alt{kind: 't'}, nil
	case string(v) == "false":
		return alt{kind: 'f'}, nil
	case string(v) == "null":
		return alt{kind: '0'}, nil
	}
	n, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return alt{}, fmt.Errorf("want a string, a number, true, false, null or a list of them, not %s", clip(string(v), 40))
	}
	return alt{kind: 'n', number: n}, nil
}

// Empty reports whether f matches every event.
func (f *Filter) Empty() bool { return f == nil || len(f.conds) == 0 }

// MarshalJSON returns the filter as it was written.
func (f *Filter) MarshalJSON() ([]byte, error) {
	if f == nil || f.src == nil {
		return []byte("null"), nil
	}
	return json.Marshal(f.src)
}

// Match reports whether data (an event's payload) passes f. Data that is
// not a JSON object passes only the empty filter.
func (f *Filter) Match(data json.RawMessage) bool {
	if f.Empty() {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return false
	}
	return f.MatchValue(doc)
}

// MatchValue is Match on data already decoded (with UseNumber or not).
func (f *Filter) MatchValue(doc any) bool {
	for i := range f.conds {
		c := &f.conds[i]
		v, ok := lookup(doc, c.path)
		if !ok || !c.matches(v) {
			return false
		}
	}
	return true
}

func lookup(v any, path []string) (any, bool) {
	for _, key := range path {
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[key]
			if !ok {
				return nil, false
			}
			v = next
		case []any:
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func (c *cond) matches(v any) bool {
	for _, a := range c.alts {
		switch x := v.(type) {
		case string:
			if a.kind == 's' && a.str.Match(x) {
				return true
			}
		case json.Number:
			if n, err := x.Float64(); err == nil && a.kind == 'n' && n == a.number {
				return true
			}
		case float64:
			if a.kind == 'n' && x == a.number {
				return true
			}
		case bool:
			if (a.kind == 't' && x) || (a.kind == 'f' && !x) {
				return true
			}
		case nil:
			if a.kind == '0' {
				return true
			}
		}
	}
	return false
}
