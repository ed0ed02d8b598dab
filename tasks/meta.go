// Package tasks tracks tool calls that cross several mcpmesh nodes as one
// tree of tasks.
//
// Every tools/call a node serves is a task in the node's [Registry]. The
// caller's side of the tree travels with the call in its _meta, under
// [MetaKey] (see [Meta]), next to a W3C traceparent ([TraceparentKey]): the
// root task, the calling task, the path of peers the call has crossed, the
// hops it may still make and the time it has left. [Check] is the guard a
// serving node applies to it; [Meta.Child] derives what a task passes on to
// the calls it makes in turn.
package tasks

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MetaKey is the _meta key under which a call carries its task context.
const MetaKey = "io.mcpmesh/task"

// AskKey is the _meta key of an elicitation or sampling request raised by a
// nested task: it names the task of the node the request goes to (the one
// whose call the asking task serves), so that node can pass the question on
// to its own caller.
const AskKey = "io.mcpmesh/ask"

// TraceparentKey is the _meta key of the W3C trace context of a call: the
// trace ID is the root task's ID, the span ID names the task the call starts.
const TraceparentKey = "traceparent"

// DefaultBudget is how many hops a tree of calls may make below its root
// unless the root asks for fewer.
const DefaultBudget = 8

// ExtensionID names the MCP Tasks extension (SEP-2663).
const ExtensionID = "io.modelcontextprotocol/tasks"

// Meta is the task context of one call, as it travels in _meta[MetaKey]
// (see Encode for the wire form).
type Meta struct {
	// ID is the ID the caller gives the task that the call starts on the
	// serving node, so that the caller knows its children without waiting for
	// an answer. The serving node refuses an ID it already holds.
	ID string `json:"id"`
	// Root is the ID of the tree's root task.
	Root string `json:"root"`
	// Parent is the ID of the calling task on the calling node ("" for a call
	// made outside any task).
	Parent string `json:"parent,omitempty"`
	// Path lists the peers the call has come through, the root's node first
	// and the calling node last.
	Path []string `json:"path"`
	// Budget is how many hops the tree may still make, this one included.
	Budget int `json:"budget"`
	// TimeoutMs is the time the task has, in milliseconds from when the call
	// arrives (0: no deadline). A duration, not a date, so that clocks need
	// not agree across nodes.
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
	// Detach asks the serving node to run the call as an MCP task the caller
	// polls (it must also declare the Tasks extension).
	Detach bool `json:"detach,omitempty"`
}

// NewID returns a fresh random task ID: 32 hex digits, unguessable.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("tasks: read random ID: %v", err)) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// Root returns the context of a call made outside any task: a new tree of
// its own whose root is the calling task id, made by the peer self.
// timeout 0 means no deadline; budget 0 means DefaultBudget.
func Root(id, self string, budget int, timeout time.Duration) *Meta {
	if budget <= 0 || budget > DefaultBudget {
		budget = DefaultBudget
	}
	return &Meta{ID: NewID(), Root: id, Parent: id, Path: []string{self}, Budget: budget, TimeoutMs: ms(timeout)}
}

// Child returns the context that the task m describes (served by the peer
// self under the ID m.ID) passes on to a call it makes: the path grows by
// self, the budget shrinks by one (and to budget, if lower and above 0),
// and the time left shrinks by a margin so that the hop below gives up
// first and its failure, naming it, reaches the caller before the caller's
// own deadline. left is the time the calling task has left (0: none).
func (m *Meta) Child(self string, budget int, left time.Duration) *Meta {
	c := &Meta{
		ID:     NewID(),
		Root:   m.Root,
		Parent: m.ID,
		Path:   append(append(make([]string, 0, len(m.Path)+1), m.Path...), self),
		Budget: m.Budget - 1,
	}
	if budget > 0 && budget < c.Budget {
		c.Budget = budget
	}
	if left > 0 {
		c.TimeoutMs = max(ms(left-Margin(left)), 1)
	}
	return c
}

// Spend shortens the time that the task context in meta (if any, and if it
// has a deadline) gives the callee by d, the time its caller spent between
// reckoning it and sending the call: opening a session to the callee above
// all, which can take seconds. The callee counts its time from when the call
// arrives, so without this the time spent before the send would count twice
// and the callee would give up after its caller, not before. Under a
// millisecond it does nothing (the wire counts whole milliseconds).
func Spend(meta map[string]any, d time.Duration) {
	if d < time.Millisecond {
		return
	}
	m, err := Decode(meta)
	if err != nil || m == nil || m.TimeoutMs == 0 {
		return
	}
	c := *m
	c.TimeoutMs = max(c.TimeoutMs-d.Milliseconds(), 1)
	meta[MetaKey] = c.String()
}

// Margin is how much earlier than its caller a hop with left time to go
// gives up: a tenth of the time left, at least 5 ms and at most one second.
func Margin(left time.Duration) time.Duration {
	return min(max(left/10, 5*time.Millisecond), time.Second)
}

func ms(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return max(d.Milliseconds(), 1)
}

// Timeout returns the time the task has, 0 for no deadline. A time left too
// long for a Duration (over 292 years) is the longest Duration, not a
// product that overflows to a negative or short one.
func (m *Meta) Timeout() time.Duration {
	if m.TimeoutMs > math.MaxInt64/int64(time.Millisecond) {
		return math.MaxInt64
	}
	return time.Duration(m.TimeoutMs) * time.Millisecond
}

// Traceparent returns the W3C traceparent of the call that starts task m:
// version 00, the root's ID as trace ID, the first 16 hex digits of m.ID as
// span ID, sampled.
func (m *Meta) Traceparent() string {
	return "00-" + m.Root + "-" + m.ID[:16] + "-01"
}

// Encode puts m and its traceparent into meta (which must not be nil).
//
// The task context travels as one string, not an object: every hop's SDK
// decodes _meta into generic maps, and a string costs it a fraction of what
// an object with a list inside does. Its fields, separated by spaces:
//
//	ID ROOT PARENT BUDGET TIMEOUT-MS DETACH PATH
//
// with PARENT "-" when empty, DETACH 0 or 1, and PATH the peer IDs joined by
// commas.
func (m *Meta) Encode(meta map[string]any) {
	meta[MetaKey] = m.String()
	if validHex(m.Root, 32) && validHex(m.ID, 32) {
		meta[TraceparentKey] = m.Traceparent()
	}
}

// AppendText appends the wire form of m (String) to b.
func (m *Meta) AppendText(b []byte) []byte {
	parent := m.Parent
	if parent == "" {
		parent = "-"
	}
	b = append(append(append(append(b, m.ID...), ' '), m.Root...), ' ')
	b = append(append(b, parent...), ' ')
	b = append(strconv.AppendInt(b, int64(m.Budget), 10), ' ')
	b = append(strconv.AppendInt(b, m.TimeoutMs, 10), ' ')
	if m.Detach {
		b = append(b, '1', ' ')
	} else {
		b = append(b, '0', ' ')
	}
	for i, p := range m.Path {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, p...)
	}
	return b
}

// String returns the wire form of m (see Encode).
func (m *Meta) String() string {
	parent := m.Parent
	if parent == "" {
		parent = "-"
	}
	detach := "0"
	if m.Detach {
		detach = "1"
	}
	return m.ID + " " + m.Root + " " + parent + " " + strconv.Itoa(m.Budget) + " " +
		strconv.FormatInt(m.TimeoutMs, 10) + " " + detach + " " + strings.Join(m.Path, ",")
}

// Decode reads the task context of a call from its _meta (see Encode). It
// returns nil and no error when meta carries none.
func Decode(meta map[string]any) (*Meta, error) {
	v, ok := meta[MetaKey]
	if !ok || v == nil {
		return nil, nil
	}
	switch v := v.(type) {
	case *Meta:
		return v, nil
	case string:
		return Parse(v)
	default:
		return nil, fmt.Errorf("_meta %q: want a string, got %T", MetaKey, v)
	}
}

// Parse reads the wire form of a task context (see Encode).
func Parse(s string) (*Meta, error) {
	var f [7]string // split by hand: every served call parses one
	n := 0
	for rest := s; ; n++ {
		field, more, ok := strings.Cut(rest, " ")
		if n < len(f) {
			f[n] = field
		}
		if !ok {
			n++
			break
		}
		rest = more
	}
	if n != len(f) {
		return nil, parseError("value", "7 fields separated by spaces")
	}
	m := &Meta{ID: f[0], Root: f[1], Parent: f[2]}
	const idWant = "a task ID of 16 to 64 letters, digits, '-' or '_'"
	if !validID(m.ID) {
		return nil, parseError("ID", idWant)
	}
	if !validID(m.Root) {
		return nil, parseError("ROOT", idWant)
	}
	if m.Parent == "-" {
		m.Parent = ""
	} else if !validID(m.Parent) {
		return nil, parseError("PARENT", idWant+", or -")
	}
	var err error
	if m.Budget, err = strconv.Atoi(f[3]); err != nil {
		return nil, parseError("BUDGET", "an integer")
	}
	if m.TimeoutMs, err = strconv.ParseInt(f[4], 10, 64); err != nil || m.TimeoutMs < 0 {
		return nil, parseError("TIMEOUT-MS", "a whole number of milliseconds, 0 for none")
	}
	switch f[5] {
	case "0":
	case "1":
		m.Detach = true
	default:
		return nil, parseError("DETACH", "0 or 1")
	}
	m.Path = strings.Split(f[6], ",")
	if len(m.Path) > 64 || slices.Contains(m.Path, "") {
		return nil, parseError("PATH", "1 to 64 peer IDs separated by commas")
	}
	return m, nil
}

func parseError(field, want string) error {
	return fmt.Errorf("_meta %q: %s: want %s (the value is \"ID ROOT PARENT BUDGET TIMEOUT-MS DETACH PATH\")", MetaKey, field, want)
}

func validID(s string) bool {
	if len(s) < 16 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

func validHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// Errors of Check, matched with errors.Is.
var (
	// ErrLoop: the call came back to a node already on its path.
	ErrLoop = errors.New("call loop")
	// ErrBudget: the tree has made as many hops as it may.
	ErrBudget = errors.New("hop budget exhausted")
	// ErrExpired: the call arrived with no time left.
	ErrExpired = errors.New("task deadline passed")
	// ErrCaller: the path does not end with the peer that made the call.
	ErrCaller = errors.New("task path does not match the caller")
)

// Check is the guard a node (self) applies to a call it is asked to serve
// by the authenticated peer caller:
//
//   - the path must end with caller (a caller cannot speak for another);
//   - self must not be on the path, except as the caller of its own
//     server (a node calling its own tools, also from a tool of its own
//     that a call of its own started: A→A→A), so a loop such as A→B→A is
//     refused;
//   - the hop budget must not be exhausted;
//   - the deadline, if any, must not have passed.
//
// The budget is the caller's claim, and a claim can only lower what the
// node allows: its own default less the hops the path says were made
// before (MaxBudget). Check lowers a budget above that to it, so that no
// caller widens a tree by what it writes; an honest chain never needs it,
// as each hop passes on one hop less.
func Check(m *Meta, self, caller string) error {
	m.Budget = min(m.Budget, MaxBudget(m.Path))
	if len(m.Path) == 0 || m.Path[len(m.Path)-1] != caller {
		return fmt.Errorf("%w: the call came from %s but its path is %s", ErrCaller, short(caller), PathString(m.Path))
	}
	earlier := m.Path
	for len(earlier) > 0 && earlier[len(earlier)-1] == self {
		earlier = earlier[:len(earlier)-1] // a node may call its own server
	}
	for _, p := range earlier {
		if p == self {
			return fmt.Errorf("%w: %s would come back to %s (refused there)", ErrLoop, PathString(append(m.Path, self)), short(self))
		}
	}
	if m.Budget < 1 {
		return fmt.Errorf("%w: path %s already made its %d hops", ErrBudget, PathString(m.Path), len(m.Path))
	}
	if m.TimeoutMs < 0 {
		return fmt.Errorf("%w before reaching %s (path %s)", ErrExpired, short(self), PathString(m.Path))
	}
	return nil
}

// MaxBudget is the most hops a call that came through path may still make:
// DefaultBudget less the hops before the caller's (the root's call, whose
// path is the root's node alone, may make them all).
func MaxBudget(path []string) int { return max(DefaultBudget+1-len(path), 0) }

// PathString shows a path of peer IDs as "A→B→C", each ID shortened to its
// last 8 characters (enough to tell peers apart in a message).
func PathString(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = short(p)
	}
	return strings.Join(parts, "→")
}

func short(p string) string {
	if len(p) > 12 {
		return "…" + p[len(p)-8:]
	}
	return p
}
