// Package trigger runs the rules that make a node act when an event
// happens on a peer: "when EVENT comes from these peers (or any provider)
// and its data match WHERE, call this tool, or this agent, with arguments
// filled from the event". Each firing is a root task whose cause is the
// event, audited, rate-limited, bounded in concurrency, de-duplicated by
// event ID (across restarts, with a state folder), and refused past a
// depth of triggers firing triggers.
package trigger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/events"
)

// Rule is one trigger, as the configuration file's "triggers" and
// `mcpmesh on` write it.
type Rule struct {
	// Name names the rule (letters, digits, '-', '_', '.'; at most 64).
	Name string `json:"name"`
	// Event is the event type to act on.
	Event string `json:"event"`
	// From lists where the events come from: peer IDs, "self" (this node),
	// or "*" for any provider the mesh knows of (found as event:NAME and
	// looked up again every minute). Default ["*"].
	From []string `json:"from,omitempty"`
	// Where is a filter on the event's data (see events.Filter), applied
	// by the source and checked again here.
	Where json.RawMessage `json:"where,omitempty"`
	// Call is the tool to call: PEER/SERVER/TOOL, PEER/TOOL (server
	// "node"), self/... for this node, or any/TOOL for any provider.
	Call string `json:"call,omitempty"`
	// Agent is an agent of this node to run instead (self/node/AGENT),
	// with Task as its task.
	Agent string `json:"agent,omitempty"`
	// Task is the agent's task, a template (default: the event's name,
	// source and data).
	Task string `json:"task,omitempty"`
	// Arguments are the tool's arguments (with Agent: extra fields of its
	// input), templates: {{event.data.PATH}}, {{event.id}},
	// {{event.name}}, {{event.source}}, {{event.time}}, {{event}}. A
	// string that is one placeholder takes the field's own type.
	Arguments map[string]any `json:"arguments,omitempty"`
	// Rate and Burst bound the firings (defaults 1 per second, burst 5);
	// MaxConcurrent the firings running at once (default 4). Past them,
	// the trigger stops reading its subscriptions until it may fire again:
	// events wait in the source's log (the source reports a gap if they
	// fall out of it).
	Rate          float64 `json:"rate,omitempty"`
	Burst         int     `json:"burst,omitempty"`
	MaxConcurrent int     `json:"maxConcurrent,omitempty"`
	// Timeout bounds one firing (default 5m).
	Timeout string `json:"timeout,omitempty"`
	// MaxAge, if set, skips events older than that when a subscription
	// resumes (after a restart, say).
	MaxAge string `json:"maxAge,omitempty"`
}

// Bounds and defaults of a rule.
const (
	DefaultRate          = 1.0
	DefaultBurst         = 5
	DefaultMaxConcurrent = 4
	DefaultTimeout       = 5 * time.Minute
	maxRate              = 1000
	maxConcurrent        = 64
	maxFrom              = 32
	maxNameLen           = 64
	// MaxDepth is the depth of triggers firing triggers past which an event
	// fires nothing: an event about a task a trigger started is one deeper
	// than the event that fired it.
	MaxDepth = 4
)

// AnyProvider in From stands for every provider of the event the mesh knows;
// Self for this node.
const (
	AnyProvider = "*"
	Self        = "self"
)

// target is what a rule calls.
type target struct {
	peer   string // a peer ID, Self or "any"
	server string
	tool   string
}

func (t target) String() string {
	if t.peer == "any" {
		return "any/" + t.tool
	}
	return t.peer + "/" + t.server + "/" + t.tool
}

// compiled is a rule checked and with its defaults filled in.
type compiled struct {
	Rule
	filter  *events.Filter
	target  target
	args    any // Arguments decoded (for templates)
	timeout time.Duration
	maxAge  time.Duration
	from    []string // peer IDs, Self, AnyProvider
}

// Check reports whether r is a valid rule, and fills in its defaults.
func (r *Rule) Check() error {
	_, err := compile(*r)
	if err == nil {
		r.defaults()
	}
	return err
}

func (r *Rule) defaults() {
	if len(r.From) == 0 {
		r.From = []string{AnyProvider}
	}
	if r.Rate == 0 {
		r.Rate = DefaultRate
	}
	if r.Burst == 0 {
		r.Burst = DefaultBurst
	}
	if r.MaxConcurrent == 0 {
		r.MaxConcurrent = DefaultMaxConcurrent
	}
}

func compile(r Rule) (*compiled, error) {
	r.defaults()
	c := &compiled{Rule: r, timeout: DefaultTimeout}
	if err := checkName(r.Name); err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) (*compiled, error) {
		return nil, fmt.Errorf("trigger %s: "+format, append([]any{r.Name}, args...)...)
	}
	if err := events.CheckName(r.Event); err != nil {
		return fail("%v", err)
	}
	if len(r.From) > maxFrom {
		return fail("from: at most %d sources", maxFrom)
	}
	for _, f := range r.From {
		switch f {
		case AnyProvider, Self:
		default:
			if _, err := lpeer.Decode(f); err != nil {
				return fail("from %q: want a peer ID, %q or %q", f, Self, AnyProvider)
			}
		}
		c.from = append(c.from, f)
	}
	var err error
	if c.filter, err = events.ParseFilter(r.Where); err != nil {
		return fail("where: %v", err)
	}
	switch {
	case (r.Call == "") == (r.Agent == ""):
		return fail("give exactly one of call (a tool) and agent")
	case r.Agent != "":
		if strings.Contains(r.Agent, "/") {
			return fail("agent %q: the name of an agent of this node", r.Agent)
		}
		c.target = target{peer: Self, server: "node", tool: r.Agent}
	default:
		if c.target, err = parseTarget(r.Call); err != nil {
			return fail("%v", err)
		}
		if r.Task != "" {
			return fail("task is for agents: give the tool's arguments instead")
		}
	}
	if r.Arguments != nil {
		raw, err := json.Marshal(r.Arguments)
		if err != nil {
			return fail("arguments: %v", err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		if err := dec.Decode(&c.args); err != nil {
			return fail("arguments: %v", err)
		}
	}
	switch {
	case r.Rate < 0 || r.Rate > maxRate:
		return fail("rate %v: want up to %d firings per second", r.Rate, maxRate)
	case r.Burst < 1 || r.Burst > 10*maxRate:
		return fail("burst %d: want 1 to %d", r.Burst, 10*maxRate)
	case r.MaxConcurrent < 1 || r.MaxConcurrent > maxConcurrent:
		return fail("maxConcurrent %d: want 1 to %d", r.MaxConcurrent, maxConcurrent)
	}
	for field, s := range map[string]*time.Duration{"timeout": &c.timeout, "maxAge": &c.maxAge} {
		v := r.Timeout
		if field == "maxAge" {
			v = r.MaxAge
		}
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fail("%s %q: want a duration like \"5m\"", field, v)
		}
		*s = d
	}
	return c, nil
}

func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("trigger name %q: want 1 to %d characters", name, maxNameLen)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("trigger name %q: letters, digits, '-', '_' and '.' only", name)
		}
	}
	return nil
}

// parseTarget reads PEER/SERVER/TOOL, PEER/TOOL, self/..., any/TOOL.
func parseTarget(ref string) (target, error) {
	parts := strings.Split(ref, "/")
	bad := fmt.Errorf("call %q: want PEER/SERVER/TOOL, PEER/TOOL, self/SERVER/TOOL or any/TOOL", ref)
	for _, p := range parts {
		if p == "" {
			return target{}, bad
		}
	}
	switch {
	case len(parts) == 2 && parts[0] == "any":
		return target{peer: "any", tool: parts[1]}, nil
	case len(parts) == 2:
		parts = []string{parts[0], "node", parts[1]}
	case len(parts) != 3 || parts[0] == "any":
		return target{}, bad
	}
	if parts[0] != Self {
		if _, err := lpeer.Decode(parts[0]); err != nil {
			return target{}, fmt.Errorf("call %q: %q is not a peer ID (or self, any)", ref, parts[0])
		}
	}
	return target{peer: parts[0], server: parts[1], tool: parts[2]}, nil
}
