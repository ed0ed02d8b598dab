package node

import (
	"bytes"
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
		caller := s.Conn().RemotePeer()
		if !n.mayOpenRelay(caller, name) {
			s.Reset()
			return
		}
		up, err := n.openRelay(t)
		if err != nil {
			s.Reset()
			log.Debugw("relay session refused", "server", name, "error", err)
			return
		}
		relay := mcp.NewStreamRelay(s, up, n.cfg.maxMessageSize)
		toServer, toClient, end := n.relayTrust(caller, name, t, n.relayFrames(caller), relay.SendToClient)
		defer end(nil)
		relay.ServerLost = end // the target's side ended: answer what waits on it
		if err := relay.Run(t.ctx, toServer, toClient); err != nil {
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

// openRelay opens the stream to the target of a re-shared server.
func (n *Node) openRelay(t *relayTarget) (network.Stream, error) {
	dialCtx, cancel := context.WithTimeout(t.ctx, n.cfg.dialTimeout)
	defer cancel()
	s, err := n.host.NewStream(mcpStream(network.WithDialPeerTimeout(dialCtx, n.cfg.dialTimeout)), t.peer, mcp.ProtocolID(t.server))
	if err != nil {
		// The caller sees its session end: it cannot get a better answer
		// before it has sent anything.
		return nil, fmt.Errorf("relay to %s/%s: %w", t.peer, t.server, n.dialError(t.peer, err))
	}
	return s, nil
}

// relay pumps down's session (a connection in memory, from the node
// itself) to the target.
func (n *Node) relay(t *relayTarget, down sdkmcp.Connection, caller lpeer.ID) error {
	s, err := n.openRelay(t)
	if err != nil {
		down.Close()
		return err
	}
	up, _ := (&mcp.StreamTransport{Stream: s, MaxMessageSize: n.cfg.maxMessageSize}).Connect(t.ctx)
	return mcp.Pump(t.ctx, down, up, n.relayRewrite(caller))
}

// taskField marks a frame whose task context a relay must extend.
var taskField = []byte(`"` + tasks.MetaKey + `"`)

// mayHoldTask reports whether b may hold the task field: written plainly,
// or with a JSON escape that spells some of its characters (\uXXXX, \/),
// which the next node's decoder reads as the same key. A frame for which it
// is false passes undecoded; one that hides the key behind escapes must
// not, or the next node would read a path the relay never checked.
func mayHoldTask(b []byte) bool {
	return bytes.Contains(b, taskField) || hasKeyEscape(b)
}

func hasKeyEscape(b []byte) bool {
	return bytes.Contains(b, []byte(`\u`)) || bytes.Contains(b, []byte(`\/`))
}

// relayFrames extends the task context of each tools/call by this hop, so
// that the serving node's guard sees a path that ends with its caller (this
// node), loops through this node are refused, and budgets and deadlines
// shrink here too. A frame without a task context passes undecoded; one with
// it is decoded to its envelope, and the field is replaced in place.
func (n *Node) relayFrames(caller lpeer.ID) mcp.FrameRewrite {
	if caller == n.host.ID() {
		return nil // the node's own calls already end their path with it
	}
	self, from := n.host.ID().String(), caller.String()
	return func(frame []byte) ([]byte, []byte, error) {
		if !mayHoldTask(frame) {
			return frame, nil, nil
		}
		msg, err := mcp.DecodeFrame(frame)
		if err != nil {
			return nil, nil, err
		}
		req, ok := msg.(*jsonrpc.Request)
		if !ok || req.Method != "tools/call" {
			return frame, nil, nil
		}
		old, next, refusal := extendTask(req.Params, self, from)
		switch {
		case refusal != "":
			return nil, refusalFrame(req, refusal), nil
		case old == "":
			return frame, nil, nil
		}
		if out, ok := spliceMeta(frame, old, next); ok {
			return out, nil, nil
		}
		params, err := replaceMeta(req.Params, next)
		if err != nil {
			return nil, refusalFrame(req, err.Error()), nil
		}
		req.Params = params
		out, err := jsonrpc.EncodeMessage(req)
		return out, nil, err
	}
}

// relayRewrite is relayFrames for a Pump, on decoded messages.
func (n *Node) relayRewrite(caller lpeer.ID) mcp.Rewrite {
	if caller == n.host.ID() {
		return nil
	}
	self, from := n.host.ID().String(), caller.String()
	return func(msg jsonrpc.Message) (jsonrpc.Message, jsonrpc.Message, error) {
		req, ok := msg.(*jsonrpc.Request)
		if !ok || req.Method != "tools/call" || !mayHoldTask(req.Params) {
			return msg, nil, nil
		}
		old, next, refusal := extendTask(req.Params, self, from)
		switch {
		case refusal != "":
			return nil, refusalMessage(req, refusal), nil
		case old == "":
			return msg, nil, nil
		}
		params, ok := spliceMeta(req.Params, old, next)
		if !ok {
			var err error
			if params, err = replaceMeta(req.Params, next); err != nil {
				return nil, refusalMessage(req, err.Error()), nil
			}
		}
		out := *req
		out.Params = params
		return &out, nil, nil
	}
}

// extendTask reads the task context of a tools/call's params and returns
// it and the context to pass on from self, or why the call is refused. old
// is empty if the call carries no task context.
func extendTask(params json.RawMessage, self, caller string) (old, next, refusal string) {
	// Decode only the one _meta field the relay needs; the rest of the
	// params, arguments included, is skipped. The field is read as the next
	// node's SDK reads it (same parser; the last of duplicate keys wins,
	// whatever its type), so the relay judges the very value the next node
	// will see.
	// (A pointer, as the SDK's map: "_meta": null clears what came before.)
	var head struct {
		Meta *struct {
			Task json.RawMessage `json:"io.mcpmesh/task"`
		} `json:"_meta"`
	}
	if _, err := segjson.Parse(params, &head, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return "", "", "" // not the relay's to judge: the server answers bad params
	}
	if head.Meta == nil {
		return "", "", ""
	}
	raw := head.Meta.Task
	if len(raw) == 0 || string(raw) == "null" {
		return "", "", "" // no task context: the next node makes the relay's call a root
	}
	var task string
	if _, err := segjson.Parse(raw, &task, 0); err != nil {
		return "", "", fmt.Sprintf("_meta %q: want a string", tasks.MetaKey)
	}
	m, err := tasks.Parse(task)
	if err != nil {
		return "", "", err.Error()
	}
	if err := tasks.Check(m, self, caller); err != nil {
		return "", "", err.Error()
	}
	n := *m
	n.Path = append(append([]string(nil), m.Path...), self)
	n.Budget--
	if left := m.Timeout(); left > 0 {
		n.TimeoutMs = max((left - tasks.Margin(left)).Milliseconds(), 1)
	}
	return task, n.String(), ""
}

// spliceMeta replaces the task field "key":"old" with "key":"next" in b,
// where it is written the compact way (as Go and most encoders write it)
// and only once; ok is false otherwise. The key must appear once in b, and
// b hold no escape that could spell it another way: then that one key is
// the one the next node reads, and not, say, a field of the arguments.
func spliceMeta(b []byte, old, next string) ([]byte, bool) {
	oldValue, _ := json.Marshal(old)
	newValue, _ := json.Marshal(next)
	return spliceField(b, taskField, oldValue, newValue)
}

// spliceField replaces "key":old with "key":next in b (key quoted, values
// raw JSON), on the terms of spliceMeta.
func spliceField(b, key, old, next []byte) ([]byte, bool) {
	if bytes.Count(b, key) != 1 || hasKeyEscape(b) {
		return nil, false
	}
	oldField := append(append(append([]byte(nil), key...), ':'), old...)
	newField := append(append(append([]byte(nil), key...), ':'), next...)
	i := bytes.Index(b, oldField)
	if i < 0 || bytes.Index(b[i+len(oldField):], oldField) >= 0 {
		return nil, false
	}
	out := make([]byte, 0, len(b)+len(newField)-len(oldField)+1) // +1: room for the frame's newline
	out = append(append(append(out, b[:i]...), newField...), b[i+len(oldField):]...)
	return out, true
}

// refusalFrame answers a request the relay will not pass on, as a frame
// (nil for a notification, which has no answer).
func refusalFrame(req *jsonrpc.Request, reason string) []byte {
	msg := refusalMessage(req, reason)
	if msg == nil {
		return nil
	}
	out, _ := jsonrpc.EncodeMessage(msg)
	return out
}

func refusalMessage(req *jsonrpc.Request, reason string) jsonrpc.Message {
	if !req.ID.IsValid() {
		return nil
	}
	return &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: reason}}
}

// replaceMeta sets params._meta[task key] to next, re-encoding the top
// level of params (the other fields stay raw bytes).
func replaceMeta(params json.RawMessage, next string) (json.RawMessage, error) {
	v, err := json.Marshal(next)
	if err != nil {
		return nil, err
	}
	return setMetaField(params, tasks.MetaKey, v)
}
