package transport

import (
	"errors"
	"fmt"
	"time"
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
//     they follow the requests in flight on the stream);
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
	Budget    Budget

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
	// DefaultHandshakeTimeout is how long a new session may take to send
	// its first request.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long a session with nothing in flight may
	// go without a request.
	DefaultIdleTimeout = 30 * time.Minute
)

// DefaultGuard returns the bounds of a served session, with budget b.
func DefaultGuard(b Budget) Guard {
	return Guard{
		MaxValues: DefaultMaxValues, MaxDepth: DefaultMaxDepth, Window: DefaultWindow, Budget: b,
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
