// Package relay is the data path of a node: it carries MCP sessions
// between a downstream (a caller's stream, a host's HTTP session) and an
// upstream (another peer's server, a shared program), rewriting only what
// the mesh must.
//
//   - [Pump] relays two connections message by message, decoding nothing
//     beyond the JSON-RPC envelope; [StreamRelay] does the same for two
//     libp2p streams, frame by frame, undecoded unless a rewrite asks.
//   - [TaskHop] makes a relaying node a hop of the task tree: it extends the
//     task context of each relayed tools/call.
//   - [RoutedConn] gives each message a server sends on a Streamable HTTP
//     session the HTTP stream of the request it belongs to.
//   - [Mirror] re-serves a server reached as a client (a program shared with
//     --share) as an SDK server of the node's own. It is what the faithful
//     passthrough replaces.
package relay

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// Rewrite may change a message on its way through a Pump. It sees every
// message of one direction, decoded only to its JSON-RPC envelope (params
// and results stay raw bytes), and returns the message to pass on (nil to
// drop it) and a message to send back to where it came from instead (nil
// for none): a relay refusing a request answers it with an error.
type Rewrite func(jsonrpc.Message) (forward, reply jsonrpc.Message, err error)

// Pump relays one MCP session between two connections, message by message,
// in both directions, until either side ends or ctx is done; then it closes
// both. Nothing is decoded beyond the JSON-RPC envelope, so a relay costs
// the same whatever the payload, and every MCP feature (notifications,
// subscriptions, requests from server to client, cancellation) passes
// through as it is. toServer, if not nil, rewrites what the client sends.
//
// client is the side that opened the session (it sends initialize); server
// is the side that serves it.
func Pump(ctx context.Context, client, server sdkmcp.Connection, toServer Rewrite) error {
	pipe := func(from, to sdkmcp.Connection, rw Rewrite) func(context.Context) error {
		return func(ctx context.Context) error {
			for {
				msg, err := from.Read(ctx)
				if err != nil {
					return err
				}
				if rw != nil {
					var reply jsonrpc.Message
					if msg, reply, err = rw(msg); err != nil {
						return err
					}
					if reply != nil {
						if err := from.Write(ctx, reply); err != nil {
							return err
						}
					}
					if msg == nil {
						continue
					}
				}
				if err := to.Write(ctx, msg); err != nil {
					return err
				}
			}
		}
	}
	return bothWays(ctx, func() { client.Close(); server.Close() },
		pipe(client, server, toServer), pipe(server, client, nil))
}

// bothWays runs the two directions of a relay until the first one ends (or
// ctx does), then closes both sides, which unblocks the other direction's
// read, and waits for it. A clean end (EOF, cancellation) is no error.
func bothWays(ctx context.Context, closeBoth func(), there, back func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		once sync.Once
		end  error
	)
	finish := func(err error) {
		once.Do(func() {
			end = err
			cancel()
			closeBoth()
		})
	}
	stop := context.AfterFunc(ctx, func() { finish(ctx.Err()) })
	defer stop()
	wg.Add(2)
	go func() { defer wg.Done(); finish(there(ctx)) }()
	go func() { defer wg.Done(); finish(back(ctx)) }()
	wg.Wait()
	if errors.Is(end, io.EOF) || errors.Is(end, context.Canceled) {
		return nil
	}
	return end
}

// FrameRewrite may change a frame on its way through RelayStreams: it
// returns the frame to pass on (nil to drop it) and a frame to send back to
// where it came from instead (nil for none). frame is valid only during the
// call.
type FrameRewrite func(frame []byte) (forward, reply []byte, err error)

// RelayStreams relays one MCP session from the stream down (a client's) to
// the stream up (the server's), frame by frame, until either ends or ctx is
// done; then it closes (or, after a bad frame, resets) both. Frames pass as
// bytes: nothing is decoded unless toServer, which sees each frame from the
// client, or toClient, each frame from the server, chooses to (either may be
// nil). It is Pump for two libp2p streams, at a fraction of the cost.
func RelayStreams(ctx context.Context, down, up network.Stream, maxMessageSize int, toServer, toClient FrameRewrite) error {
	return NewStreamRelay(down, up, maxMessageSize).Run(ctx, toServer, toClient)
}

// A StreamRelay relays one MCP session between two libp2p streams, as
// RelayStreams does, and lets the relaying side send the client messages of
// its own (a notification) between the frames it relays.
type StreamRelay struct {
	down, up *transport.Conn
	// ServerLost, if set, is called when the server's side ends on its own
	// (not after the client's end, nor ctx's), with why, while the client's
	// stream is still open: the relay can answer what waits on the server
	// (SendToClient) before the session ends.
	ServerLost func(error)
}

// NewStreamRelay returns the relay of the session from down (the client's
// stream) to up (the server's). maxMessageSize bounds one frame either way
// (0: transport.DefaultMaxMessageSize).
func NewStreamRelay(down, up network.Stream, maxMessageSize int) *StreamRelay {
	return &StreamRelay{down: transport.NewConn(down, maxMessageSize), up: transport.NewConn(up, maxMessageSize)}
}

// SendToClient writes one message to the client, whole, between relayed
// frames. It is safe to call while Run runs, and fails once the session has
// ended.
func (r *StreamRelay) SendToClient(msg jsonrpc.Message) error {
	frame, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return err
	}
	return r.down.WriteFrame(frame)
}

// Run relays until either side ends or ctx is done, as RelayStreams does.
func (r *StreamRelay) Run(ctx context.Context, toServer, toClient FrameRewrite) error {
	copyFrames := func(from, to *transport.Conn, rw FrameRewrite) func(context.Context) error {
		return func(context.Context) error {
			for {
				line, err := from.ReadFrame()
				if err != nil {
					return err
				}
				if rw != nil {
					fwd, reply, err := rw(line)
					if err != nil {
						from.Break(err)
						return err
					}
					if reply != nil {
						if err := from.WriteFrame(reply); err != nil {
							return err
						}
					}
					if line = fwd; line == nil {
						continue
					}
				}
				if err := to.WriteFrame(line); err != nil {
					return err
				}
			}
		}
	}
	back := copyFrames(r.up, r.down, toClient)
	if lost := r.ServerLost; lost != nil {
		relayBack := back
		back = func(ctx context.Context) error {
			err := relayBack(ctx)
			if ctx.Err() == nil {
				lost(err)
			}
			return err
		}
	}
	return bothWays(ctx, func() { r.down.Close(); r.up.Close() },
		copyFrames(r.down, r.up, toServer), back)
}
