package transport

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// Guard bounds what the peer at the other end of a session can make the
// session cost, beyond the size of one frame:
//
//   - what one frame holds once decoded: the JSON values in it (every
//     scalar, key, array and object counts) and how deep they nest,
//     counted as the frame arrives, so that a frame over either bound is
//     refused before anything decodes it;
//   - how many of the peer's requests may be in flight at once: at the
//     window the conn stops reading until one is answered (the peer waits;
//     nothing is refused, and answers the node waits for still come, since
//     they follow the requests in flight on the stream); and, past Paced
//     requests in flight, each further one is read only once one is
//     answered or PaceWait has passed, so that a peer pipelining quick
//     requests has about Paced served at a time, like a handful of peers
//     that wait for their answers, while slow calls (waiting on a tool or
//     another peer) still reach the window in Window×PaceWait;
//   - how fast, and how many sessions at once, large frames are read
//     (Large);
//   - how much memory its frames in flight may hold (Budget);
//   - how long the session may stay silent: the first request must come
//     within HandshakeTimeout, and a session with nothing in flight is
//     closed after IdleTimeout without a request.
//
// A zero field bounds nothing.
type Guard struct {
	MaxValues int
	MaxDepth  int
	Window    int
	Paced     int
	Budget    Budget
	// Large, shared by the sessions of a node, bounds how many of them may
	// be reading a frame longer than LargeFrame at once (see Gate).
	Large *Gate

	HandshakeTimeout time.Duration
	IdleTimeout      time.Duration
}

// The bounds a node applies to the sessions it serves, unless configured
// otherwise (limits.Config).
const (
	// DefaultMaxValues bounds the JSON values in one frame: a frame of that
	// many small keys costs the SDK's decoders about 8 MiB of live memory
	// and 0.2 s of CPU (bench: keys cost ~130 bytes and ~3 µs each, array
	// items ~40 bytes and ~1 µs), where an ordinary tool call holds tens.
	DefaultMaxValues = 1 << 16
	// DefaultMaxDepth bounds how deep a frame's values nest (the SDK's own
	// decoder allows 1000).
	DefaultMaxDepth = 64
	// DefaultWindow is how many requests of one session may be in flight.
	DefaultWindow = 64
	// DefaultPaced is how many requests of one session may be in flight
	// before each further one waits up to PaceWait for an answer.
	DefaultPaced = 2
	// PaceWait is how long a request past Guard.Paced waits for an answer
	// before it is read anyway.
	PaceWait = 10 * time.Millisecond
	// DefaultHandshakeTimeout is how long a new session may take to send
	// its first request.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long a session with nothing in flight may
	// go without a request.
	DefaultIdleTimeout = 30 * time.Minute
)

// LargeFrame is the size past which reading a frame is done under the
// Guard's Gate, and yields the processor between chunks: counting a
// frame's values is CPU-bound, about 4 ms per MiB, and without both a
// few peers sending frames of megabytes keep the others' small requests
// waiting behind them in Go's run queues.
const LargeFrame = 64 << 10

// A Gate bounds how many sessions of a node may be reading a large frame
// at once (Guard.Large), and how fast they read it all together: the
// others wait their turn, in order, without reading, and so does their
// sender (the stream's flow control). A node's gate lets in one session
// per two cores (at least one) and reads large frames at 8 MiB/s, so
// that however many peers send large frames, ordinary requests keep the
// node's processors. A Gate is safe for concurrent use.
type Gate struct {
	slots chan struct{}
	rate  *rate.Limiter // nil: no bound
}

// NewGate returns a gate that lets n sessions in at once (at least one),
// reading bytesPerSecond all together (0 or less: no bound).
func NewGate(n int, bytesPerSecond int) *Gate {
	g := &Gate{slots: make(chan struct{}, max(n, 1))}
	if bytesPerSecond > 0 {
		// A burst of a read chunk or more (a bufio.Reader's 16 KiB).
		g.rate = rate.NewLimiter(rate.Limit(bytesPerSecond), max(bytesPerSecond/16, 64<<10))
	}
	return g
}

// enter waits for a slot, or until stop is closed (false).
func (g *Gate) enter(stop <-chan struct{}) bool {
	select {
	case g.slots <- struct{}{}:
		return true
	case <-stop:
		return false
	}
}

func (g *Gate) leave() { <-g.slots }

// pace waits until n more bytes may be read, or until stop is closed
// (false).
func (g *Gate) pace(n int, stop <-chan struct{}) bool {
	if g.rate == nil {
		return true
	}
	r := g.rate.ReserveN(time.Now(), min(n, g.rate.Burst()))
	d := r.Delay()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		r.Cancel()
		return false
	}
}

// DefaultLargeFrameRate is how fast a node reads large frames, all
// sessions together (bytes per second).
const DefaultLargeFrameRate = 8 << 20

// DefaultGuard returns the bounds of a served session, with budget b.
func DefaultGuard(b Budget) Guard {
	return Guard{
		MaxValues: DefaultMaxValues, MaxDepth: DefaultMaxDepth, Window: DefaultWindow, Paced: DefaultPaced, Budget: b,
		HandshakeTimeout: DefaultHandshakeTimeout, IdleTimeout: DefaultIdleTimeout,
	}
}

// Budget is the memory that the frames of a session may hold while they are
// in flight: a frame from when it starts to arrive until it is answered (a
// request) or handed on (anything else). A node gives each session its
// peer's budget, drawn from the node's own (limits.Limiter.Budget). A
// Budget is safe for concurrent use.
type Budget interface {
	// Take reserves n more bytes, or says why it cannot: the frame is then
	// refused (a request is answered with the error). An error that wraps
	// ErrNodeBusy is the node's load, not the peer's doing; any other is
	// the peer's (a strike, with OnBadFrame).
	Take(n int64) error
	// Return gives back n bytes taken earlier.
	Return(n int64)
}

// ErrNodeBusy is what a Budget's refusal wraps when the node as a whole,
// not the peer, is out of budget.
var ErrNodeBusy = errors.New("node busy")

// Costs of a frame in flight, for FrameCost.
const (
	frameBase     = 16 << 10 // the goroutines and state of a request being served
	costPerByte   = 6        // the frame, its copies and decoded strings
	costPerValue  = 128      // a decoded value: a map entry, an interface, a key
	budgetStep    = 256 << 10
	maxIDTextShow = 64
)

// FrameCost estimates the live memory that a frame of size bytes holding
// values JSON values costs while it is in flight, from the SDK's decoders
// as measured on a tools/call (a string arguments costs about 5 bytes per
// byte at its peak, a small key about 130 bytes, an array item about 40).
func FrameCost(size, values int) int64 {
	return frameBase + costPerByte*int64(size) + costPerValue*int64(values)
}

// CodeLimited is the JSON-RPC error code of a request refused for a
// limit.
const (
	// CodeLimited: the request was refused for a limit of the peer's (too
	// many in flight, over its memory budget) or because the node is
	// busy. It is the code of peer/trust's refusals for limits too.
	CodeLimited int64 = -32031
)

// ErrFrameRefused is what a frame refused for a bound of the conn's Guard
// or for its budget is (errors.Is), and a FrameTooLargeError too.
var ErrFrameRefused = errors.New("mcp frame refused")

// FrameRefusedError is a frame that a conn skipped without keeping it: over
// the size limit (Err is then a *FrameTooLargeError), over a bound of its
// Guard, or over its budget. The session goes on. What the frame was is
// read from its top level as it went by.
type FrameRefusedError struct {
	Err  error  // why: a *FrameTooLargeError, ErrTooComplex, or the budget's error
	Code int64  // the code of the error answer
	From string // who sent it
	Size int    // its length in bytes (as far as it was read)
	// RawID is the frame's top-level id as sent (nil if none was seen, or
	// it was longer than 256 bytes); Request and Response tell whether a
	// top-level method, or a result or an error, was seen.
	RawID             []byte
	Request, Response bool
}

// ErrTooComplex is what a frame over a Guard's MaxValues or MaxDepth is.
var ErrTooComplex = errors.New("mcp frame too complex")

func (e *FrameRefusedError) Error() string {
	return fmt.Sprintf("%v (%d bytes from %s)", e.Err, e.Size, e.From)
}

// Unwrap gives the reason, so that errors.As finds a *FrameTooLargeError.
func (e *FrameRefusedError) Unwrap() []error { return []error{e.Err, ErrFrameRefused} }

// message is what the answer to the frame says.
func (e *FrameRefusedError) message() string {
	what := "the answer"
	if e.Request || !e.Response {
		what = "the request"
	}
	return fmt.Sprintf("%s from %s was refused (%d bytes read): %v", what, e.From, e.Size, e.Err)
}
