package tracker

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	segjson "github.com/segmentio/encoding/json"
)

// A call's progress must reach its caller before its result: MCP asks that
// progress stop at completion, and a caller shows progress in the order it
// came. The SDK's client hands notifications to handlers on a goroutine of
// their own while it gives a result straight to the waiting call, so a
// progress notification read before the result can be handled after it.
// The node therefore counts, per progress token, the notifications read off
// a connection (progressConn) and not yet relayed (relayProgress), and a
// call waits for its token's count to drop to zero before it returns.

// progressRoute is where the progress of one call the node made goes.
type progressRoute struct {
	to *served // the task whose caller gets it

	mu      sync.Mutex
	pending int           // read off the connection, not yet relayed
	idle    chan struct{} // closed when pending drops to 0, if someone waits
}

func (r *progressRoute) arrived() {
	r.mu.Lock()
	r.pending++
	r.mu.Unlock()
}

func (r *progressRoute) relayed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending > 0 {
		r.pending--
	}
	if r.pending == 0 && r.idle != nil {
		close(r.idle)
		r.idle = nil
	}
}

// maxProgressWait bounds how long a result waits for the progress read
// before it: a relay stuck on a slow caller must not hold the result.
const maxProgressWait = time.Second

// drain waits until the progress read before the call's result is relayed.
func (r *progressRoute) drain() {
	r.mu.Lock()
	if r.pending == 0 {
		r.mu.Unlock()
		return
	}
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	idle := r.idle
	r.mu.Unlock()
	t := time.NewTimer(maxProgressWait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		taskLog.Debugw("result passed on with progress still being relayed", "waited", maxProgressWait)
	}
}

var progressTokenField = []byte(progressPrefix)

// progressTransport makes the client connections the node calls through
// count the progress notifications they read for the node's own tokens.
type progressTransport struct {
	sdkmcp.Transport
	n *Node
}

func (t progressTransport) Connect(ctx context.Context) (sdkmcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return progressConn{c, t.n}, nil
}

type progressConn struct {
	sdkmcp.Connection
	n *Node
}

func (c progressConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.Connection.Read(ctx)
	if req, ok := msg.(*jsonrpc.Request); ok && req.Method == "notifications/progress" && bytes.Contains(req.Params, progressTokenField) {
		var p struct {
			Token any `json:"progressToken"`
		}
		if _, err := segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields); err == nil {
			if tok, ok := p.Token.(string); ok {
				if v, ok := c.n.progress.Load(tok); ok {
					v.(*progressRoute).arrived()
				}
			}
		}
	}
	return msg, err
}
