package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"time"

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
	// Guard bounds what the peer can make the session cost beyond the size
	// of a frame; its MaxValues and MaxDepth default to DefaultMaxValues
	// and DefaultMaxDepth (-1: none), the rest to nothing. A node serves
	// its sessions with DefaultGuard, its limits' budget, or what its
	// limits configure.
	Guard Guard
	// Signs, if set, is told of the peer's signs of life (see
	// [Conn.SetSigns]).
	Signs Signs
	// OnBadFrame, if set, is told of each frame the peer broke (one that
	// does not decode, that is over MaxMessageSize or a bound of the
	// Guard, that reuses an id in flight or has a null one) and of each
	// frame refused over the peer's own budget.
	OnBadFrame func(error)
}

// Connect implements [sdkmcp.Transport].
func (t *StreamTransport) Connect(context.Context) (sdkmcp.Connection, error) {
	return t.Conn(), nil
}

// Conn returns the connection that Connect would, for a server that looks
// at the session before the SDK does (AwaitRequest); hand it to the SDK
// with [Conn.Transport].
func (t *StreamTransport) Conn() *Conn {
	c := NewConn(t.Stream, t.MaxMessageSize)
	c.onBad = t.OnBadFrame
	if t.Signs != nil {
		c.SetSigns(t.Signs)
	}
	g := t.Guard
	if g.MaxValues == 0 {
		g.MaxValues = DefaultMaxValues
	}
	if g.MaxDepth == 0 {
		g.MaxDepth = DefaultMaxDepth
	}
	c.SetGuard(g)
	return c
}

// OnBadFrame sets what is told of each frame the peer broke or that was
// refused over a bound of its own (see StreamTransport.OnBadFrame): a
// relay reading frames with ReadFrame strikes the peer with it. Call it
// before the first read.
func (c *Conn) OnBadFrame(f func(error)) { c.onBad = f }

// Transport returns an [sdkmcp.Transport] whose Connect returns c.
func (c *Conn) Transport() sdkmcp.Transport { return connTransport{c} }

type connTransport struct{ c *Conn }

func (t connTransport) Connect(context.Context) (sdkmcp.Connection, error) { return t.c, nil }

// AwaitRequest returns once the peer has sent something other than blank
// lines, without reading it, or the session's handshake timeout (its
// Guard's) has passed, the stream ended or the conn was closed (an
// error). A server calls it before it builds a session on c, so that
// streams that never speak cost a read and no session.
func (c *Conn) AwaitRequest() error {
	c.setReadDeadline(false)
	for {
		b, err := c.r.Peek(1)
		if err != nil {
			return c.readError(err)
		}
		switch b[0] {
		case '\n', '\r', ' ', '\t':
			c.r.Discard(1)
			continue
		}
		return nil
	}
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
	c := &Conn{s: s, from: from, r: bufio.NewReaderSize(s, min(buf, silentBuffer)), bufSize: buf, limit: limit, sc: newScanner(), done: make(chan struct{})}
	c.fl.init(time.Now())
	return c
}

// silentBuffer is the read buffer of a conn until its first frame: a
// server's stream that never speaks (AwaitRequest) costs this, not the
// full buffer, and a flood of such streams is a flood of small buffers.
const silentBuffer = 256

// grow gives the reader its full buffer, at the first frame, keeping what
// the small one holds ahead. It is called on the reading goroutine.
func (c *Conn) grow() {
	if c.r.Size() >= c.bufSize {
		return
	}
	src := c.src()
	if n := c.r.Buffered(); n > 0 {
		ahead, _ := c.r.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), src)
	}
	c.r = bufio.NewReaderSize(src, c.bufSize)
}

// Signs is told of a peer's signs of life: bytes read from it, and writes
// to it that went on against backpressure. A liveness checker whose ping
// waits behind a large message on the same connection takes them for an
// answer (reach.Signs).
type Signs interface{ Alive() }

// SetSigns tells signs of each read that brings bytes from the peer and of
// each chunk of a large frame the stream takes (signChunk: a write that
// long fills the transport's buffers, so that it goes on only as the peer
// acknowledges). Call it before the first read.
func (c *Conn) SetSigns(s Signs) {
	c.signs = s
	c.r.Reset(c.src())
}

// signChunk is the size of the writes a frame is cut into when its conn
// tells signs of life: one is told as each is taken.
const signChunk = 32 << 10

// src is what the reader reads: the stream, through the signs of life.
func (c *Conn) src() io.Reader {
	if c.signs == nil {
		return c.s
	}
	return signsReader{c.s, c.signs}
}

type signsReader struct {
	r     io.Reader
	signs Signs
}

func (r signsReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.signs.Alive()
	}
	return n, err
}

// SetGuard bounds what the peer can make the session cost (see Guard); a
// bound of g that is 0 or less is none. Call it before the first read.
func (c *Conn) SetGuard(g Guard) {
	c.guard = g
	if g.HandshakeTimeout > 0 || g.IdleTimeout > 0 {
		c.deadlines, _ = c.s.(readDeadliner)
	}
}

// readDeadliner is a stream whose reads can time out (a libp2p stream).
type readDeadliner interface{ SetReadDeadline(time.Time) error }

// Activity says how the session stands (see [Activity]).
func (c *Conn) Activity() Activity { return c.fl.state() }

// Conn is one MCP session on a byte stream, read and written either as
// decoded messages (an [sdkmcp.Connection]) or as raw frames (for a relay).
// It reads frames on the caller's goroutine: the SDK reads from one
// goroutine and unblocks it by closing the connection, so no extra
// goroutine or channel hand-off per message is needed.
type Conn struct {
	s    byteStream
	from string // the other end, for errors
	r    *bufio.Reader
	// bufSize is r's size from the first frame on (see grow).
	bufSize int
	limit   int
	long    []byte // reused for frames longer than the reader's buffer

	guard     Guard
	sc        scanner       // the frame being read
	ids       *relayIDs     // the peer's requests in flight, for a relay (TrackRequestIDs)
	held      int64         // budget the frame ReadFrame returned last holds, returned at the next ReadFrame unless a request keeps it
	fl        flight        // the peer's requests in flight
	deadlines readDeadliner // nil: no timeouts
	dlMu      sync.Mutex
	dl        time.Time // the read deadline set last

	wmu sync.Mutex

	inGate bool          // the frame being read holds a slot of guard.Large
	done   chan struct{} // closed by Close: a wait for the gate ends

	closeOnce sync.Once
	mu        sync.Mutex
	broken    error // set when the peer broke the framing: Close resets
	onBad     func(error)
	signs     Signs // nil: none told
}

// SessionID implements [sdkmcp.Connection]: a stream is one session, with
// no ID of its own.
func (c *Conn) SessionID() string { return "" }

// Limit returns the largest frame the conn reads.
func (c *Conn) Limit() int { return c.limit }

// Read implements [sdkmcp.Connection]: it returns the next message, skipping
// blank lines. A frame that does not decode breaks the session. A frame the
// conn refuses does not (over the size limit, over a bound of its Guard, or
// over its budget): a request in it is answered here with an error that
// says why, and an answer in it becomes that error, so that the call
// waiting for it fails saying why.
//
// Requests go to the SDK under ids of the conn's own, and their answers go
// back with the ids the peer sent, byte for byte (see flight). A request
// whose id is null or already in flight is answered with an error here. At
// the Guard's window, Read waits for an answer before it reads on; at the
// end of the stream, it waits until every request read has been answered,
// so that a peer that closes its side after its requests still gets its
// answers.
func (c *Conn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.read(ctx)
	if err != nil {
		c.giveBack()
	}
	return msg, err
}

func (c *Conn) read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		if c.guard.Window > 0 && !c.fl.wait(c.guard.Window) {
			return nil, net.ErrClosed
		}
		if c.guard.Paced > 0 && !c.fl.waitFor(c.guard.Paced, PaceWait) {
			return nil, net.ErrClosed
		}
		c.setReadDeadline(false)
		line, err := c.ReadFrame()
		var refused *FrameRefusedError
		if errors.As(err, &refused) {
			if msg, err := c.refused(ctx, refused); msg != nil || err != nil {
				return msg, err
			}
			continue
		}
		if err != nil {
			return nil, c.readError(err)
		}
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			continue // tolerate blank lines between frames
		}
		msg, rawID, err := sdkcompat.DecodeFrame(line)
		if err != nil {
			err = fmt.Errorf("bad mcp frame from %s: %w", c.from, err)
			c.badFrame(err)
			return nil, err
		}
		req, ok := msg.(*jsonrpc.Request)
		if !ok {
			return msg, nil
		}
		switch {
		case rawID == nil:
			if req.Method == cancelledMethod {
				c.cancelled(req)
			}
			return req, nil
		case bytes.Equal(rawID, []byte("null")):
			c.strike(fmt.Errorf("request %q from %s with a null id", req.Method, c.from))
			if err := c.writeError(rawID, jsonrpc.CodeInvalidRequest, fmt.Sprintf("invalid request: %q has a null id; use a number or a string", req.Method)); err != nil {
				return nil, err
			}
			continue
		}
		if c.overWindow() {
			c.strike(fmt.Errorf("%s has more than %d requests outstanding on one session", c.from, c.guard.Window))
			if err := c.writeError(rawID, CodeLimited, fmt.Sprintf("too many requests outstanding: more than %d sent on this session and not answered (the node's window per session); wait for answers before sending more", c.guard.Window)); err != nil {
				return nil, err
			}
			continue
		}
		id, inFlight, ok := c.fl.admit(rawID, c.held, time.Now())
		if !ok {
			c.strike(fmt.Errorf("request %q from %s reuses id %s, in flight", req.Method, c.from, idText(rawID)))
			if err := c.writeError(rawID, jsonrpc.CodeInvalidRequest, fmt.Sprintf("invalid request: id %s is already in use by a request in flight; use a new id", idText(rawID))); err != nil {
				return nil, err
			}
			continue
		}
		c.held = 0 // the request holds it until it is answered
		req.ID = id
		if inFlight > 1 {
			// A peer with requests in flight already waits its turn
			// behind the goroutines ready to run, other peers' requests
			// among them, before this one is handed on: so a peer that
			// pipelines gets about one request served per turn of the
			// run queue, as a peer that waits for each answer does.
			runtime.Gosched()
		}
		return req, nil
	}
}

// overWindow reports whether the request just read would take the
// peer's requests outstanding on this session over the Guard's window:
// those in flight, this one, and those already sent behind it (the
// complete frames in the read buffer). A peer that pipelines is paced
// (Guard.Paced), so its backlog piles up unread; past the window it is
// refused, as a peer over its calls in flight is, and the ban comes.
func (c *Conn) overWindow() bool {
	w := c.guard.Window
	if w <= 0 {
		return false
	}
	n := c.fl.count() + 1
	if n < c.guard.Paced {
		return false
	}
	if n > w {
		return true
	}
	ahead, _ := c.r.Peek(c.r.Buffered())
	return n+bytes.Count(ahead, []byte{'\n'}) > w
}

const cancelledMethod = "notifications/cancelled"

// cancelled gives a notifications/cancelled the SDK's id of the request it
// names, if that request is in flight (else it names nothing the SDK knows,
// and the SDK ignores it).
func (c *Conn) cancelled(req *jsonrpc.Request) {
	var params map[string]json.RawMessage
	if json.Unmarshal(req.Params, &params) != nil {
		return
	}
	raw := bytes.TrimSpace(params["requestId"])
	if raw == nil {
		return
	}
	if n, ok := c.fl.sdkID(raw); ok {
		params["requestId"] = sdkIDText(n)
		if p, err := json.Marshal(params); err == nil {
			req.Params = p
		}
	}
}

// refused answers a frame that ReadFrame refused, or turns it into the
// message to return: an error answer to the call it answered.
func (c *Conn) refused(ctx context.Context, r *FrameRefusedError) (jsonrpc.Message, error) {
	if r.RawID == nil || bytes.Equal(r.RawID, []byte("null")) || r.Request || !r.Response {
		return nil, c.AnswerRefused(r)
	}
	id, err := sdkcompat.DecodeID(r.RawID)
	if err != nil {
		return nil, nil
	}
	return &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: r.Code, Message: r.text()}}, nil
}

// AnswerRefused answers, on c, a request that ReadFrame refused (r), with
// a JSON-RPC error carrying the id as sent and naming the limit; a refused
// notification, answer, or frame whose id was not seen gets nothing. A
// relay reading raw frames calls it for each *FrameRefusedError.
func (c *Conn) AnswerRefused(r *FrameRefusedError) error {
	if r.RawID == nil || bytes.Equal(r.RawID, []byte("null")) || !(r.Request || !r.Response) {
		return nil
	}
	return c.writeError(r.RawID, r.Code, r.text())
}

// text is what the error answer standing for r says.
func (r *FrameRefusedError) text() string {
	var tooLarge *FrameTooLargeError
	if errors.As(r, &tooLarge) {
		if reply := tooLarge.Reply(); reply != nil {
			return reply.Error.(*jsonrpc.Error).Message
		}
	}
	return r.message()
}

// writeError answers the request whose id the peer sent as rawID with a
// JSON-RPC error.
func (c *Conn) writeError(rawID []byte, code int64, msg string) error {
	text, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	frame := make([]byte, 0, 64+len(rawID)+len(text))
	frame = append(frame, `{"jsonrpc":"2.0","id":`...)
	frame = append(frame, rawID...)
	frame = append(frame, `,"error":{"code":`...)
	frame = strconv.AppendInt(frame, code, 10)
	frame = append(frame, `,"message":`...)
	frame = append(frame, text...)
	frame = append(frame, "}}"...)
	return c.WriteFrame(frame)
}

// readError says why the session's reading ended: at the end of the
// stream, once every request read has been answered.
func (c *Conn) readError(err error) error {
	var ne net.Error
	switch {
	case err == io.EOF: // exactly: a connection that closed wraps io.EOF in a reset
		c.fl.wait(1)
		return io.EOF
	case errors.As(err, &ne) && ne.Timeout():
		if c.fl.state().Requests == 0 {
			err = fmt.Errorf("no request from %s within %v of opening the session: %w", c.from, c.guard.HandshakeTimeout, err)
			c.setBroken(err)
			return err
		}
		return fmt.Errorf("no request from %s for %v: session closed: %w", c.from, c.guard.IdleTimeout, err)
	}
	return err
}

// setReadDeadline bounds how long the next frame may take to come: until
// the handshake's end while no request has come, the idle timeout from the
// last answer while none is in flight (set when that answer goes out:
// answered), and no bound while one is in flight (its handler may take
// long).
func (c *Conn) setReadDeadline(answered bool) {
	if c.deadlines == nil {
		return
	}
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	a := c.fl.state()
	d := c.dl
	switch {
	case a.InFlight > 0:
		d = time.Time{}
	case a.Requests == 0:
		if c.guard.HandshakeTimeout > 0 {
			d = a.Opened.Add(c.guard.HandshakeTimeout)
		}
	case answered && c.guard.IdleTimeout > 0:
		d = a.Last.Add(c.guard.IdleTimeout)
	}
	if !d.Equal(c.dl) {
		c.dl = d
		c.deadlines.SetReadDeadline(d)
	}
}

// Abort ends the session at once, whatever it waits for (answers in flight,
// at its window or at the end of the stream): its stream is reset.
func (c *Conn) Abort() {
	c.setBroken(net.ErrClosed)
	c.Close()
}

// strike tells OnBadFrame of a frame the peer got wrong, though the
// session goes on.
func (c *Conn) strike(err error) {
	if c.onBad != nil {
		c.onBad(err)
	}
}

// ReadFrame returns the next frame (line) without its newline. The slice is
// valid until the next call. A stream that ends inside a frame breaks the
// session. A frame over the limit, over a bound of the conn's Guard or over
// its budget is skipped and reported as a [*FrameRefusedError] (one over
// the limit wraps a [*FrameTooLargeError]), after which the session goes
// on, unless it runs on past maxSkip times the limit (or the stream ends
// inside it): then the session is broken. The Guard's bounds are checked
// as the frame arrives, before it is all read.
func (c *Conn) ReadFrame() ([]byte, error) {
	for {
		frame, err := c.readFrame()
		if c.inGate {
			c.inGate = false
			c.guard.Large.leave()
		}
		if err != nil || c.ids == nil {
			return frame, err
		}
		if ok, err := c.admitRelayed(); err != nil {
			return nil, err
		} else if ok {
			return frame, nil
		}
	}
}

// large is called for each chunk of a frame past LargeFrame bytes: it
// waits for the Guard's gate and its pace (false if the conn closed
// meanwhile), then yields the processor, so that a large frame is read in
// turns with other goroutines' work.
func (c *Conn) large(chunk int) bool {
	if g := c.guard.Large; g != nil {
		if !c.inGate {
			if !g.enter(c.done) {
				return false
			}
			c.inGate = true
		}
		if !g.pace(chunk, c.done) {
			return false
		}
	}
	runtime.Gosched()
	return true
}

func (c *Conn) readFrame() ([]byte, error) {
	c.grow()
	c.giveBack()
	c.sc.reset()
	c.long = c.long[:0]
	size := 0
	for {
		chunk, err := c.r.ReadSlice('\n')
		end := err == nil
		if end {
			chunk = chunk[:len(chunk)-1]
		} else if !errors.Is(err, bufio.ErrBufferFull) {
			if size == 0 && len(chunk) == 0 {
				return nil, err // between frames: the end of the stream, or its error
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.setBroken(err)
			c.giveBack()
			return nil, err
		}
		size += len(chunk)
		if size > LargeFrame && !c.large(len(chunk)) {
			return nil, net.ErrClosed
		}
		c.sc.feed(chunk)
		if size > c.limit {
			return nil, c.skip(size, end, &FrameTooLargeError{Limit: c.limit, From: c.from}, CodeMessageTooLarge)
		}
		if why := c.tooComplex(); why != nil {
			return nil, c.skip(size, end, why, CodeMessageTooLarge)
		}
		if err := c.take(FrameCost(size, c.sc.values), end); err != nil {
			return nil, c.skip(size, end, err, CodeLimited)
		}
		if end {
			if len(c.long) == 0 {
				return chunk, nil
			}
			c.long = append(c.long, chunk...)
			frame := c.long
			if cap(c.long) > 1<<20 {
				c.long = nil // do not pin a huge buffer for the session's life
			}
			return frame, nil
		}
		c.long = append(c.long, chunk...)
	}
}

// tooComplex says how the frame read so far is over a bound of the Guard.
func (c *Conn) tooComplex() error {
	switch g := c.guard; {
	case g.MaxValues > 0 && c.sc.values > g.MaxValues:
		return fmt.Errorf("%w: it holds more than %d JSON values, the node's limit", ErrTooComplex, g.MaxValues)
	case g.MaxDepth > 0 && c.sc.deepest > g.MaxDepth:
		return fmt.Errorf("%w: it nests deeper than %d levels, the node's limit", ErrTooComplex, g.MaxDepth)
	}
	return nil
}

// take makes the frame read so far hold cost of the budget: more as it
// grows (in steps, so that a long frame is not a lock per chunk), and
// exactly cost once it has ended.
func (c *Conn) take(cost int64, end bool) error {
	b := c.guard.Budget
	if b == nil {
		return nil
	}
	switch {
	case cost > c.held:
		more := cost - c.held
		if !end {
			more = max(more, budgetStep)
		}
		if err := b.Take(more); err != nil {
			return err
		}
		c.held += more
	case end && cost < c.held:
		b.Return(c.held - cost)
		c.held = cost
	}
	return nil
}

// giveBack returns the budget the last frame held, unless a request in
// flight keeps it.
func (c *Conn) giveBack() {
	if c.held > 0 {
		c.guard.Budget.Return(c.held)
		c.held = 0
	}
}

// maxSkip bounds, in multiples of the limit, how much of a refused frame is
// read past: a peer that never ends its line breaks the session.
const maxSkip = 4

// skip reads past the rest of a refused frame of which size bytes are read
// (all of it if end), watching its top level for its id, and reports it.
func (c *Conn) skip(size int, end bool, why error, code int64) error {
	c.giveBack()
	c.long = c.long[:0]
	for !end {
		chunk, err := c.r.ReadSlice('\n')
		end = err == nil
		if end {
			chunk = chunk[:len(chunk)-1]
		}
		size += len(chunk)
		if size > LargeFrame && !c.large(len(chunk)) {
			return net.ErrClosed
		}
		switch {
		case end:
		case !errors.Is(err, bufio.ErrBufferFull):
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.setBroken(err)
			// Not skipped: a plain error (errors.As finds no
			// *FrameTooLargeError, which says the session goes on).
			sentinel := ErrFrameRefused
			if errors.Is(why, ErrFrameTooLarge) {
				sentinel = ErrFrameTooLarge
			}
			return fmt.Errorf("%w: %v: %d bytes or more from %s, then %v", sentinel, why, size, c.from, err)
		case size > maxSkip*c.limit:
			err := fmt.Errorf("%w: over %d bytes from %s without an end of line (limit %d)", ErrFrameTooLarge, size, c.from, c.limit)
			c.badFrame(err)
			return err
		}
		c.sc.feed(chunk)
	}
	var tooLarge *FrameTooLargeError
	if errors.As(why, &tooLarge) {
		tooLarge.Size = size
		tooLarge.Request = c.sc.method
		if raw := c.sc.rawID(); raw != nil {
			tooLarge.ID, _ = sdkcompat.DecodeID(raw)
		}
	}
	r := &FrameRefusedError{Err: why, Code: code, From: c.from, Size: size,
		RawID: bytes.Clone(c.sc.rawID()), Request: c.sc.method, Response: c.sc.response}
	if !errors.Is(why, ErrNodeBusy) {
		c.strike(r) // the sender's doing, though the session goes on
	}
	return r
}

// badFrame marks the stream broken by the peer and tells OnBadFrame.
func (c *Conn) badFrame(err error) {
	c.setBroken(err)
	if c.onBad != nil {
		c.onBad(err)
	}
}

// Write implements [sdkmcp.Connection]: it writes msg as one frame. An
// answer to one of the peer's requests carries the id the peer sent. A
// message over the session's limit, which the peer would refuse, is not
// sent: a response becomes an error response naming the limit, so that the
// caller learns why; a request or notification fails with a [*LimitError],
// and the session goes on.
func (c *Conn) Write(_ context.Context, msg jsonrpc.Message) error {
	if resp, ok := msg.(*jsonrpc.Response); ok {
		if raw, cost, idle, ok := c.fl.answer(resp.ID, time.Now()); ok {
			data, err := sdkcompat.EncodeResponse(resp, raw)
			if err == nil && len(data) > c.limit {
				lerr := &LimitError{Message: describe(msg), Size: len(data), Limit: c.limit}
				data, err = sdkcompat.EncodeResponse(&jsonrpc.Response{ID: resp.ID, Error: lerr.JSONRPC()}, raw)
			}
			if cost > 0 {
				c.guard.Budget.Return(cost)
			}
			if idle {
				c.setReadDeadline(true)
			}
			if err != nil {
				return fmt.Errorf("encode mcp message: %w", err)
			}
			return c.WriteFrame(data)
		}
	}
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
	if c.ids != nil {
		c.answered(frame)
	}
	frame = append(frame, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.signs == nil || len(frame) <= signChunk {
		_, err := c.s.Write(frame)
		return err
	}
	// A large frame on a slow link takes seconds: each chunk taken is the
	// peer acknowledging the ones before (the buffers it fills are full by
	// the second or third), a sign of life for a checker whose ping waits
	// behind it. Small frames tell nothing: a buffer takes them whether the
	// peer is there or not.
	for len(frame) > 0 {
		n := min(len(frame), signChunk)
		if _, err := c.s.Write(frame[:n]); err != nil {
			return err
		}
		frame = frame[n:]
		c.signs.Alive()
	}
	return nil
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
		close(c.done)
		c.mu.Lock()
		broken := c.broken
		c.mu.Unlock()
		if held := c.fl.close(); held > 0 {
			c.guard.Budget.Return(held)
		}
		if broken != nil {
			err = c.s.Reset()
			return
		}
		err = c.s.Close()
	})
	return err
}
