// Package control is the local API of a running mcpmesh daemon: an HTTP+JSON
// endpoint on 127.0.0.1 that the CLI's commands use. The daemon writes the
// endpoint's address and a random bearer token into its home folder (file
// "api", mode 0600), so only users who can read that folder can drive it.
package control

import (
	"encoding/json"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/upstream"
)

// APIFile is the name of the file in the daemon's home that says where its
// control endpoint listens.
const APIFile = "api"

// Endpoint is the content of the API file.
type Endpoint struct {
	Addr  string `json:"addr"`
	Token string `json:"token"`
	PID   int    `json:"pid"`
}

// Identity answers GET /v1/id.
type Identity struct {
	ID       string                 `json:"id"`
	Name     string                 `json:"name"`
	Version  string                 `json:"version"`
	Addrs    []string               `json:"addrs"`
	Servers  []string               `json:"servers"`
	Programs []upstream.ShareStatus `json:"programs,omitempty"`
	// State is "starting" while shared servers start for the first time,
	// then "running" (see Daemon).
	State string `json:"state,omitempty"`
}

// Peer is one entry of GET /v1/peers.
type Peer struct {
	ID      string        `json:"id"`
	Name    string        `json:"name,omitempty"` // its card's name, when found`
	Addrs   []string      `json:"addrs"`
	Servers []string      `json:"servers"`
	Latency time.Duration `json:"latencyNs,omitempty"`
	Agent   string        `json:"agent,omitempty"`
}

// ConnectRequest is the body of POST /v1/connect.
type ConnectRequest struct {
	Peer string `json:"peer"`
}

// ConnectResponse answers POST /v1/connect.
type ConnectResponse struct {
	ID string `json:"id"`
	// Addr is the peer's address of the daemon's connection to it (or,
	// with Tried, the address given, which answered).
	Addr string `json:"addr,omitempty"`
	// Already says the daemon was connected to the peer before; Tried,
	// that it dialed the address given anyway, since its connection was
	// through another one.
	Already bool `json:"already,omitempty"`
	Tried   bool `json:"tried,omitempty"`
}

// ToolsRequest is the body of POST /v1/tools.
type ToolsRequest struct {
	Peer string `json:"peer"`
}

// Tool is one entry of the answer to POST /v1/tools.
type Tool struct {
	Server string       `json:"server"`
	Tool   *sdkmcp.Tool `json:"tool"`
}

// CallRequest is the body of POST /v1/call.
type CallRequest struct {
	Peer string          `json:"peer"`
	Tool string          `json:"tool"` // TOOL or SERVER/TOOL
	Args json.RawMessage `json:"args,omitempty"`
	// Progress asks for the call's progress as it comes: the answer is
	// then JSON lines (application/x-ndjson), one CallEvent each, progress
	// first and the result or the error last, always with status 200.
	Progress bool `json:"progress,omitempty"`
	// Questions, with Progress, asks for the questions the call's tools ask
	// its user (elicitation/create, from any hop of the call's tree) as
	// Question events, each to be answered with POST /v1/call/answer while
	// the call runs. Without it they are refused ("no user to ask").
	// Sampling requests are refused either way: a Question event with
	// Declined set says what was asked.
	Questions bool `json:"questions,omitempty"`
}

// CallEvent is one line of the answer to a POST /v1/call that asked for
// progress: exactly one of its fields is set.
type CallEvent struct {
	Progress *Progress     `json:"progress,omitempty"`
	Question *Question     `json:"question,omitempty"`
	Result   *CallResponse `json:"result,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// Progress is one progress notification of a call, as MCP sends it: Total
// is 0 when unknown.
type Progress struct {
	Progress float64 `json:"progress"`
	Total    float64 `json:"total,omitempty"`
	Message  string  `json:"message,omitempty"`
}

// Question is a question a call's tool asks the call's user: an
// elicitation (Elicit: its message, mode, requested schema or URL) to answer
// with POST /v1/call/answer naming ID, or a sampling request, which the
// daemon has declined already (Declined: the error sent back) and which
// needs no answer.
type Question struct {
	ID       string               `json:"id,omitempty"`
	Kind     string               `json:"kind"` // QuestionElicitation or QuestionSampling
	Elicit   *sdkmcp.ElicitParams `json:"elicit,omitempty"`
	Declined string               `json:"declined,omitempty"`
}

// The kinds of Question.
const (
	QuestionElicitation = "elicitation"
	QuestionSampling    = "sampling"
)

// Answer is the body of POST /v1/call/answer: the user's answer to the
// open question Question. Action is "accept" (with Content, the values of
// the requested schema's fields), "decline" or "cancel".
type Answer struct {
	Question string         `json:"question"`
	Action   string         `json:"action"`
	Content  map[string]any `json:"content,omitempty"`
}

// CallResponse answers POST /v1/call.
type CallResponse struct {
	Peer   string                 `json:"peer"`
	Server string                 `json:"server"`
	Tool   string                 `json:"tool"`
	Result *sdkmcp.CallToolResult `json:"result"`
	// Tried lists, for a call to "any", the providers that failed first.
	Tried []string `json:"tried,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}
