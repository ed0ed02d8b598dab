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

// ErrFrameTooLarge is what a frame longer than the limit is (errors.Is): a
// [*FrameTooLargeError] when the frame was skipped and the session may go
// on, a plain error when it could not be (the stream ended inside it, or it
// ran on past what a reader skips), and the session is broken.
var ErrFrameTooLarge = errors.New("mcp frame exceeds the size limit")

// CodeMessageTooLarge is the JSON-RPC error code of a request, or of the
// answer to one, that was over a node's message size limit.
const CodeMessageTooLarge int64 = -32032

// StreamTransport is an [sdkmcp.Transport] over one libp2p stream: one MCP
// session, newline-delimited JSON-RPC in each direction.
type StreamTransport struct {
	Stream network.Stream
	// MaxMessageSize bounds one inbound frame; 0 means DefaultMaxMessageSize.
	MaxMessageSize int
	// OnBadFrame, if set, is told of each frame the peer broke (one that
	// does not decode, or is over MaxMessageSize).
	OnBadFrame func(error)
}

// Connect implements [sdkmcp.Transport].
func (t *StreamTransport) Connect(context.Context) (sdkmcp.Connection, error) {
	c := NewConn(t.Stream, t.MaxMessageSize)
	c.onBad = t.OnBadFrame
	return c, nil
}

// byteStream is what a Conn frames: a libp2p stream, a program's standard
// input and output, one end of a net.Pipe.
type byteStream interface {
	io.ReadWriter
	Close() error
	Reset() error
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
	return newConn(s, s.Conn().RemotePeer().String(), limit, buf)
}

// NewPipeConn is NewConn for a byte stream that is not a libp2p stream: a
// program's standard input and output, one end of a net.Pipe. from names
// the other end in errors; Close closes rw (there is no reset).
func NewPipeConn(rw io.ReadWriteCloser, from string, limit int) *Conn {
	return newConn(closeOnReset{rw}, from, limit, 16<<10)
}

type closeOnReset struct{ io.ReadWriteCloser }

func (c closeOnReset) Reset() error { return c.Close() }

func newConn(s byteStream, from string, limit, buf int) *Conn {
	if limit <= 0 {
		limit = DefaultMaxMessageSize
	}
	return &Conn{s: s, from: from, r: bufio.NewReaderSize(s, buf), limit: limit}
}

// Conn is one MCP session on a byte stream, read and written either as
// decoded messages (an [sdkmcp.Connection]) or as raw frames (for a relay).
// It reads frames on the caller's goroutine: the SDK reads from one
// goroutine and unblocks it by closing the connection, so no extra
// goroutine or channel hand-off per message is needed.
type Conn struct {
	s     byteStream
	from  string // the other end, for errors
	r     *bufio.Reader
	limit int
	long  []byte // reused for frames longer than the reader's buffer

	wmu sync.Mutex

	closeOnce sync.Once
	mu        sync.Mutex
	broken    error // set when the peer broke the framing: Close resets
	onBad     func(error)
}

// OnBadFrame tells f of each frame the peer breaks from now on (one that
// does not decode, or is over the limit).
func (c *Conn) OnBadFrame(f func(error)) { c.onBad = f }

// SessionID implements [sdkmcp.Connection]: a stream is one session, with
// no ID of its own.
func (c *Conn) SessionID() string { return "" }

// Limit returns the largest frame the conn reads.
func (c *Conn) Limit() int { return c.limit }

// Read implements [sdkmcp.Connection]: it returns the next message, skipping
// blank lines. A frame that does not decode breaks the session. A frame over
// the limit does not: a request in it is answered here with an error naming
// the limit, and an answer in it becomes that error, so that the call
// waiting for it fails saying why (see [FrameTooLargeError.Reply]).
func (c *Conn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		line, err := c.ReadFrame()
		var tooLarge *FrameTooLargeError
		if errors.As(err, &tooLarge) {
			if reply := tooLarge.Reply(); reply != nil {
				if tooLarge.Request {
					if err := c.Write(ctx, reply); err != nil {
						return nil, err
					}
					continue
				}
				return reply, nil
			}
			continue // a notification: nothing waits for it
		}
		if err != nil {
			return nil, err
		}
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			continue // tolerate blank lines between frames
		}
		msg, err := sdkcompat.DecodeMessage(line)
		if err != nil {
			err = fmt.Errorf("bad mcp frame from %s: %w", c.from, err)
			c.badFrame(err)
			return nil, err
		}
		return msg, nil
	}
}

// ReadFrame returns the next frame (line) without its newline. The slice is
// valid until the next call. A stream that ends inside a frame breaks the
// session. A frame over the limit is skipped and reported as a
// [*FrameTooLargeError], after which the session goes on, unless it runs on
// past maxSkip times the limit (or the stream ends inside it): then the
// session is broken.
func (c *Conn) ReadFrame() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err == nil {
		if len(line)-1 > c.limit {
			frame := line[:len(line)-1]
			return nil, c.skipped(frame, frame, len(frame))
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
			return nil, c.skip()
		}
		line, err = c.r.ReadSlice('\n')
		c.long = append(c.long, line...)
		if err == nil {
			frame := c.long[:len(c.long)-1]
			if len(frame) > c.limit {
				err := c.skipped(frame[:min(len(frame), frameHead)], frame[len(frame)-min(len(frame), frameTail):], len(frame))
				c.long = nil
				return nil, err
			}
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

// maxSkip bounds, in multiples of the limit, how much of a frame over the
// limit is read past: a peer that never ends its line breaks the session.
const maxSkip = 4

// skip reads past the rest of the frame that c.long starts (already over
// the limit), keeping its first and last bytes to tell what it was.
func (c *Conn) skip() error {
	head := append([]byte(nil), c.long[:min(len(c.long), frameHead)]...)
	size := len(c.long)
	tail := append(make([]byte, 0, 2*frameTail), c.long[len(c.long)-min(len(c.long), frameTail):]...)
	c.long = nil
	for {
		line, err := c.r.ReadSlice('\n')
		size += len(line)
		if len(line) >= frameTail {
			tail = append(tail[:0], line[len(line)-frameTail:]...)
		} else {
			tail = append(tail, line...)
			tail = tail[len(tail)-min(len(tail), frameTail):]
		}
		switch {
		case err == nil:
			return c.skipped(head, tail[:len(tail)-1], size-1)
		case !errors.Is(err, bufio.ErrBufferFull):
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.setBroken(err)
			return fmt.Errorf("%w: %d bytes or more from %s, then %v", ErrFrameTooLarge, size, c.from, err)
		case size > maxSkip*c.limit:
			err := fmt.Errorf("%w: over %d bytes from %s without an end of line (limit %d)", ErrFrameTooLarge, size, c.from, c.limit)
			c.badFrame(err)
			return err
		}
	}
}

// skipped reports a whole frame of size bytes over the limit, whose first
// and last bytes are head and tail.
func (c *Conn) skipped(head, tail []byte, size int) error {
	err := &FrameTooLargeError{Size: size, Limit: c.limit, From: c.from}
	err.ID, err.Request = frameID(head, tail)
	if c.onBad != nil {
		c.onBad(err) // the sender's fault, though the session goes on
	}
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
