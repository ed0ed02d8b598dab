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

	opened time.Time // when the session began: see getStreamGrace

	mu       sync.Mutex
	inflight map[jsonrpc.ID]struct{}
	tokens   map[any]jsonrpc.ID // progress token → request
	closing  bool
}

// getStreamGrace is how long after a session begins a server message that
// belongs to no request waits for the client's GET stream, rather than be
// refused at once: a server that asks for roots as soon as it is
// initialized (server-filesystem) would otherwise race the client opening
// that stream, where over stdio the question always arrives.
const getStreamGrace = 3 * time.Second

// NewRoutedConn returns the connection that relays the server's messages to
// down, the HTTP side, each on the stream of the request it belongs to; up
// is the server's side, where requests the client cannot get are answered.
func NewRoutedConn(down, up sdkmcp.Connection) *RoutedConn {
	return &RoutedConn{Connection: down, up: up, opened: time.Now(), inflight: map[jsonrpc.ID]struct{}{}, tokens: map[any]jsonrpc.ID{}}
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
	wctx := sdkcompat.RequestContext(ctx, "", related)
	err := c.Connection.Write(wctx, msg)
	if err != nil && !related.IsValid() && c.rejected(err) {
		err = c.writeOnceStreamOpens(wctx, msg)
	}
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

// rejected reports whether err is the SDK transport's "no stream for this
// message".
func (c *RoutedConn) rejected(err error) bool {
	var werr *jsonrpc.Error
	return errors.As(err, &werr) && werr.Code == sdkcompat.RejectedCode
}

// writeOnceStreamOpens writes msg, which belongs to no request, again until
// the client's GET stream takes it or getStreamGrace after the session
// began. The SDK tells no one when that stream opens, so it tries every
// 20 ms; the messages after msg wait behind it, in order.
func (c *RoutedConn) writeOnceStreamOpens(ctx context.Context, msg jsonrpc.Message) error {
	deadline := time.NewTimer(time.Until(c.opened.Add(getStreamGrace)))
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-deadline.C:
			return c.Connection.Write(ctx, msg)
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing {
			return errors.New("session closing")
		}
		err := c.Connection.Write(ctx, msg)
		if err == nil || !c.rejected(err) {
			return err
		}
	}
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
