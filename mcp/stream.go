package mcp

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
}

// Connect implements [sdkmcp.Transport].
func (t *StreamTransport) Connect(context.Context) (sdkmcp.Connection, error) {
	limit := t.MaxMessageSize
	if limit <= 0 {
		limit = DefaultMaxMessageSize
	}
	return &streamConn{
		s:     t.Stream,
		r:     bufio.NewReaderSize(t.Stream, 16<<10),
		limit: limit,
	}, nil
}

// streamConn reads frames on the caller's goroutine: the SDK reads from one
// goroutine and unblocks it by closing the connection, so no extra goroutine
// or channel hand-off per message is needed.
type streamConn struct {
	s     network.Stream
	r     *bufio.Reader
	limit int
	long  []byte // reused for frames longer than the reader's buffer

	wmu  sync.Mutex
	wbuf []byte

	closeOnce sync.Once
	mu        sync.Mutex
	broken    error // set when the peer broke the framing: Close resets
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
		msg, err := jsonrpc.DecodeMessage(line)
		if err != nil {
			err = fmt.Errorf("bad mcp frame from %s: %w", c.s.Conn().RemotePeer(), err)
			c.setBroken(err)
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
	c.setBroken(err)
	return err
}

func (c *streamConn) Write(_ context.Context, msg jsonrpc.Message) error {
	data, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return fmt.Errorf("encode mcp message: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// One Write per frame: a frame never interleaves with another and costs
	// one muxer frame.
	c.wbuf = append(append(c.wbuf[:0], data...), '\n')
	_, err = c.s.Write(c.wbuf)
	if cap(c.wbuf) > 1<<20 {
		c.wbuf = nil
	}
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
