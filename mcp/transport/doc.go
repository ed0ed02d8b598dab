// Package mcp carries the Model Context Protocol over libp2p streams.
//
// Each MCP server a node shares is reachable on its own stream protocol,
// [ProtocolID](name); one stream holds one MCP session, framed as
// newline-delimited JSON-RPC exactly as MCP's stdio transport frames it, so
// the bytes on a stream are standard MCP. [StreamTransport] adapts a stream
// to the official Go SDK's [sdkmcp.Transport].
//
// The package also holds what a server needs beyond the SDK to work on the
// mesh: [Elicit] and [Sample], which ask the caller for input whichever
// protocol version the session speaks; [Replay], which keeps a handler that
// asked from doing twice what it did before asking; [StreamRelay], which
// relays a session between two streams; and [Mirror], which shares an MCP
// server reached through a client session (a stdio program) as a server of
// the node's own.
package transport

import sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

var _ sdkmcp.Transport = (*StreamTransport)(nil)
