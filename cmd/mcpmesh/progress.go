package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/mcpmesh/mcpmesh/control"
)

// progressView shows a call's progress on stderr as it comes: on a
// terminal, one line redrawn in place, with a spinner that turns while the
// call runs (from spinnerAfter on, so that a quick call draws nothing) and
// that is cleared when the call ends; elsewhere (a pipe, a log), one plain
// line per progress notification.
type progressView struct {
	w   io.Writer
	tty bool

	mu     sync.Mutex
	latest string // the latest progress, as shown
	frame  int
	drawn  bool
	paused bool // a question is being asked on the terminal

	stop chan struct{}
	done chan struct{}
}

// spinnerAfter is how long a call runs before the spinner shows.
const spinnerAfter = 300 * time.Millisecond

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// isTerminal reports whether f (stdin, stdout or stderr) is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && (isatty.IsTerminal(file.Fd()) || isatty.IsCygwinTerminal(file.Fd()))
}

// newProgressView starts showing progress on w; close stops it.
func newProgressView(w io.Writer, tty bool) *progressView {
	v := &progressView{w: w, tty: tty, stop: make(chan struct{}), done: make(chan struct{})}
	if !tty {
		close(v.done)
		return v
	}
	go v.spin()
	return v
}

func (v *progressView) spin() {
	defer close(v.done)
	select {
	case <-time.After(spinnerAfter):
	case <-v.stop:
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		v.mu.Lock()
		v.drawLocked()
		v.frame++
		v.mu.Unlock()
		select {
		case <-tick.C:
		case <-v.stop:
			return
		}
	}
}

// drawLocked redraws the terminal's line.
func (v *progressView) drawLocked() {
	if v.paused {
		return
	}
	text := v.latest
	if text == "" {
		text = "waiting for the answer…"
	}
	fmt.Fprintf(v.w, "\r\033[K%s %s", spinner[v.frame%len(spinner)], text)
	v.drawn = true
}

// update shows one progress notification.
func (v *progressView) update(p control.Progress) {
	text := number(p.Progress)
	if p.Total > 0 {
		text += "/" + number(p.Total)
	}
	if p.Message != "" {
		text += " " + printable(firstLine(p.Message, 60))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.latest = text
	if v.tty {
		v.drawLocked()
		return
	}
	fmt.Fprintf(v.w, "progress %s\n", text)
}

// pause clears the line and draws nothing until resume: a question is
// asked meanwhile. Progress that comes in between shows after.
func (v *progressView) pause() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.paused = true
	if v.drawn {
		fmt.Fprint(v.w, "\r\033[K")
		v.drawn = false
	}
}

func (v *progressView) resume() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.paused = false
}

// close stops the spinner and clears its line.
func (v *progressView) close() {
	if v.tty {
		close(v.stop)
	}
	<-v.done
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.drawn {
		fmt.Fprint(v.w, "\r\033[K")
	}
}
