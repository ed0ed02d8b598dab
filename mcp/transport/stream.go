package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	segjson "github.com/segmentio/encoding/json"
)

// ErrFrameTooLarge is returned when a peer sends a JSON-RPC frame longer than
// the stream's limit. The stream is then reset.
var ErrFrameTooLarge = errors.New("mcp frame exceeds the size limit")

// StreamTransport is an [sdkmcp.Transport] over one libp2p stream: one MCP
// session, newline-delimited JSON-RPC in each direction.
type StreamTransport struct {
	Stream network.Stream
	// MaxMessageSize bounds one inbound frame; 0 means DefaultMaxMessageSize.
	MaxMessageSize int
	// OnBadFrame, if set, is told of each frame the peer broke (one that
	// does not decode, or is over MaxMessageSize) before the stream is reset.
	OnBadFrame func(error)
}

// Connect implements [sdkmcp.Transport].
func (t *StreamTransport) Connect(context.Context) (sdkmcp.Connection, error) {
	limit := t.MaxMessageSize
	if limit <= 0 {
		limit = DefaultMaxMessageSize
	}
	c := newStreamConn(t.Stream, limit)
	c.onBad = t.OnBadFrame
	return c, nil
}

func newStreamConn(s network.Stream, limit int) *streamConn {
	return &streamConn{s: s, r: bufio.NewReaderSize(s, 16<<10), limit: limit}
}

// streamConn reads frames on the caller's goroutine: the SDK reads from one
// goroutine and unblocks it by closing the connection, so no extra goroutine
// or channel hand-off per message is needed.
type streamConn struct {
	s     network.Stream
	r     *bufio.Reader
	limit int
	long  []byte // reused for frames longer than the reader's buffer

	wmu sync.Mutex

	closeOnce sync.Once
	mu        sync.Mutex
	broken    error // set when the peer broke the framing: Close resets
	onBad     func(error)
}

func (c *streamConn) SessionID() string { return "" }

func (c *streamConn) Read(context.Context) (jsonrpc.Message, error) {
	for {
		line, err := c.readFrame()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			continue // tolerate blank lines between frames
		}
		msg, err := decodeFrame(line)
		if err != nil {
			err = fmt.Errorf("bad mcp frame from %s: %w", c.s.Conn().RemotePeer(), err)
			c.badFrame(err)
			return nil, err
		}
		return msg, nil
	}
}

// readFrame returns the next line without its newline. The slice is valid
// until the next call.
func (c *streamConn) readFrame() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err == nil {
		if len(line)-1 > c.limit {
			return nil, c.tooLarge()
		}
		return line[:len(line)-1], nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			c.setBroken(io.ErrUnexpectedEOF)
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	c.long = append(c.long[:0], line...)
	for {
		if len(c.long) > c.limit {
			return nil, c.tooLarge()
		}
		line, err = c.r.ReadSlice('\n')
		c.long = append(c.long, line...)
		if err == nil {
			if len(c.long)-1 > c.limit {
				continue // reported at the top of the loop
			}
			frame := c.long[:len(c.long)-1]
			if cap(c.long) > 1<<20 {
				c.long = nil // do not pin a huge buffer for the session's life
			}
			return frame, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.setBroken(err)
			return nil, err
		}
	}
}

func (c *streamConn) tooLarge() error {
	err := fmt.Errorf("%w (%d bytes) from %s", ErrFrameTooLarge, c.limit, c.s.Conn().RemotePeer())
	c.badFrame(err)
	return err
}

// badFrame marks the stream broken by the peer and tells OnBadFrame.
func (c *streamConn) badFrame(err error) {
	c.setBroken(err)
	if c.onBad != nil {
		c.onBad(err)
	}
}

func (c *streamConn) Write(_ context.Context, msg jsonrpc.Message) error {
	data, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return fmt.Errorf("encode mcp message: %w", err)
	}
	return c.writeFrame(data)
}

// writeFrame writes one frame and its newline in one Write: a frame never
// interleaves with another and costs one muxer frame. It appends the newline
// in frame's backing array: for a frame from readFrame that is where its own
// newline was.
func (c *streamConn) writeFrame(frame []byte) error {
	frame = append(frame, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.s.Write(frame)
	return err
}

func (c *streamConn) setBroken(err error) {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.mu.Unlock()
}

// Close ends the session's stream: gracefully when the session ended
// normally, with a reset when the peer broke the framing.
func (c *streamConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.mu.Lock()
		broken := c.broken
		c.mu.Unlock()
		if broken != nil {
			err = c.s.Reset()
			return
		}
		err = c.s.Close()
	})
	return err
}

// wireFrame is one JSON-RPC message as it crosses the stream. Method stays raw
// so that a present but empty method is told apart from none.
type wireFrame struct {
	VersionTag string          `json:"jsonrpc"`
	ID         any             `json:"id,omitempty"`
	Method     json.RawMessage `json:"method"`
	Params     json.RawMessage `json:"params,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      *jsonrpc.Error  `json:"error,omitempty"`
}

// decodeFrame is jsonrpc.DecodeMessage without its 32 KiB decoder buffer per
// call: the same parser (segmentio) with the same flags, straight from the
// frame. RawMessage fields are copied, so line may be reused.
func decodeFrame(line []byte) (jsonrpc.Message, error) {
	if err := checkDepth(line, 1000); err != nil {
		return nil, err
	}
	var f wireFrame
	rest, err := segjson.Parse(line, &f, segjson.DontMatchCaseInsensitiveStructFields)
	if err != nil {
		return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unmarshaling jsonrpc message: data after the message")
	}
	if f.VersionTag != "2.0" {
		return nil, fmt.Errorf("invalid message version tag %q; expected %q", f.VersionTag, "2.0")
	}
	id, err := jsonrpc.MakeID(f.ID)
	if err != nil {
		return nil, err
	}
	if len(f.Method) > 0 {
		var method string
		if _, err := segjson.Parse(f.Method, &method, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
			return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
		}
		return &jsonrpc.Request{Method: method, ID: id, Params: f.Params}, nil
	}
	if !id.IsValid() {
		return nil, errors.New("JSON RPC invalid request")
	}
	resp := &jsonrpc.Response{ID: id, Result: f.Result}
	if f.Error != nil {
		resp.Error = f.Error
	}
	return resp, nil
}

// checkDepth bounds JSON nesting as the SDK's decoder does (1000 levels).
func checkDepth(data []byte, maxDepth int) error {
	var depth int
	var inString, escaped bool
	for _, b := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > maxDepth {
				return fmt.Errorf("json: exceeded maximum nesting depth of %d", maxDepth)
			}
		case '}', ']':
			if depth > 0 {
				depth--
			}
		}
	}
	return nil
}
