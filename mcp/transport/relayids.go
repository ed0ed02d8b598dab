package transport

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// relayIDs follows the ids of the requests a peer sent on a conn that a
// relay reads frame by frame, until the answers go back: Read does the same
// for the SDK, but a relay decodes nothing, so a request reusing an id in
// flight (or with a null id) would reach the other end, and the layers that
// key calls by id (the task layer's), as if it were new.
type relayIDs struct {
	mu      sync.Mutex
	pending map[any]struct{} // an id's value (int64 or string): the answer may spell it otherwise
}

// maxRelayIDs bounds the ids followed on one session: past it, new ones
// are not followed (an id the other end answers in another spelling, say
// 1.0 for 1, would otherwise stay forever).
const maxRelayIDs = 4096

// TrackRequestIDs makes ReadFrame follow the ids of the peer's requests
// until frames written with WriteFrame answer them: a request with a null
// id, or reusing an id in flight, is answered with an error naming it (and
// counted as a bad frame) instead of being returned. For a relay, which
// reads raw frames; call it before the first read.
func (c *Conn) TrackRequestIDs() { c.ids = &relayIDs{pending: map[any]struct{}{}} }

// admitRelayed reports whether the request ReadFrame just read (as its
// scanner saw it) may go on, answering it otherwise.
func (c *Conn) admitRelayed() (bool, error) {
	if !c.sc.method {
		return true, nil // an answer or a notification
	}
	raw := c.sc.rawID()
	if raw == nil {
		return true, nil // a notification (or an id too long to follow)
	}
	if bytes.Equal(raw, []byte("null")) {
		c.strike(fmt.Errorf("request from %s with a null id", c.from))
		return false, c.writeError(raw, jsonrpc.CodeInvalidRequest, "invalid request: a request with a null id; use a number or a string")
	}
	id := parseID(raw)
	if !id.IsValid() {
		return true, nil
	}
	key := id.Raw()
	c.ids.mu.Lock()
	_, dup := c.ids.pending[key]
	if !dup && len(c.ids.pending) < maxRelayIDs {
		c.ids.pending[key] = struct{}{}
	}
	c.ids.mu.Unlock()
	if dup {
		c.strike(fmt.Errorf("request from %s reuses id %s, in flight", c.from, idText(raw)))
		return false, c.writeError(raw, jsonrpc.CodeInvalidRequest, fmt.Sprintf("invalid request: id %s is already in use by a request in flight; use a new id", idText(raw)))
	}
	return true, nil
}

// answered forgets the id of the request frame answers, if it is one.
func (c *Conn) answered(frame []byte) {
	head, tail := frame, frame
	if len(head) > 512 {
		head = head[:512]
	}
	if len(tail) > frameTail {
		tail = tail[len(tail)-frameTail:]
	}
	id, method := frameID(head, tail)
	if method || !id.IsValid() {
		return
	}
	c.ids.mu.Lock()
	delete(c.ids.pending, id.Raw())
	c.ids.mu.Unlock()
}
