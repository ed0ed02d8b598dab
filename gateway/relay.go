package gateway

// Transparent mode's data path, for every host path (stdio through the
// daemon, stdio in the process, Streamable HTTP): a host session relayed to
// one server on a peer, with what the host must hear from the mesh itself
// said as JSON-RPC errors.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// Relay relays one host session to a server on a peer until either side
// ends or ctx is done, then closes both: host is the host's side (a stdio
// pipe, an HTTP session), up the server's (from Node.DialServer), target
// names the server for messages (PEER/SERVER). Messages pass as they are
// (relay.Pump), except where the mesh itself has something to say, which the
// host hears as JSON-RPC errors, never as a silent end:
//
//   - a request the mesh cannot carry (over the message size limit) is
//     answered with an error naming the limit, and the session goes on;
//   - when the server's side ends first (the peer left, the server was
//     unshared, a frame broke the stream) or the gateway closes, every
//     request still waiting for its answer is answered with an error saying
//     why.
func Relay(ctx context.Context, host, up sdkmcp.Connection, target string) error {
	h := &hostSide{Connection: host, target: target, inflight: map[jsonrpc.ID]struct{}{}}
	return relay.Pump(ctx, h, &upSide{Connection: up, host: h}, nil)
}

// hostSide is the host's connection, keeping the requests the host is
// waiting on.
type hostSide struct {
	sdkmcp.Connection
	target string

	mu       sync.Mutex
	inflight map[jsonrpc.ID]struct{}
	hostEnd  error // why the host's side ended, once it has
	upEnd    error // why the server's side ended, once it has
}

func (h *hostSide) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := h.Connection.Read(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		if h.hostEnd == nil {
			h.hostEnd = err
		}
		return nil, err
	}
	if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
		h.inflight[req.ID] = struct{}{}
	}
	return msg, nil
}

func (h *hostSide) Write(ctx context.Context, msg jsonrpc.Message) error {
	if resp, ok := msg.(*jsonrpc.Response); ok {
		h.mu.Lock()
		delete(h.inflight, resp.ID)
		h.mu.Unlock()
	}
	return h.Connection.Write(ctx, msg)
}

// answer answers the host's request id with e.
func (h *hostSide) answer(ctx context.Context, id jsonrpc.ID, e *jsonrpc.Error) error {
	return h.Write(ctx, &jsonrpc.Response{ID: id, Error: e})
}

// upEnded records why the server's side ended.
func (h *hostSide) upEnded(err error) {
	h.mu.Lock()
	if h.upEnd == nil {
		h.upEnd = err
	}
	h.mu.Unlock()
}

// Close answers the requests still waiting, if the host is still there to
// read the answers, then closes the host's side.
func (h *hostSide) Close() error {
	h.mu.Lock()
	ids := make([]jsonrpc.ID, 0, len(h.inflight))
	for id := range h.inflight {
		ids = append(ids, id)
	}
	hostGone, why := h.hostEnd != nil, h.upEnd
	h.mu.Unlock()
	if !hostGone && len(ids) > 0 {
		msg := fmt.Sprintf("mcpmesh: the gateway closed before %s answered", h.target)
		switch {
		case errors.Is(why, io.EOF):
			msg = fmt.Sprintf("mcpmesh: the session to %s ended before it answered (closed from its side: the server or its peer stopped)", h.target)
		case why != nil:
			msg = fmt.Sprintf("mcpmesh: the session to %s ended before it answered: %v", h.target, why)
		}
		for _, id := range ids {
			if err := h.answer(context.Background(), id, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: msg}); err != nil {
				break
			}
		}
	}
	return h.Connection.Close()
}

// upSide is the server's connection: it tells the host's side why it ended,
// and answers the host itself for a request it cannot carry.
type upSide struct {
	sdkmcp.Connection
	host *hostSide
}

func (u *upSide) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := u.Connection.Read(ctx)
	if err != nil {
		u.host.upEnded(err)
	}
	return msg, err
}

func (u *upSide) Write(ctx context.Context, msg jsonrpc.Message) error {
	err := u.Connection.Write(ctx, msg)
	var lerr *transport.LimitError
	if !errors.As(err, &lerr) {
		return err
	}
	// Nothing was sent and the session is whole: answer the host.
	if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
		return u.host.answer(ctx, req.ID, lerr.JSONRPC())
	}
	log.Debugw("message over the limit not relayed", "to", u.host.target, "error", err)
	return nil
}
