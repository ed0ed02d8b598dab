// Package relay is the data path of a node: it carries MCP sessions
// between a downstream (a caller's stream, a host's HTTP session) and an
// upstream (another peer's server, a shared program), rewriting only what
// the mesh must.
//
//   - [Relay] relays two framed connections frame by frame, undecoded unless
//     a rewrite asks; [Pump] does the same for two SDK connections, message
//     by message, decoding nothing beyond the JSON-RPC envelope.
//   - [Share] passes a server shared from a program or an endpoint through:
//     each caller session goes to an upstream session of its own (isolated,
//     the default) or, in shared mode, all go over one ([Mux]).
//   - [RoutedConn] gives each message a server sends on a Streamable HTTP
//     session the HTTP stream of the request it belongs to.
//   - The mesh's own _meta ([StripMeshMeta], [ReadTaskMeta], [SetTaskMeta]):
//     the bytes only. What a task context means, and what a relay hop
//     passes on, is the task layer's (tasks/tracker's RelaySession).
package relay

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
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

// FrameRewrite may change a frame on its way through a Relay (see Frame):
// drop it, answer it in its place, change the mesh's _meta of a request,
// replace it. An error breaks the session. The frame and its views are
// valid only during the call.
type FrameRewrite func(f *Frame) error

// FrameConn is one side of a relayed session, read and written frame by
// frame: a libp2p stream ([transport.Conn]), a program's standard input and
// output, a Streamable HTTP session, a session multiplexed onto a shared
// upstream. ReadFrame returns a [*transport.FrameTooLargeError] for a frame
// over the limit it skipped, and goes on.
type FrameConn interface {
	ReadFrame() ([]byte, error)
	// WriteFrame writes one frame, whole; it may append to frame's backing
	// array, and must be safe to call concurrently.
	WriteFrame(frame []byte) error
	Close() error
}

// breaker is a FrameConn that can be marked broken by its peer, so that
// Close resets rather than closes it.
type breaker interface{ Break(error) }

// RelayStreams relays one MCP session from the stream down (a client's) to
// the stream up (the server's), frame by frame, until either ends or ctx is
// done; then it closes (or, after a bad frame, resets) both. Frames pass as
// bytes: nothing is decoded unless toServer, which sees each frame from the
// client, or toClient, each frame from the server, chooses to (either may be
// nil). It is Pump for two libp2p streams, at a fraction of the cost.
func RelayStreams(ctx context.Context, down, up network.Stream, maxMessageSize int, toServer, toClient FrameRewrite) error {
	return NewStreamRelay(down, up, maxMessageSize).Run(ctx, toServer, toClient)
}

// A Relay relays one MCP session between a client's side and a server's, as
// RelayStreams does, and lets the relaying node send either side messages of
// its own (a notification, a cancellation) between the frames it relays.
type Relay struct {
	down, up FrameConn
	// ServerLost, if set, is called when the server's side ends on its own
	// (not after the client's end, nor ctx's), with why, while the client's
	// side is still open: the relay can answer what waits on the server
	// (SendToClient) before the session ends.
	ServerLost func(error)
}

// StreamRelay is the Relay of two libp2p streams.
type StreamRelay = Relay

// New returns the relay of the session from down (the client's side) to up
// (the server's).
func New(down, up FrameConn) *Relay { return &Relay{down: down, up: up} }

// NewStreamRelay returns the relay of the session from down (the client's
// stream) to up (the server's). maxMessageSize bounds one frame either way
// (0: transport.DefaultMaxMessageSize).
func NewStreamRelay(down, up network.Stream, maxMessageSize int) *Relay {
	return New(transport.NewConn(down, maxMessageSize), transport.NewConn(up, maxMessageSize))
}

// SendToClient writes one message to the client, whole, between relayed
// frames. It is safe to call while Run runs, and fails once the session has
// ended.
func (r *Relay) SendToClient(msg jsonrpc.Message) error { return send(r.down, msg) }

// SendToServer writes one message to the server, as SendToClient does to
// the client.
func (r *Relay) SendToServer(msg jsonrpc.Message) error { return send(r.up, msg) }

// WriteToClient writes one frame to the client, as SendToClient does a
// message.
func (r *Relay) WriteToClient(frame []byte) error { return r.down.WriteFrame(frame) }

func send(c FrameConn, msg jsonrpc.Message) error {
	frame, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return err
	}
	return c.WriteFrame(frame)
}

// Run relays until either side ends or ctx is done, as RelayStreams does. A
// frame over a side's limit does not end the session: a request in it is
// answered with the JSON-RPC error that names the limit, and an answer in it
// is replaced by that error, which goes on through the rewrite as the
// answer would have (see transport.FrameTooLargeError).
func (r *Relay) Run(ctx context.Context, toServer, toClient FrameRewrite) error {
	copyFrames := func(from, to FrameConn, rw FrameRewrite) func(context.Context) error {
		return func(context.Context) error {
			var f Frame // each frame of this direction in turn, its buffers reused
			for {
				line, err := from.ReadFrame()
				if err != nil {
					if line, err = skipped(from, err); err != nil {
						return err
					}
					if line == nil {
						continue
					}
				}
				if rw != nil {
					f.reset(line)
					if err := rw(&f); err != nil {
						if b, ok := from.(breaker); ok {
							b.Break(err)
						}
						return err
					}
					if reply := f.Reply(); reply != nil {
						if err := from.WriteFrame(reply); err != nil {
							return err
						}
					}
					if f.Dropped() {
						continue
					}
					line = f.Bytes()
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

// skipped handles a frame that from's ReadFrame refused (err): a frame
// over the size limit, or refused by the side's Guard (too complex, over
// its memory budget). A request in it is answered with the error naming
// the bound, and an answer in it becomes that error, returned as the frame
// to relay in its place; the rest is dropped (nil), and the session goes
// on. Any other error ends the session: it is returned.
func skipped(from FrameConn, err error) ([]byte, error) {
	var tooLarge *transport.FrameTooLargeError
	var refused *transport.FrameRefusedError
	if !errors.As(err, &tooLarge) && errors.As(err, &refused) {
		if c, ok := from.(interface {
			AnswerRefused(*transport.FrameRefusedError) error
		}); ok {
			if err := c.AnswerRefused(refused); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	if tooLarge == nil {
		return nil, err
	}
	reply := tooLarge.Reply()
	if reply == nil {
		log.Debugw("frame over the size limit dropped", "error", err)
		return nil, nil // a notification, or an ID its ends do not show
	}
	if tooLarge.Request {
		return nil, send(from, reply)
	}
	return jsonrpc.EncodeMessage(reply)
}

// RefuseSession answers the first request of a session that will not be
// relayed (its initialize, or a 2026-07-28 client's first request) with a
// JSON-RPC error, then ends the session: the caller learns why, where a
// bare end of the stream would tell it nothing. It gives the client a few
// seconds to send its request.
func RefuseSession(down FrameConn, code int64, msg string) {
	timer := time.AfterFunc(refuseWait, func() { down.Close() })
	defer timer.Stop()
	defer down.Close()
	for range 8 { // notifications before the request are skipped
		f, err := down.ReadFrame()
		if err != nil {
			var tooLarge *transport.FrameTooLargeError
			if errors.As(err, &tooLarge) {
				continue
			}
			return
		}
		m, err := sdkcompat.DecodeMessage(f)
		if err != nil {
			return
		}
		if req, ok := m.(*jsonrpc.Request); ok && req.IsCall() {
			send(down, &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: code, Message: msg}})
			return
		}
	}
}

// refuseWait bounds how long RefuseSession waits for the request to answer.
const refuseWait = 5 * time.Second
