package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
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
	c := NewConn(t.Stream, limit)
	c.onBad = t.OnBadFrame
	return c, nil
}

// NewConn returns the connection of one MCP session on s, whose inbound
// frames are bounded to limit bytes (0: DefaultMaxMessageSize). A relay
// reads and writes it frame by frame; the SDK, as an [sdkmcp.Connection].
func NewConn(s network.Stream, limit int) *Conn {
	return NewConnSize(s, limit, 16<<10)
}

// NewConnSize is NewConn with a read buffer of buf bytes (frames longer
// than it are read all the same): for streams that stay open long and
// carry little, such as event subscriptions.
func NewConnSize(s network.Stream, limit, buf int) *Conn {
	if limit <= 0 {
		limit = DefaultMaxMessageSize
	}
	return &Conn{s: s, r: bufio.NewReaderSize(s, buf), limit: limit}
}

// Conn is one MCP session on a libp2p stream, read and written either as
// decoded messages (an [sdkmcp.Connection]) or as raw frames. It reads
// frames on the caller's goroutine: the SDK reads from one goroutine and
// unblocks it by closing the connection, so no extra goroutine or channel
// hand-off per message is needed.
type Conn struct {
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

// SessionID implements [sdkmcp.Connection]: a stream is one session, with
// no ID of its own.
func (c *Conn) SessionID() string { return "" }

// Read implements [sdkmcp.Connection]: it returns the next message, skipping
// blank lines. A frame that does not decode breaks the session.
func (c *Conn) Read(context.Context) (jsonrpc.Message, error) {
	for {
		line, err := c.ReadFrame()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			continue // tolerate blank lines between frames
		}
		msg, err := sdkcompat.DecodeMessage(line)
		if err != nil {
			err = fmt.Errorf("bad mcp frame from %s: %w", c.s.Conn().RemotePeer(), err)
			c.badFrame(err)
			return nil, err
		}
		return msg, nil
	}
}

// ReadFrame returns the next frame (line) without its newline. The slice is
// valid until the next call. A frame over the limit, or a stream that ends
// inside a frame, breaks the session.
func (c *Conn) ReadFrame() ([]byte, error) {
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

func (c *Conn) tooLarge() error {
	err := fmt.Errorf("%w (%d bytes) from %s", ErrFrameTooLarge, c.limit, c.s.Conn().RemotePeer())
	c.badFrame(err)
	return err
}

// badFrame marks the stream broken by the peer and tells OnBadFrame.
func (c *Conn) badFrame(err error) {
	c.setBroken(err)
	if c.onBad != nil {
		c.onBad(err)
	}
}

// Write implements [sdkmcp.Connection]: it writes msg as one frame. A
// message over the session's limit, which the peer would refuse (resetting
// the stream), is not sent: a response becomes an error response naming the
// limit, so that the caller learns why; a request or notification fails with
// a [*LimitError], and the session goes on.
func (c *Conn) Write(_ context.Context, msg jsonrpc.Message) error {
	data, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return fmt.Errorf("encode mcp message: %w", err)
	}
	if len(data) > c.limit {
		resp, ok := msg.(*jsonrpc.Response)
		lerr := &LimitError{Message: describe(msg), Size: len(data), Limit: c.limit, Request: !ok}
		if !ok {
			return lerr
		}
		if data, err = jsonrpc.EncodeMessage(&jsonrpc.Response{ID: resp.ID, Error: lerr.JSONRPC()}); err != nil {
			return fmt.Errorf("encode mcp message: %w", err)
		}
	}
	return c.WriteFrame(data)
}

// WriteFrame writes one frame and its newline in one Write: a frame never
// interleaves with another and costs one muxer frame. It appends the newline
// in frame's backing array: for a frame from ReadFrame that is where its own
// newline was. It is safe to call concurrently with Write.
func (c *Conn) WriteFrame(frame []byte) error {
	frame = append(frame, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.s.Write(frame)
	return err
}

// Break marks the session broken by the peer (err says how): Close then
// resets the stream instead of closing it.
func (c *Conn) Break(err error) { c.setBroken(err) }

func (c *Conn) setBroken(err error) {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.mu.Unlock()
}

// Close ends the session's stream: gracefully when the session ended
// normally, with a reset when the peer broke the framing.
func (c *Conn) Close() error {
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
