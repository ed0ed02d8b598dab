package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// The JSON-RPC methods and notifications of the sketch that the mesh
// carries (events/feed). Webhooks (events/subscribe, events/unsubscribe)
// are not offered: a subscriber is a peer, reached over its own stream.
const (
	MethodList      = "events/list"
	MethodPoll      = "events/poll"
	MethodStream    = "events/stream"
	MethodSubscribe = "events/subscribe"

	NotifyActive     = "notifications/events/active"
	NotifyEvent      = "notifications/events/event"
	NotifyHeartbeat  = "notifications/events/heartbeat"
	NotifyError      = "notifications/events/error"
	NotifyTerminated = "notifications/events/terminated"
)

// The sketch's error codes (in JSON-RPC's server range), with InvalidParams
// for requests that are invalid in themselves. An earlier revision of the
// sketch had -32016 for an unknown subscription; the current one folds it
// into NotFound.
const (
	CodeInvalidParams     = jsonrpc.CodeInvalidParams
	CodeNotFound          = -32011
	CodeForbidden         = -32012
	CodeResourceExhausted = -32013
	CodeUnsupported       = -32014
	CodeCallbackEndpoint  = -32015
)

// Error returns a JSON-RPC error with code and message, and data (any
// JSON value) if not nil.
func Error(code int64, data any, format string, args ...any) *jsonrpc.Error {
	e := &jsonrpc.Error{Code: code, Message: fmt.Sprintf(format, args...)}
	if data != nil {
		e.Data, _ = json.Marshal(data)
	}
	return e
}

// ListResult is the result of events/list.
type ListResult struct {
	Events     []Type `json:"events"`
	NextCursor string `json:"nextCursor,omitempty"`
}

// Arguments are the subscription arguments every event type of a node
// accepts (its inputSchema): a filter the source applies before sending.
type Arguments struct {
	Where json.RawMessage `json:"where,omitempty"`
}

// ArgumentsSchema is the inputSchema of a node's event types.
var ArgumentsSchema = json.RawMessage(`{"type":"object","properties":{"where":{"type":"object","description":"Only events whose data match: field path (dotted) to a value, a \"*\" pattern for strings, or a list of values any of which may match."}},"additionalProperties":false}`)

// SubscribeParams are the params of events/poll and events/stream.
type SubscribeParams struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	// Cursor is where to resume: nil (JSON null) means from now.
	Cursor *string `json:"cursor"`
	// MaxAgeMs, if positive, skips events older than that on resuming.
	MaxAgeMs int64 `json:"maxAgeMs,omitempty"`
	// MaxEvents bounds the events one poll returns.
	MaxEvents int `json:"maxEvents,omitempty"`
}

// MaxAge returns MaxAgeMs as a duration.
func (p *SubscribeParams) MaxAge() time.Duration { return time.Duration(p.MaxAgeMs) * time.Millisecond }

// PollResult is the result of events/poll.
type PollResult struct {
	Events     []Event `json:"events"`
	Cursor     string  `json:"cursor"`
	Truncated  bool    `json:"truncated"`
	HasMore    bool    `json:"hasMore"`
	NextPollMs int64   `json:"nextPollMs"`
}

// Active is the params of notifications/events/active: the subscription
// is in place, from Cursor; Truncated says events were skipped (the cursor
// was older than the log, of a log lost in a restart, or past maxAgeMs).
type Active struct {
	Cursor    string `json:"cursor"`
	Truncated bool   `json:"truncated"`
	Meta      *Meta  `json:"_meta,omitempty"`
}

// Heartbeat is the params of notifications/events/heartbeat: the position
// the source has checked up to, so that a quiet subscription's cursor
// still advances.
type Heartbeat struct {
	Cursor string `json:"cursor"`
	Meta   *Meta  `json:"_meta,omitempty"`
}

// Terminated is the params of notifications/events/terminated (the
// subscription has ended, e.g. its grant was revoked) and of
// notifications/events/error (one failure, the subscription goes on).
type Terminated struct {
	Error *jsonrpc.Error `json:"error"`
	Meta  *Meta          `json:"_meta,omitempty"`
}

// DefaultHeartbeat is how often a source sends a heartbeat on a quiet
// subscription (the sketch asks for at least every 30 seconds).
const DefaultHeartbeat = 15 * time.Second
