package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/control"
)

// lockedBuffer is a bytes.Buffer safe for a writing goroutine (the
// spinner's, a daemon's stderr copier) while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Off a terminal, progress is one plain line per notification, as N/TOTAL
// and the message, and nothing else is written.
func TestProgressViewPrintsLinesOffATerminal(t *testing.T) {
	var out lockedBuffer
	v := newProgressView(&out, false)
	v.update(control.Progress{Progress: 1, Total: 3, Message: "fetching"})
	v.update(control.Progress{Progress: 2.5})
	v.close()
	if got, want := out.String(), "progress 1/3 fetching\nprogress 2.5\n"; got != want {
		t.Errorf("wrote %q, want %q", got, want)
	}
}

// On a terminal, progress redraws one line in place, a spinner turns while
// the call runs, and the line is cleared at the end: nothing is left
// between the command line and the result.
func TestProgressViewRedrawsOneLineOnATerminal(t *testing.T) {
	var out lockedBuffer
	v := newProgressView(&out, true)
	v.update(control.Progress{Progress: 1, Total: 3, Message: "fetching"})
	for deadline := time.Now().Add(5 * time.Second); strings.Count(out.String(), "fetching") < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the spinner did not turn: %q", out.String())
		}
	}
	v.close()
	got := out.String()
	if strings.Contains(got, "\n") || !strings.HasPrefix(got, "\r\033[K") || !strings.HasSuffix(got, "\r\033[K") || !strings.Contains(got, "1/3 fetching") {
		t.Errorf("wrote %q, want one line redrawn and cleared", got)
	}
	frames := 0
	for _, f := range spinner {
		if strings.Contains(got, f) {
			frames++
		}
	}
	if frames < 2 {
		t.Errorf("spinner frames drawn: %d, want it turning: %q", frames, got)
	}
}

// A call that ends quickly draws nothing on a terminal.
func TestProgressViewDrawsNothingForAQuickCall(t *testing.T) {
	var out lockedBuffer
	v := newProgressView(&out, true)
	v.close()
	if got := out.String(); got != "" {
		t.Errorf("wrote %q for a quick call", got)
	}
}

// While a question is asked on the terminal the progress line is cleared
// and not drawn, so that it does not write over the prompt; it comes back
// after.
func TestProgressViewStandsAsideForAQuestion(t *testing.T) {
	var out lockedBuffer
	v := newProgressView(&out, true)
	defer v.close()
	v.update(control.Progress{Progress: 1, Total: 3, Message: "fetching"})
	v.pause()
	if got := out.String(); !strings.HasSuffix(got, "\r\033[K") {
		t.Fatalf("the line was not cleared for the question: %q", got)
	}
	before := out.String()
	v.update(control.Progress{Progress: 2, Total: 3, Message: "meanwhile"})
	if got := out.String(); got != before {
		t.Fatalf("drew over the question: %q", strings.TrimPrefix(got, before))
	}
	v.resume()
	v.update(control.Progress{Progress: 3, Total: 3, Message: "after"})
	if got := out.String(); !strings.Contains(strings.TrimPrefix(got, before), "3/3 after") {
		t.Fatalf("progress did not come back: %q", got)
	}
}
