package relay

// Relaying a session to a Streamable HTTP client: the SDK's server transport
// writes each message from the server on the HTTP stream of the request it
// relates to, and learns that relation from its own server sessions. A relay
// has no such session, so RoutedConn works the relation out from the
// messages themselves.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
)

// RoutedConn wraps the HTTP side of a relayed session, a Streamable HTTP
// server transport's connection. It watches the
// requests the client sends (Read) so that it can tell, for each message
// the server sends (Write), which request in flight it belongs to: a
// response by its ID, a progress notification by its token, and any other
// request or notification from the server (logging, sampling, elicitation,
// roots) to the one request in flight, if there is exactly one. The SDK's
// transport then writes it on that request's SSE stream, as a server of its
// own would; a message that belongs to no request goes to the session's GET
// stream.
type RoutedConn struct {
	sdkmcp.Connection                   // the HTTP side
	up                sdkmcp.Connection // the peer's side, to refuse requests the client cannot get

	mu       sync.Mutex
	inflight map[jsonrpc.ID]struct{}
	tokens   map[any]jsonrpc.ID // progress token → request
	closing  bool
}

// NewRoutedConn returns the connection that relays the server's messages to
// down, the HTTP side, each on the stream of the request it belongs to; up
// is the server's side, where requests the client cannot get are answered.
func NewRoutedConn(down, up sdkmcp.Connection) *RoutedConn {
	return &RoutedConn{Connection: down, up: up, inflight: map[jsonrpc.ID]struct{}{}, tokens: map[any]jsonrpc.ID{}}
}

// Read implements [sdkmcp.Connection], noting each request the client sends.
func (c *RoutedConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.Connection.Read(ctx)
	if err != nil {
		return nil, err
	}
	if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
		token := progressToken(req.Params)
		c.mu.Lock()
		c.inflight[req.ID] = struct{}{}
		if token != nil {
			c.tokens[token] = req.ID
		}
		c.mu.Unlock()
	}
	return msg, nil
}

// Write implements [sdkmcp.Connection], relating each message from the
// server to the request it belongs to.
func (c *RoutedConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	var related jsonrpc.ID
	switch m := msg.(type) {
	case *jsonrpc.Response:
		c.mu.Lock()
		delete(c.inflight, m.ID)
		for tok, id := range c.tokens {
			if id == m.ID {
				delete(c.tokens, tok)
			}
		}
		c.mu.Unlock()
	case *jsonrpc.Request:
		related = c.relate(m)
	}
	err := c.Connection.Write(sdkcompat.RequestContext(ctx, "", related), msg)
	if err == nil {
		return nil
	}
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	var werr *jsonrpc.Error
	if closing || !errors.As(err, &werr) || werr.Code != sdkcompat.RejectedCode {
		return err
	}
	// Not delivered (no stream to carry it: the client has no GET stream
	// open, or the request it related to has ended). The session goes on,
	// as with the SDK's own server; a request from the server is answered
	// with an error, so that the server does not wait for ever.
	if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
		c.up.Write(ctx, &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{
			Code:    jsonrpc.CodeInternalError,
			Message: fmt.Sprintf("mcpmesh gateway: the client has no open stream for %s", req.Method),
		}})
	}
	log.Debugw("server message not delivered", "error", err)
	return nil
}

// relate picks the client request in flight that msg, sent by the server,
// belongs to.
func (c *RoutedConn) relate(msg *jsonrpc.Request) jsonrpc.ID {
	switch msg.Method {
	case "notifications/progress":
		if tok := progressTokenOf(msg.Params); tok != nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.tokens[tok]
		}
		return jsonrpc.ID{}
	case "notifications/resources/updated", "notifications/resources/list_changed",
		"notifications/tools/list_changed", "notifications/prompts/list_changed",
		"notifications/cancelled":
		return jsonrpc.ID{} // about the session, not a request
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.inflight) == 1 {
		for id := range c.inflight {
			return id
		}
	}
	return jsonrpc.ID{}
}

// Close answers the requests still in flight with an error (the session to
// the peer is over, so their answers will never come), then closes the HTTP
// side.
func (c *RoutedConn) Close() error {
	c.mu.Lock()
	c.closing = true
	ids := make([]jsonrpc.ID, 0, len(c.inflight))
	for id := range c.inflight {
		ids = append(ids, id)
	}
	clear(c.inflight)
	c.mu.Unlock()
	for _, id := range ids {
		c.Connection.Write(context.Background(), &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{
			Code: jsonrpc.CodeInternalError, Message: "mcpmesh gateway: the session to the peer ended",
		}})
	}
	return c.Connection.Close()
}

// progressToken returns params._meta.progressToken of a client request, or
// nil. Params are decoded only if they mention one.
func progressToken(params json.RawMessage) any {
	if !bytes.Contains(params, []byte(`"progressToken"`)) {
		return nil
	}
	var p struct {
		Meta struct {
			Token any `json:"progressToken"`
		} `json:"_meta"`
	}
	if _, err := segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil
	}
	return normToken(p.Meta.Token)
}

// progressTokenOf returns params.progressToken of a progress notification.
func progressTokenOf(params json.RawMessage) any {
	var p struct {
		Token any `json:"progressToken"`
	}
	if _, err := segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil
	}
	return normToken(p.Token)
}

// normToken makes a decoded token usable as a map key (a string or a
// number; JSON numbers decode as float64 either way).
func normToken(t any) any {
	switch t.(type) {
	case string, float64:
		return t
	}
	return nil
}

// CountingConn counts the messages written to it, so that a relay can wait
// until what it was given has passed.
type CountingConn struct {
	sdkmcp.Connection
	mu     sync.Mutex
	n      int
	signal chan struct{}
}

// NewCountingConn returns c, counting.
func NewCountingConn(c sdkmcp.Connection) *CountingConn {
	return &CountingConn{Connection: c, signal: make(chan struct{}, 1)}
}

// Write implements [sdkmcp.Connection].
func (c *CountingConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	err := c.Connection.Write(ctx, msg)
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
	return err
}

// Wait waits until n messages were written, or for d at most.
func (c *CountingConn) Wait(n int, d time.Duration) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		done := c.n >= n
		c.mu.Unlock()
		if done {
			return
		}
		select {
		case <-c.signal:
		case <-deadline.C:
			return
		}
	}
}
