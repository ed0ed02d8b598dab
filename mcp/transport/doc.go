// Package transport carries the Model Context Protocol over libp2p streams.
//
// Each MCP server a node shares is reachable on its own stream protocol,
// [ProtocolID](name); one stream holds one MCP session, framed as
// newline-delimited JSON-RPC exactly as MCP's stdio transport frames it, so
// the bytes on a stream are standard MCP. [StreamTransport] adapts a stream
// to the official Go SDK's [sdkmcp.Transport]; a [Conn] is one session on a
// stream, read and written as messages or as raw frames (for a relay).
// Frames are bounded ([DefaultMaxMessageSize]): a frame over the limit is
// skipped and stands for a JSON-RPC error that names the limit
// ([FrameTooLargeError]); a peer that breaks the framing (a frame that does
// not decode, a line that does not end) has its stream reset, which ends
// that session only. A [Conn] also frames a program's standard input and
// output ([NewPipeConn]).
//
// Server names ([ValidateServerName]) live here too: they are part of the
// protocol IDs.
package transport

import (
	"context"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

var (
	_ sdkmcp.Transport  = (*StreamTransport)(nil)
	_ sdkmcp.Connection = (*Conn)(nil)
)

// Connected returns a Transport whose Connect returns c, to hand the SDK a
// connection that is already open (a relay's end, a host's pipe).
func Connected(c sdkmcp.Connection) sdkmcp.Transport { return connectedTransport{c} }

type connectedTransport struct{ c sdkmcp.Connection }

func (t connectedTransport) Connect(context.Context) (sdkmcp.Connection, error) { return t.c, nil }
