package node

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// relayTarget is a server of another peer that this node re-shares.
type relayTarget struct {
	peer   lpeer.ID
	server string
	ctx    context.Context // ends when the share ends: every relayed session stops
	cancel context.CancelFunc
}

// SharePeer re-shares the server called server on peer p under name: peers
// that cannot reach p (another network, behind NAT, not permitted there)
// reach it through this node. Each session opened on name is relayed to a
// session of its own on p, message by message, decoding nothing beyond the
// JSON-RPC envelope, so everything MCP carries passes through unchanged; only
// the task context of a tools/call is extended by this hop.
func (n *Node) SharePeer(name string, p lpeer.ID, server string) error {
	if err := mcp.ValidateServerName(server); err != nil {
		return err
	}
	if p == n.host.ID() {
		return fmt.Errorf("share %s: %s/%s is this node's own server", name, p, server)
	}
	if err := mcp.ValidateServerName(name); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(n.ctx)
	t := &relayTarget{peer: p, server: server, ctx: ctx, cancel: cancel}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		cancel()
		return ErrClosed
	}
	if _, ok := n.servers[name]; ok {
		cancel()
		return fmt.Errorf("a server named %q is already shared", name)
	}
	n.servers[name] = &sharedServer{relay: t, stop: cancel}
	n.host.SetStreamHandler(mcp.ProtocolID(name), n.serveRelay(name, t))
	n.changed()
	return nil
}

// serveRelay returns the stream handler of a re-shared server.
func (n *Node) serveRelay(name string, t *relayTarget) network.StreamHandler {
	return func(s network.Stream) {
		if !n.goOwned() {
			s.Reset()
			return
		}
		defer n.wg.Done()
		down, _ := (&mcp.StreamTransport{Stream: s, MaxMessageSize: n.cfg.maxMessageSize}).Connect(t.ctx)
		if err := n.relay(t, down, s.Conn().RemotePeer()); err != nil {
			log.Debugw("relay session ended", "server", name, "to", t.peer, "error", err)
		}
	}
}

// goOwned registers a goroutine with the node, unless it is closing.
func (n *Node) goOwned() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	return true
}

// relay opens a session to the target and pumps down's session through it.
func (n *Node) relay(t *relayTarget, down sdkmcp.Connection, caller lpeer.ID) error {
	dialCtx, cancel := context.WithTimeout(t.ctx, n.cfg.dialTimeout)
	s, err := n.host.NewStream(network.WithDialPeerTimeout(dialCtx, n.cfg.dialTimeout), t.peer, mcp.ProtocolID(t.server))
	cancel()
	if err != nil {
		// The caller sees its session end; it cannot get a better answer
		// before it has sent anything.
		down.Close()
		return fmt.Errorf("relay to %s/%s: %w", t.peer, t.server, n.dialError(t.peer, err))
	}
	up, _ := (&mcp.StreamTransport{Stream: s, MaxMessageSize: n.cfg.maxMessageSize}).Connect(t.ctx)
	return mcp.Pump(t.ctx, down, up, n.relayRewrite(caller))
}

// relayRewrite extends the task context of each tools/call by this hop, so
// that the serving node's guard sees a path that ends with its caller (this
// node), loops through this node are refused, and budgets and deadlines
// shrink here too. Everything else passes untouched.
func (n *Node) relayRewrite(caller lpeer.ID) mcp.Rewrite {
	self := n.host.ID().String()
	if caller == n.host.ID() {
		return nil // the node's own calls already end their path with it
	}
	return func(msg jsonrpc.Message) (jsonrpc.Message, jsonrpc.Message, error) {
		req, ok := msg.(*jsonrpc.Request)
		if !ok || req.Method != "tools/call" || len(req.Params) == 0 {
			return msg, nil, nil
		}
		var head struct {
			Meta map[string]json.RawMessage `json:"_meta"`
		}
		if _, err := segjson.Parse(req.Params, &head, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
			return msg, nil, nil // not the relay's to judge: the server answers bad params
		}
		raw, ok := head.Meta[tasks.MetaKey]
		if !ok {
			return msg, nil, nil
		}
		var wire string
		if err := json.Unmarshal(raw, &wire); err != nil {
			return refuse(req, fmt.Sprintf("bad task context: %v", err))
		}
		m, err := tasks.Parse(wire)
		if err != nil {
			return refuse(req, err.Error())
		}
		if err := tasks.Check(m, self, caller.String()); err != nil {
			return refuse(req, err.Error())
		}
		next := *m
		next.Path = append(append([]string(nil), m.Path...), self)
		next.Budget--
		if left := m.Timeout(); left > 0 {
			next.TimeoutMs = max((left - tasks.Margin(left)).Milliseconds(), 1)
		}
		params, err := replaceMeta(req.Params, tasks.MetaKey, next.String())
		if err != nil {
			return refuse(req, err.Error())
		}
		out := *req
		out.Params = params
		return &out, nil, nil
	}
}

// refuse answers a request the relay will not pass on (a notification,
// having no ID, is dropped).
func refuse(req *jsonrpc.Request, reason string) (jsonrpc.Message, jsonrpc.Message, error) {
	if !req.ID.IsValid() {
		return nil, nil, nil
	}
	return nil, &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: reason}}, nil
}

// replaceMeta sets params._meta[key] = value, leaving every other field as
// raw bytes.
func replaceMeta(params json.RawMessage, key, value string) (json.RawMessage, error) {
	var top map[string]json.RawMessage
	if _, err := segjson.Parse(params, &top, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, err
	}
	var meta map[string]json.RawMessage
	if _, err := segjson.Parse(top["_meta"], &meta, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return nil, err
	}
	v, err := json.Marshal(value)
	if err != nil {
		return nil, err
	}
	meta[key] = v
	if top["_meta"], err = segjson.Marshal(meta); err != nil {
		return nil, err
	}
	return segjson.Marshal(top)
}
