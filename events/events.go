// Package events is the event model of the mesh, after the MCP Triggers &
// Events working group's design sketch: event types a node declares (name,
// description, input and payload schemas), occurrences with a stable
// eventId, a bounded log that a subscriber resumes from with a cursor, the
// filter a subscription carries, and the JSON-RPC messages of events/list,
// events/poll and events/stream. Package events/feed carries them over
// libp2p streams; events/trigger acts on them.
package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Event is one occurrence of an event type: the sketch's EventOccurrence.
type Event struct {
	// ID is the stable identifier subscribers de-duplicate by: the
	// emitter's own when it has one (an upstream's event ID), else made by
	// the log, unique to it.
	ID   string    `json:"eventId"`
	Name string    `json:"name"`
	Time time.Time `json:"timestamp"`
	// Data is the payload, a JSON object.
	Data json.RawMessage `json:"data"`
	// Cursor is the subscription's position after this event, on delivery.
	Cursor string `json:"cursor,omitempty"`
	Meta   *Meta  `json:"_meta,omitempty"`

	// Source is the peer the event came from (its authenticated stream),
	// set by the subscriber; never read from the wire.
	Source string `json:"-"`
}

// Meta is the _meta of an event, and of the stream notifications that
// carry a subscription's ID.
type Meta struct {
	// SubscriptionID is the JSON-RPC ID of the events/stream request a
	// notification belongs to (the sketch's routing convention).
	SubscriptionID json.RawMessage `json:"io.modelcontextprotocol/subscriptionId,omitempty"`
	// Depth counts the events that led to this one through triggers (an
	// event about a task a trigger started is one deeper than the event
	// that fired it), so that a loop of triggers ends.
	Depth int `json:"io.mcpmesh/depth,omitempty"`
}

// depth returns e's depth, 0 without meta.
func (e *Event) depth() int {
	if e.Meta == nil {
		return 0
	}
	return e.Meta.Depth
}

// Depth returns how many events led to e through triggers.
func (e *Event) Depth() int { return e.depth() }

// Type is an event type a node declares: what events/list answers, and the
// card lists by name.
type Type struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Delivery lists the modes a subscriber may use: "push"
	// (events/stream) and "poll" (events/poll). Webhooks are not offered
	// in the mesh (a peer is reached over its stream, never by URL).
	Delivery []string `json:"delivery"`
	// InputSchema is the JSON Schema of the subscription's arguments;
	// PayloadSchema that of each event's data.
	InputSchema   json.RawMessage `json:"inputSchema,omitempty"`
	PayloadSchema json.RawMessage `json:"payloadSchema,omitempty"`
	Meta          *TypeMeta       `json:"_meta,omitempty"`
}

// TypeMeta is the _meta of an event type.
type TypeMeta struct {
	// Replay says the node keeps a log of these events that a cursor
	// resumes from (always, for a node's events: see Log).
	Replay bool `json:"io.mcpmesh/replay,omitempty"`
}

// Delivery modes.
const (
	Push = "push"
	Poll = "poll"
)

// Names of the events every node emits. "mcp." and "mesh." are reserved to
// them: a node's own types may not start so.
const (
	// ResourceUpdated: a resource of a shared server changed
	// ({"server", "uri"}).
	ResourceUpdated = "mcp.resource.updated"
	// ToolsChanged, ResourcesChanged, PromptsChanged: a shared server's
	// list changed ({"server"}).
	ToolsChanged     = "mcp.tools.list_changed"
	ResourcesChanged = "mcp.resources.list_changed"
	PromptsChanged   = "mcp.prompts.list_changed"
	// TaskEnded: a task that was the root of its tree on the node ended
	// (completed, failed or cancelled), with the calls it made.
	TaskEnded = "mcp.task.ended"
	// PeerJoined, PeerLeft: a peer connected to the node, or its last
	// connection closed ({"peer"}).
	PeerJoined = "mesh.peer.joined"
	PeerLeft   = "mesh.peer.left"
	// CardChanged: what the node offers changed, and so its card
	// ({"peer", "servers", "tools", "events"}).
	CardChanged = "mesh.card.changed"
)

// Reserved reports whether name starts with a prefix kept for the events
// every node emits.
func Reserved(name string) bool {
	return strings.HasPrefix(name, "mcp.") || strings.HasPrefix(name, "mesh.")
}

// Bounds on what an event and a type may hold.
const (
	MaxNameLen = 128
	MaxIDLen   = 128
	// DefaultMaxData bounds an event's data (JSON) unless the source says
	// otherwise: the sketch asks for minimal payloads (triage fields, the
	// rest fetched with tools).
	DefaultMaxData = 64 << 10
	maxSchema      = 32 << 10
	maxDescription = 1024
)

// CheckName reports whether name is a valid event type name: 1 to 128
// letters, digits, '.', '_', '-', ':' or '/', starting with a letter or
// digit.
func CheckName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("event name %q: want 1 to %d characters", clip(name, 40), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-' || c == ':' || c == '/'):
		default:
			return fmt.Errorf("event name %q: letters, digits and . _ - : / only, starting with a letter or digit", clip(name, 40))
		}
	}
	return nil
}

// checkID reports whether id is a usable eventId: 1 to 128 printable
// ASCII characters.
func checkID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("event ID %q: want 1 to %d characters", clip(id, 40), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return fmt.Errorf("event ID %q: printable ASCII only", clip(id, 40))
		}
	}
	return nil
}

// Check reports whether t is a type a node may declare.
func (t *Type) Check() error {
	if err := CheckName(t.Name); err != nil {
		return err
	}
	if len(t.Description) > maxDescription {
		return fmt.Errorf("event type %s: description over %d bytes", t.Name, maxDescription)
	}
	for what, s := range map[string]json.RawMessage{"input": t.InputSchema, "payload": t.PayloadSchema} {
		if len(s) == 0 {
			continue
		}
		if len(s) > maxSchema || !json.Valid(s) || !bytes.HasPrefix(bytes.TrimSpace(s), []byte("{")) {
			return fmt.Errorf("event type %s: the %s schema must be a JSON object of at most %d bytes", t.Name, what, maxSchema)
		}
	}
	return nil
}

// clip shortens s to at most n bytes for a message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
