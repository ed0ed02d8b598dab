// Package audit keeps the audit trail of a node: one structured record per
// call it serves (or refuses), written as JSON Lines to a file that rotates
// at a size limit, with the most recent records kept in memory for
// `mcpmesh audit`.
//
// A record holds who called (the connection's peer ID), for whom (the
// principal of a verified delegation), what (server, method and name), how it
// ended and how long it took. It never holds argument values or results:
// the trail can be shipped and read without leaking what the calls carried.
package audit

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Outcome is how a served call ended.
type Outcome string

// The outcomes of a call.
const (
	OK        Outcome = "ok"        // the call returned a result (a tool result marked isError included)
	Error     Outcome = "error"     // the call failed with a protocol or server error
	Refused   Outcome = "refused"   // the node refused the call before serving it; Reason says why
	Cancelled Outcome = "cancelled" // the caller or a task cancellation ended the call
)

// ParseOutcome checks that s names an outcome; "" is the empty outcome
// (any, in a Filter).
func ParseOutcome(s string) (Outcome, error) {
	switch o := Outcome(s); o {
	case "", OK, Error, Refused, Cancelled:
		return o, nil
	}
	return "", fmt.Errorf("%q: want ok, error, refused or cancelled", s)
}

// maxReason bounds Record.Reason when it is added: it is a reason key or the
// first part of an error text, not a place for payloads.
const maxReason = 200

// Record is one served call (or refused attempt). It holds names only: no
// argument values, no results.
type Record struct {
	Time     time.Time     `json:"time"`
	Caller   string        `json:"caller"`          // peer ID of the connection
	For      string        `json:"for,omitempty"`   // principal the caller acted for (verified delegation), "" if its own call
	Chain    string        `json:"chain,omitempty"` // the delegation chain, "A → B → C", if any
	Server   string        `json:"server"`
	Method   string        `json:"method"` // "tools/call", "resources/read", "prompts/get", ...
	Name     string        `json:"name"`   // tool name, resource URI, prompt name
	Task     string        `json:"task,omitempty"`
	Outcome  Outcome       `json:"outcome"`
	Reason   string        `json:"reason,omitempty"` // refusal reason key ("policy", "rate", "banned", ...) or short error text
	Duration time.Duration `json:"-"`                // marshalled as "durationMs", a float
}

// recordJSON is Record on the wire: Duration as fractional milliseconds.
type recordJSON struct {
	record
	DurationMs float64 `json:"durationMs"`
}

// record has Record's fields without its methods (no recursion in MarshalJSON).
type record Record

// MarshalJSON encodes r with its duration as "durationMs", in fractional
// milliseconds.
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(recordJSON{record: record(r), DurationMs: float64(r.Duration) / float64(time.Millisecond)})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (r *Record) UnmarshalJSON(data []byte) error {
	var v recordJSON
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*r = Record(v.record)
	r.Duration = time.Duration(math.Round(v.DurationMs * float64(time.Millisecond)))
	return nil
}

// Target is the record's server and name as "server/name", the way the CLI
// names a tool.
func (r *Record) Target() string {
	if r.Server == "" {
		return r.Name
	}
	return r.Server + "/" + r.Name
}

// String is the record on one line, for logs.
func (r Record) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s by %s", r.Time.Format(time.RFC3339Nano), r.Outcome, r.Method, r.Target(), r.Caller)
	if r.For != "" {
		fmt.Fprintf(&b, " for %s", r.For)
	}
	if r.Reason != "" {
		fmt.Fprintf(&b, " (%s)", r.Reason)
	}
	fmt.Fprintf(&b, " in %s", r.Duration)
	return b.String()
}

// Filter selects records. Zero fields select everything.
type Filter struct {
	Since   time.Time // records at or after this time
	Peer    string    // records whose Caller or For is this peer ID
	Tool    string    // records whose Name is this, or whose "server/name" is this
	Outcome Outcome   // records that ended this way
	Limit   int       // at most this many, the newest; 0 for no limit
}

// Match reports whether r passes every condition of f but Limit.
func (f *Filter) Match(r *Record) bool {
	if !f.Since.IsZero() && r.Time.Before(f.Since) {
		return false
	}
	if f.Peer != "" && r.Caller != f.Peer && r.For != f.Peer {
		return false
	}
	if f.Tool != "" && r.Name != f.Tool && r.Target() != f.Tool {
		return false
	}
	if f.Outcome != "" && r.Outcome != f.Outcome {
		return false
	}
	return true
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
