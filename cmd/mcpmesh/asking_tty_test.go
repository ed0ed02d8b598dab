//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal: the side a test types into and reads
// from (primary), and the terminal a command runs on (tty).
func openPTY(t *testing.T) (primary, tty *os.File) {
	t.Helper()
	primary, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err == nil {
		fd := int(primary.Fd())
		if err = unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err == nil {
			var n uint32
			if n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN); err == nil {
				tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
			}
		}
	}
	if err != nil {
		if primary != nil {
			primary.Close()
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("open a pseudo-terminal: %v", err)
		}
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	t.Cleanup(func() { primary.Close(); tty.Close() })
	return primary, tty
}

// On a real terminal, without --prompt, `mcpmesh call` asks the question
// of a program two hops away as a person sees it, and the person's typed
// answer reaches the program.
func TestCallAsksOnARealTerminal(t *testing.T) {
	a, b, _ := askingChain(t)
	primary, tty := openPTY(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	call := exec.CommandContext(ctx, binary, "--home", a.home, "call", b.id, "far/book")
	var stdout bytes.Buffer
	call.Stdin, call.Stdout, call.Stderr = tty, &stdout, tty
	if err := call.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the command's now
	screen := &lockedBuffer{}
	copied := make(chan struct{})
	go func() { io.Copy(screen, primary); close(copied) }() // ends when the terminal closes
	done := make(chan error, 1)
	go func() { done <- call.Wait() }()

	// type waits for the prompt, then types the line.
	typeAt := func(prompt, line string) {
		t.Helper()
		for !strings.Contains(screen.String(), prompt) {
			select {
			case err := <-done:
				t.Fatalf("call ended (%v) before %q:\n%s", err, prompt, screen)
			case <-ctx.Done():
				t.Fatalf("no %q on the terminal:\n%s", prompt, screen)
			case <-time.After(10 * time.Millisecond):
			}
		}
		io.WriteString(primary, line+"\n")
	}
	typeAt("(a)ccept, (d)ecline or (c)ancel? [a]", "a")
	typeAt("(string, at least 2 characters, required): ", "Ada")
	typeAt("Newsletter [newsletter] (yes or no): ", "n")
	typeAt("people (integer, 1 to 12, default 2): ", "3")
	typeAt("seating (one of 1=inside, 2=outside, default inside): ", "")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("call: %v\n%s", err, screen)
		}
	case <-ctx.Done():
		t.Fatalf("call did not end:\n%s", screen)
	}
	if got := strings.TrimSpace(stdout.String()); got != "booked for Ada: 3 people, inside, newsletter false" {
		t.Fatalf("result %q; the terminal:\n%s", got, screen)
	}
	primary.Close()
	<-copied
	// The terminal echoed each answer once (call does not echo on a terminal).
	if n := strings.Count(screen.String(), "Ada"); n != 1 {
		t.Errorf("Ada shows %d times:\n%s", n, screen)
	}
}
