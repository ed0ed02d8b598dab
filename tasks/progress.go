package tasks

import (
	"math"
	"slices"
	"time"
)

// A task's caller reads, on its progress token, the task's own work: what
// its handler reports. A handler that reports nothing of its own (a thin
// wrapper, whose work is the calls it makes) has its calls' progress passed
// up instead, added up (CallProgress.PassUp), until it reports some of its
// own (Advance): from then on the token carries the handler's alone. Every
// value sent on the token goes through one of the two, which record it on
// the task and keep the token's values increasing, as MCP asks.

// Advance records progress the task's handler reports on its caller's
// progress token and returns the values to send with it. From then on the
// token carries the handler's own progress only (CallProgress.PassUp
// passes nothing). MCP asks that a token's progress increase with each
// notification, so a value not above the last one recorded (a handler run
// again once its caller answered a question, on 2026-07-28, counts from the
// start; one that reports after its calls' progress was passed up) is put a
// hair above it, and a total it then passes becomes unknown (0).
func (e *Entry) Advance(progress, total float64, msg string) (float64, float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.own = true
	if last := e.t.Progress; last != nil && progress <= last.Progress {
		progress = last.Progress + progressNudge
		if total != 0 && total < progress {
			total = 0
		}
	}
	e.t.Progress = &Progress{Progress: progress, Total: total, Message: msg, At: time.Now()}
	return progress, total
}

// progressNudge is how far Advance puts a value that would not increase
// above the last one: small enough that people who read it as a count see
// the same whole number.
const progressNudge = 1e-3

// CallProgress is a call a task makes, as the task passes its progress up
// (PassUp). Its methods are safe for concurrent use.
type CallProgress struct {
	e               *Entry
	progress, total float64 // the latest the call reported
	reported, ended bool
}

// PassCall starts passing up the progress of a call the task makes: End it
// when the call ends.
func (e *Entry) PassCall() *CallProgress {
	c := &CallProgress{e: e}
	e.mu.Lock()
	e.calls.inFlight = append(e.calls.inFlight, c)
	e.mu.Unlock()
	return c
}

// PassUp takes progress the call reported and returns the values to pass
// up on its task's caller's token, with ok false when nothing is to be
// passed: the task's handler has reported progress of its own (Advance),
// the task no longer runs (it ended, or was parked for its caller's
// answers), the call has ended, or the value would not increase.
//
// The values passed add up the progress of the task's calls: the latest of
// each call in flight plus the last of each call that ended, over the sum
// of their totals (unknown, 0, while a call in flight reported none). One
// call passes as it reports; calls one after another count on (3/3, then
// the next one's 1/3 is 4/6); calls at the same time add up too (their
// steps interleave, the sum increasing with each). A value that would not
// increase (the next call's 0, a peer that counts back) is not passed,
// rather than nudged: its message would go with another's value. The
// message is the call's own. A handler run again (2026-07-28, once its
// caller answered) adds up its calls anew, as they repeat the first run's
// work: its values pass once they rise above the last sent.
func (c *CallProgress) PassUp(progress, total float64, msg string) (float64, float64, bool) {
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.own || e.parked || e.t.State.Terminal() || c.ended || !finite(progress) || !finite(total) {
		return 0, 0, false
	}
	c.progress, c.total, c.reported = progress, total, true
	sum, sumTotal, known, current := e.calls.done, e.calls.done, true, false
	for _, in := range e.calls.inFlight {
		current = current || in == c
		if in.reported {
			sum += in.progress
			sumTotal += in.total
			known = known && in.total != 0
		}
	}
	if !known {
		sumTotal = 0
	}
	if !current || !finite(sum) || !finite(sumTotal) { // !current: a call of a run before
		return 0, 0, false
	}
	if last := e.t.Progress; last != nil && sum <= last.Progress {
		return 0, 0, false
	}
	e.t.Progress = &Progress{Progress: sum, Total: sumTotal, Message: msg, At: time.Now()}
	return sum, sumTotal, true
}

// End says the call ended: its last progress counts as the whole of its
// work from then on, and what it reports later is not passed.
func (c *CallProgress) End() {
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.ended {
		return
	}
	c.ended = true
	if i := slices.Index(e.calls.inFlight, c); i >= 0 { // not a call of a run before
		e.calls.inFlight = slices.Delete(e.calls.inFlight, i, i+1)
		if c.reported {
			e.calls.done += c.progress
		}
	}
}

// LockToken holds the task's caller's progress token from the values of a
// notification decided (Advance, PassUp) to the notification sent, so that
// values go out in the order they were decided: increasing. UnlockToken
// lets the next one through.
func (e *Entry) LockToken() { e.tokenMu.Lock() }

// UnlockToken: see LockToken.
func (e *Entry) UnlockToken() { e.tokenMu.Unlock() }

// callsProgress is the progress of the calls a task makes, for PassUp.
type callsProgress struct {
	done     float64         // the last progress of the calls that ended
	inFlight []*CallProgress // the calls in flight
}

func finite(f float64) bool { return !math.IsInf(f, 0) && !math.IsNaN(f) }
