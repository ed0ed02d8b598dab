// Package iface is what the packages built on a node (gateway, agent) need
// of it: the narrow interface [Node], which *node.Node implements, and the
// values it speaks in. Depending on it, not on package node, keeps them
// testable with a fake and keeps the node free to change what they do not
// use.
package iface

import (
	"context"
	"errors"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/discovery"
)

// Node is a node of the mesh as a user of it sees it: who it is, what the
// mesh offers, and how to call it.
type Node interface {
	// ID returns the node's peer ID.
	ID() lpeer.ID
	// Version returns the software version the node reports.
	Version() string
	// Server returns the node's own MCP server, where tools of its own are
	// added (with the SDK's AddTool).
	Server() *sdkmcp.Server

	// KnownPeers lists the peers whose cards a search of the mesh reads
	// (the node's peerstore and DHT routing table, and the node itself);
	// nil when the node has no discovery, and so no cards.
	KnownPeers() []lpeer.ID
	// Card returns p's verified card.
	Card(ctx context.Context, p lpeer.ID) (*discovery.Card, error)
	// Find looks up the peers that offer query (a tool name, or
	// "tag:NAME") and calls found for each, as they are verified.
	Find(ctx context.Context, query string, found func(discovery.Found)) error

	// ResolveTool finds the tool that ref (TOOL or SERVER/TOOL) names on p.
	ResolveTool(ctx context.Context, p lpeer.ID, ref string) (RemoteTool, error)
	// CallServerTool calls tool on the server called server on p; called
	// with a served call's context, the call is a child task of it.
	CallServerTool(ctx context.Context, p lpeer.ID, server, tool string, args any) (*sdkmcp.CallToolResult, error)
	// CallAny finds the providers of tool and calls one.
	CallAny(ctx context.Context, tool string, args any) (AnyResult, error)
	// DialServer opens a raw MCP connection to server on p, for a relay:
	// the caller is the session's client and owns the connection.
	DialServer(ctx context.Context, p lpeer.ID, server string) (sdkmcp.Connection, error)
}

// RemoteTool is a tool offered by one of a peer's servers.
type RemoteTool struct {
	Server string
	*sdkmcp.Tool
}

// Ref returns the tool's SERVER/TOOL reference.
func (t RemoteTool) Ref() string { return t.Server + "/" + t.Name }

// AnyResult is the outcome of CallAny.
type AnyResult struct {
	Peer   lpeer.ID
	Server string
	Result *sdkmcp.CallToolResult
	// Tried lists the providers that failed before Peer answered.
	Tried []error
}

// Errors of ResolveTool that a caller may act on (errors.Is): the peer
// lists no tool of that name, or several of its servers do.
var (
	ErrNoSuchTool    = errors.New("no such tool")
	ErrAmbiguousTool = errors.New("ambiguous tool name")
)
