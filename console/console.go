// Package console is the daemon's web console: a page served on loopback
// that shows the mesh, its capabilities, task trees, the audit trail and the
// policy, live, and lets its user search, call a tool, cancel a tree and ask
// the policy a question.
//
// The console sees the node only through [Node], a small interface of the
// data it shows and the actions it takes; the daemon's adapter
// (control.ConsoleNode) implements it over a *node.Node. The page is
// embedded in the binary (Preact and htm, vendored from npm, no build step)
// and gets its updates over server-sent events: the daemon looks for changes
// at a modest rate while a page is open and pushes what changed; the page
// never polls.
package console

import (
	"context"
	"encoding/json"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// Node is what the console shows and does, as the node provides it. Peer IDs
// are strings (their base58 form). Methods are called from several
// goroutines at once.
type Node interface {
	// Self describes this node.
	Self() Self
	// Peers lists the peers the node knows of: connected, known from the DHT
	// or the peerstore, banned. It reads local state only (no network).
	Peers() []Peer
	// Card returns a peer's verified card (this node's own for its ID).
	Card(ctx context.Context, peer string) (*discovery.Card, error)
	// Search finds tools across the mesh by words and tags, best first, as
	// the gateway's mesh_search does.
	Search(ctx context.Context, query string, tags []string) ([]Hit, error)

	// Tasks lists the node's tasks, without results.
	Tasks() []tasks.Task
	// Task returns one task, with its result once ended.
	Task(id string) (tasks.Task, bool)
	// TaskTree returns the tree below a task of this node, across nodes.
	TaskTree(ctx context.Context, id string) (*Tree, error)
	// CancelTask cancels a task of this node and every task below it.
	CancelTask(id string) error

	// AuditSince follows the node's audit trail (see audit.Log.Since); ok
	// is false if the node keeps none.
	AuditSince(cursor uint64, max int) (records []audit.Record, next uint64, ok bool)

	// Policy is the policy in force.
	Policy() Policy
	// Check asks the policy about one access.
	Check(a Access) (Decision, error)

	// Tools lists the tools a peer shares (this node's own for its ID), with
	// their input schemas.
	Tools(ctx context.Context, peer string) ([]Tool, error)
	// Call calls tool on server of peer with args (a JSON object, or
	// empty). started is called with the root task's ID once the call's
	// tree exists, before the request leaves (not at all when the node does
	// not track tasks).
	Call(ctx context.Context, peer, server, tool string, args json.RawMessage, started func(task string)) (*sdkmcp.CallToolResult, error)
}

// Self describes the node the console runs in.
type Self struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Version string   `json:"version,omitempty"`
	Addrs   []string `json:"addrs"`
	Servers []string `json:"servers"`
	// Relays maps the servers this node re-shares (--share-peer) to the
	// PEER/SERVER they relay to: calls to them are relayed, not served.
	Relays map[string]string `json:"relays,omitempty"`
}

// PeerState is how the node knows a peer.
type PeerState string

// The states of a peer, as the mesh view draws them.
const (
	Connected PeerState = "connected" // a live connection
	Known     PeerState = "known"     // in the DHT's routing table or the peerstore, not connected
	Banned    PeerState = "banned"    // refused for a while by the node's limits
)

// Peer is one peer the node knows of. The node fills the connection fields;
// the console adds what the peer's card says.
type Peer struct {
	ID    string    `json:"id"`
	State PeerState `json:"state"`
	// Relayed is set when every connection to the peer goes through a
	// relay (a limited connection), none direct.
	Relayed     bool          `json:"relayed,omitempty"`
	Addrs       []string      `json:"addrs,omitempty"`
	Latency     time.Duration `json:"-"` // sent as latencyMs
	BannedUntil time.Time     `json:"bannedUntil,omitzero"`
	Agent       string        `json:"agent,omitempty"` // libp2p agent version

	// From the peer's card, when it could be fetched.
	Name        string         `json:"name,omitempty"`
	Description string         `json:"description,omitempty"`
	Tags        []string       `json:"tags,omitempty"`
	Shares      []SharedServer `json:"shares,omitempty"`
	CardError   string         `json:"cardError,omitempty"`
}

// MarshalJSON sends Latency as fractional milliseconds, rounded to 0.1 ms
// (finer changes are noise, and every change is pushed to open pages).
func (p Peer) MarshalJSON() ([]byte, error) {
	type plain Peer
	return json.Marshal(struct {
		plain
		LatencyMs float64 `json:"latencyMs,omitempty"`
	}{plain(p), float64(p.Latency.Round(100*time.Microsecond)) / float64(time.Millisecond)})
}

// SharedServer is one server on a peer's card.
type SharedServer struct {
	Name      string       `json:"name"`
	Tools     []SharedTool `json:"tools,omitempty"`
	Resources int          `json:"resources,omitempty"`
	Prompts   int          `json:"prompts,omitempty"`
}

// SharedTool is one tool on a peer's card.
type SharedTool struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
}

// Hit is one result of a capability search.
type Hit struct {
	Ref  string   `json:"ref"`  // PEER/SERVER/TOOL
	Peer string   `json:"peer"` // the peer's card name, or the end of its ID
	Desc string   `json:"desc,omitempty"`
	Tags []string `json:"tags,omitempty"`
}

// Tree is a task with the tasks below it, across nodes.
type Tree struct {
	tasks.Task
	// Unreachable says why the node holding this task could not be asked;
	// then only ID, Peer, Server and Tool are known.
	Unreachable string  `json:"unreachable,omitempty"`
	Children    []*Tree `json:"childTasks,omitempty"`
}

// Policy is the policy in force.
type Policy struct {
	Open    bool            `json:"open"`
	Summary string          `json:"summary"` // "open", "closed: no grants", "3 grants, 2 groups"
	JSON    json.RawMessage `json:"json"`    // as the configuration file writes it
}

// Access is a question to the policy: may Peer, acting for For ("" for
// itself), use Name (a tool, resource URI or prompt, by Kind) of Server?
type Access struct {
	Peer   string `json:"peer"`
	For    string `json:"for,omitempty"`
	Server string `json:"server"`
	Kind   string `json:"kind"` // "tool" (default), "resource" or "prompt"
	Name   string `json:"name"`
}

// Decision is the policy's answer to an Access.
type Decision struct {
	Allowed bool `json:"allowed"` // the call would be let through
	Listed  bool `json:"listed"`  // the capability is listed to the peer
}

// Tool is one tool a peer shares, with its input schema.
type Tool struct {
	Server string       `json:"server"`
	Tool   *sdkmcp.Tool `json:"tool"`
}
