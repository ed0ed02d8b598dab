package upstream

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// Conn is one session's connection to an upstream, read and written frame
// by frame (newline-delimited JSON-RPC, as MCP's stdio transport frames
// it): a program's standard input and output, or an HTTP session. ReadFrame
// returns a *transport.FrameTooLargeError for a frame over the limit it
// skipped, and goes on. Close ends the session (and the program).
type Conn interface {
	ReadFrame() ([]byte, error)
	WriteFrame(frame []byte) error
	Close() error
}

// A Session is one session with an upstream: its connection, and the
// process that serves it, if any.
type Session struct {
	Conn
	// PID is the program's process, 0 for an HTTP session.
	PID int
	// exited, if not nil, is closed when the program has exited; exitErr
	// then says how.
	exited  <-chan struct{}
	exitErr *error
	// warm is a spare's warm-up, if it had one (see Pool).
	warm *warming
	// active, if not nil, holds when the program last wrote on its
	// standard error (Unix nanoseconds): a sign of life while it starts.
	active *atomic.Int64
}

// lastActivity returns when the session's program last wrote on its
// standard error, or the zero time.
func (s *Session) lastActivity() time.Time {
	if s.active == nil || s.active.Load() == 0 {
		return time.Time{}
	}
	return time.Unix(0, s.active.Load())
}

// activityWriter notes when something is written through it.
type activityWriter struct {
	w    io.Writer
	last *atomic.Int64
}

func (a activityWriter) Write(b []byte) (int, error) {
	a.last.Store(time.Now().UnixNano())
	return a.w.Write(b)
}

// Exited reports whether the session's program has exited (always false
// for an HTTP session), and how.
func (s *Session) Exited() (bool, error) {
	if s.exited == nil {
		return false, nil
	}
	select {
	case <-s.exited:
		return true, *s.exitErr
	default:
		return false, nil
	}
}

// SessionDirEnv names the environment variable that gives each program
// process a folder of its own, removed when it exits: a program that keeps
// its state in files can be isolated per caller by pointing them there
// (MEMORY_FILE_PATH=$MCPMESH_SESSION_DIR/memory.jsonl).
const SessionDirEnv = "MCPMESH_SESSION_DIR"

// terminateAfter is how long a program is given to exit once its standard
// input is closed, then once it has been sent SIGTERM, before SIGKILL (the
// SDK's CommandTransport waits as long).
const terminateAfter = 2 * time.Second

// startProgram starts the program cmd describes in a process group of its
// own, and returns the session on its standard input and output. Its
// standard error goes to stderr.
func startProgram(name string, cmd Command, limit int, stderr io.Writer) (*Session, error) {
	// A folder of the session's own, for a program that keeps its state in
	// files: one process per caller isolates nothing if they all write the
	// same file.
	dir, err := os.MkdirTemp("", "mcpmesh-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("a folder for the session: %w", err)
	}
	c := exec.Command(cmd.Args[0], cmd.Args[1:]...)
	c.Env, c.Dir = cmd.Env, cmd.Dir
	if c.Env == nil {
		c.Env = os.Environ()
	}
	c.Env = append(c.Env[:len(c.Env):len(c.Env)], SessionDirEnv+"="+dir)
	active := new(atomic.Int64)
	c.Stderr = activityWriter{w: stderr, last: active}
	c.WaitDelay = terminateAfter // a child left holding its standard error must not hold Wait
	// Its own process group: a program that starts others (npx, a shell)
	// is ended whole.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Pipes of our own rather than StdinPipe/StdoutPipe: Wait closes those
	// as soon as the process exits, which could drop its last answer before
	// it is read.
	inR, inW, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	c.Stdin, c.Stdout = inR, outW
	if err := c.Start(); err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %q: %w", cmd.Line, err)
	}
	inR.Close() // the program's ends
	outW.Close()
	p := &process{cmd: c, stdin: inW, stdout: outR, dir: dir, exited: make(chan struct{})}
	go p.wait() // ends when the process does; Close waits for it
	s := &Session{Conn: transport.NewPipeConn(p, name, limit), PID: c.Process.Pid, exited: p.exited, exitErr: &p.err, active: active}
	return s, nil
}

// process is a running program, as the byte stream of its session: reads
// come from its standard output, writes go to its standard input, and
// Close ends it.
type process struct {
	cmd    *exec.Cmd
	stdin  *os.File
	stdout *os.File
	dir    string        // the session's folder, removed once the program has exited
	exited chan struct{} // closed once Wait has returned
	err    error         // what Wait returned

	closeOnce sync.Once
}

func (p *process) wait() {
	p.err = p.cmd.Wait()
	os.RemoveAll(p.dir)
	close(p.exited)
}

func (p *process) Read(b []byte) (int, error)  { return p.stdout.Read(b) }
func (p *process) Write(b []byte) (int, error) { return p.stdin.Write(b) }

// Close ends the program as a host would: it closes its standard input and
// gives it terminateAfter to exit, then sends its process group SIGTERM,
// then SIGKILL, and waits for it.
func (p *process) Close() error {
	p.closeOnce.Do(func() {
		p.stdin.Close()
		pgid := p.cmd.Process.Pid
		for _, sig := range []syscall.Signal{0, syscall.SIGTERM, syscall.SIGKILL} {
			if sig != 0 {
				syscall.Kill(-pgid, sig)
			}
			t := time.NewTimer(terminateAfter)
			select {
			case <-p.exited:
				t.Stop()
				p.stdout.Close()
				return
			case <-t.C:
			}
		}
		<-p.exited
		p.stdout.Close()
	})
	return nil
}

// exitError says how a program's session ended, for logs and status.
func exitError(s *Session) error {
	done, err := s.Exited()
	switch {
	case !done:
		return errors.New("the session ended")
	case err != nil:
		return fmt.Errorf("program %w", err)
	}
	return errors.New("program exited")
}
