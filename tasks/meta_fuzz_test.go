package tasks

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// metaCorpus holds task contexts as nodes send them: a root's, a child's
// three hops down, a detached one, one without a deadline.
func metaCorpus() []string {
	root := &Meta{ID: "0123456789abcdef0123456789abcdef", Root: "fedcba9876543210fedcba9876543210", Parent: "fedcba9876543210fedcba9876543210",
		Path: []string{"12D3KooWA"}, Budget: 8, TimeoutMs: 30000}
	child := root.Child("12D3KooWB", 0, 30*time.Second).Child("12D3KooWC", 3, 20*time.Second)
	detached := *root
	detached.Detach, detached.Parent, detached.TimeoutMs = true, "", 0
	return []string{
		root.String(), child.String(), detached.String(),
		"0123456789abcdef 0123456789abcdef - 1 0 0 A",
		"0123456789abcdef 0123456789abcdef - 0 -1 0 A,B",
		"0123456789abcdef 0123456789abcdef - +8 09 1 A,,B",
	}
}

// FuzzParse reads arbitrary strings as the task context of a call (what a
// caller puts in _meta["io.mcpmesh/task"]). It checks that Parse, Decode,
// Check, Child and Encode never panic, that a parsed context round-trips
// (Parse(m.String()) == m), that Decode agrees with Parse, and that the
// context a hop derives keeps the guards' invariants: the path grows by the
// hop, the budget and the time left only shrink.
func FuzzParse(f *testing.F) {
	for _, s := range metaCorpus() {
		f.Add(s, "12D3KooWB")
	}
	f.Fuzz(func(t *testing.T, s, self string) {
		m, err := Parse(s)
		d, derr := Decode(map[string]any{MetaKey: s})
		if (err == nil) != (derr == nil) || (err == nil && !reflect.DeepEqual(m, d)) {
			t.Fatalf("Parse and Decode disagree on %q: %v / %v", s, err, derr)
		}
		if err != nil {
			return
		}
		back, err := Parse(m.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, whose String %q does not parse: %v", s, m, m.String(), err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip of %q: %+v, then %+v", s, m, back)
		}
		if text := string(m.AppendText([]byte("x"))); text != "x"+m.String() {
			t.Fatalf("%q: AppendText %q, String %q", s, text, m.String())
		}
		if m.TimeoutMs > 0 && m.Timeout() <= 0 {
			t.Fatalf("%q: %d ms left is a timeout of %v", s, m.TimeoutMs, m.Timeout())
		}

		caller := m.Path[len(m.Path)-1]
		if err := Check(m, self, "not "+caller); err == nil {
			t.Fatalf("%q: a call from another peer than the path's last passed the guard", s)
		}
		if err := Check(m, self, caller); err != nil {
			return
		}
		if m.Budget < 1 {
			t.Fatalf("%q: budget %d passed the guard", s, m.Budget)
		}
		meta := map[string]any{}
		m.Encode(meta)
		if meta[MetaKey] != m.String() {
			t.Fatalf("Encode put %v, want %q", meta[MetaKey], m.String())
		}
		if tp, ok := meta[TraceparentKey].(string); ok && len(tp) != 55 {
			t.Fatalf("traceparent %q", tp)
		}

		if strings.ContainsAny(self, " ,") || self == "" {
			return // not a peer ID: a node's own ID never holds these
		}
		c := m.Child(self, 0, m.Timeout())
		if len(c.Path) != len(m.Path)+1 || c.Path[len(m.Path)] != self || c.Budget != m.Budget-1 || c.Parent != m.ID || c.Root != m.Root {
			t.Fatalf("child of %+v: %+v", m, c)
		}
		if m.TimeoutMs > 0 && (c.TimeoutMs < 1 || c.TimeoutMs > m.TimeoutMs) {
			t.Fatalf("child of a task with %d ms left has %d ms", m.TimeoutMs, c.TimeoutMs)
		}
		cs, err := Parse(c.String())
		if err != nil && len(c.Path) <= 64 {
			t.Fatalf("child context %q does not parse: %v", c.String(), err)
		}
		if err == nil && Check(cs, "the next hop", self) != nil && cs.Budget >= 1 {
			t.Fatalf("child context %q refused by the next hop: %v", c.String(), Check(cs, "the next hop", self))
		}
	})
}

// FuzzDecodeMeta decodes arbitrary JSON as a _meta object the way the SDK
// hands it to a node (generic maps), then reads the task context, the
// result's task record and the ask marker from it. It checks that nothing
// panics and that what is read is consistent.
func FuzzDecodeMeta(f *testing.F) {
	for _, s := range metaCorpus() {
		b, _ := json.Marshal(map[string]any{MetaKey: s, TraceparentKey: "00-x-y-01"})
		f.Add(b)
	}
	for _, s := range []string{
		`{"io.mcpmesh/task":{"task":"0123456789abcdef0123456789abcdef","state":"failed","failedAt":{"task":"t","peer":"12D3KooWC","server":"node","tool":"x"}}}`,
		`{"io.mcpmesh/task":{"task":"t","state":"completed"}}`,
		`{"io.mcpmesh/task":{"failedAt":{"peer":5}}}`,
		`{"io.mcpmesh/ask":{"task":"0123456789abcdef0123456789abcdef"}}`,
		`{"io.mcpmesh/ask":"x","io.mcpmesh/task":null}`,
		`{"io.mcpmesh/task":7}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var meta map[string]any
		if err := json.Unmarshal(data, &meta); err != nil {
			return
		}
		m, err := Decode(meta)
		if err == nil && m != nil {
			if _, ok := meta[MetaKey].(string); !ok {
				t.Fatalf("a task context decoded from %T", meta[MetaKey])
			}
		}
		if rm, ok := DecodeResult(meta); ok {
			if rm.Task == "" {
				t.Fatal("a result record without a task")
			}
			if rm.FailedAt != nil && rm.FailedAt.Peer == "" {
				t.Fatal("a failure record without a peer")
			}
		}
		AskedBy(meta)
		AskMeta(WithAsk(t.Context(), "p"), meta)
	})
}
