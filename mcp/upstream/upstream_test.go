package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink counts the sessions it is given, calls them ready at once, and uses
// each until it ends.
type sink struct{ served, ended atomic.Int32 }

func (s *sink) Serve(ctx context.Context, sess *Session, ready func()) error {
	s.served.Add(1)
	defer s.ended.Add(1)
	ready()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	for {
		if _, err := sess.ReadFrame(); err != nil {
			return err
		}
	}
}
func (s *sink) Counts() (int, int, int) { return 0, 0, 0 }

// inMemory returns an upstream whose sessions are pipes in memory that end
// after life, as a program that exits.
func inMemory(opened *atomic.Int32, life time.Duration) *Upstream {
	return &Upstream{Name: "up", Line: "in memory", MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Open: func() (*Session, error) {
			opened.Add(1)
			a, b := net.Pipe()
			time.AfterFunc(life, func() { b.Close() })
			return &Session{Conn: transport.NewPipeConn(a, "up", 0)}, nil
		}}
}

// A session that ends is opened again, after a backoff, until Stop; Stop
// waits for the supervisor's goroutine (goleak checks none is left).
func TestSupervisorReopensTheUpstreamUntilStopped(t *testing.T) {
	var opened atomic.Int32
	k := &sink{}
	s := New(inMemory(&opened, 100*time.Millisecond), k)
	s.Start()
	if err := s.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for k.served.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the sink got %d sessions in 10s, want 3 (one per restart)", k.served.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Stop()
	if st := s.Status(); st.Restarts < 2 {
		t.Errorf("status after two restarts: %+v", st)
	}
	if k.ended.Load() != k.served.Load() {
		t.Errorf("after Stop, %d sessions served and %d ended", k.served.Load(), k.ended.Load())
	}
	s.Stop() // a second Stop is harmless
}

// A supervisor stopped before it started starts nothing, and Ready says so.
func TestSupervisorStoppedBeforeItStarted(t *testing.T) {
	var opened atomic.Int32
	s := New(inMemory(&opened, time.Hour), &sink{})
	s.Stop()
	s.Start()
	if err := s.Ready(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Ready = %v, want ErrStopped", err)
	}
	if opened.Load() != 0 {
		t.Fatal("a stopped supervisor opened the upstream")
	}
}

// A program's session is its standard input and output, frame by frame;
// Close ends the program.
func TestProgramSessionIsItsStdio(t *testing.T) {
	stderr := &syncWriter{w: &strings.Builder{}}
	up, err := Program("echo", Command{Args: []string{"/bin/sh", "-c", "echo started >&2; exec cat"}, Stderr: stderr}, 64)
	if err != nil {
		t.Fatal(err)
	}
	s, err := up.Open()
	if err != nil {
		t.Fatal(err)
	}
	frame := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	if err := s.WriteFrame([]byte(frame)); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadFrame()
	if err != nil || string(got) != frame {
		t.Fatalf("read %q, %v; want the frame back", got, err)
	}
	// A frame over the limit is skipped and named, and the session goes on.
	if err := s.WriteFrame([]byte(`{"jsonrpc":"2.0","id":2,"result":{"text":"` + strings.Repeat("x", 100) + `"}}`)); err != nil {
		t.Fatal(err)
	}
	var tooLarge *transport.FrameTooLargeError
	if _, err := s.ReadFrame(); !errors.As(err, &tooLarge) || tooLarge.Reply() == nil {
		t.Fatalf("a frame over the limit read as %v, want a FrameTooLargeError with its ID", err)
	}
	if done, _ := s.Exited(); done {
		t.Fatal("the program exited early")
	}
	s.Close()
	if done, err := s.Exited(); !done || err != nil {
		t.Errorf("after Close: exited %v (%v), want a clean exit (its stdin closed)", done, err)
	}
	if !strings.Contains(stderr.String(), "[echo] started") {
		t.Errorf("stderr %q, want the program's line with its name", stderr.String())
	}
}

// A program that does not exit when its standard input closes is sent
// SIGTERM.
func TestProgramThatIgnoresItsStdinIsTerminated(t *testing.T) {
	up, err := Program("sleeper", ShellCommand("sleep 60"), 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := up.Open()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.Close()
	if done, err := s.Exited(); !done || err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("after Close: exited %v (%v), want terminated by a signal", done, err)
	}
	if d := time.Since(start); d < terminateAfter {
		t.Errorf("terminated after %v, before the %v it is given", d, terminateAfter)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.w)
}

// cat is a program whose every process is its own.
func cat(t *testing.T) *Upstream {
	up, err := Program("cat", ShellCommand("cat"), 0)
	if err != nil {
		t.Fatal(err)
	}
	return up
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Each caller session gets a process of its own; the spare started ahead
// is the next one's; the bounds per caller and in all hold, each named in
// its refusal while every session that could make room is busy; a
// released session frees its place.
func TestPoolGivesEachSessionItsOwnProcessWithinItsBounds(t *testing.T) {
	p := NewPool(cat(t), PoolConfig{MaxSessions: 3, MaxPerCaller: 2})
	defer p.Close()
	ctx := context.Background()
	spare := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.spares) == 0 {
			return 0
		}
		return p.spares[0].PID
	}
	busy := func(l *Lease) { l.SetBusy(func() bool { return true }) }
	waitFor(t, "spare", func() bool { return spare() != 0 })
	want := spare()
	a1, err := p.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	busy(a1)
	if a1.PID != want {
		t.Errorf("first session's process %d, want the spare %d", a1.PID, want)
	}
	waitFor(t, "new spare", func() bool { return spare() != 0 })
	a2, err := p.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	busy(a2)
	if a1.PID == a2.PID {
		t.Fatal("two sessions share a process")
	}
	if _, err := p.Acquire(ctx, "alice"); !errors.Is(err, ErrPoolFull) || !strings.Contains(err.Error(), "sessions.perCaller") {
		t.Fatalf("third session of one caller: %v, want ErrPoolFull naming the bound per caller", err)
	}
	b1, err := p.Acquire(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	busy(b1)
	if _, err := p.Acquire(ctx, "carol"); !errors.Is(err, ErrPoolFull) || !strings.Contains(err.Error(), "sessions.max") {
		t.Fatalf("a session past the share's bound: %v, want ErrPoolFull naming it", err)
	}
	a1.Release()
	if done, _ := a1.Exited(); !done {
		t.Error("a released session's process still runs")
	}
	c1, err := p.Acquire(ctx, "carol")
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	busy(c1)
	if n, _, _ := p.Stats(); n != 3 {
		t.Errorf("%d sessions open, want 3", n)
	}
	b1.Release()
	c1.Release()
	a2.Release()
	if n, _, _ := p.Stats(); n != 0 {
		t.Errorf("%d sessions open after every release, want 0", n)
	}
}

// At a bound, the least recently active idle session makes room: the
// caller's own at the bound per caller, anyone's at the pool's; a busy one
// never does.
func TestPoolEndsTheIdlestSessionToMakeRoom(t *testing.T) {
	p := NewPool(cat(t), PoolConfig{MaxSessions: 3, MaxPerCaller: 2, Spares: -1})
	defer p.Close()
	ctx := context.Background()
	acquire := func(caller string) *Lease {
		t.Helper()
		l, err := p.Acquire(ctx, caller)
		if err != nil {
			t.Fatalf("%s: %v", caller, err)
		}
		return l
	}
	gone := func(l *Lease) bool { done, _ := l.Exited(); return done }
	old, recent := acquire("alice"), acquire("alice")
	if err := recent.WriteFrame([]byte(`{"jsonrpc":"2.0","method":"ping","id":1}`)); err != nil {
		t.Fatal(err)
	}
	third := acquire("alice") // over alice's bound: her idlest (old) ends
	if !gone(old) || gone(recent) {
		t.Fatalf("at the bound per caller: the idlest session ended %v, the recent one %v; want only the idlest", gone(old), gone(recent))
	}
	recent.SetBusy(func() bool { return true })
	b := acquire("bob") // the share's bound: 3 open
	b.SetBusy(func() bool { return true })
	c := acquire("carol") // over the share's bound: the only idle one (third, alice's) ends
	if !gone(third) || gone(recent) || gone(b) {
		t.Fatalf("at the share's bound: idle %v, busy %v and %v ended; want only the idle one", gone(third), gone(recent), gone(b))
	}
	c.SetBusy(func() bool { return true })
	if _, err := p.Acquire(ctx, "dave"); !errors.Is(err, ErrPoolFull) {
		t.Fatalf("every session busy: %v, want ErrPoolFull", err)
	}
	if n, _, _ := p.Stats(); n != 3 {
		t.Errorf("%d sessions open, want 3", n)
	}
}

// A session that carries nothing for the idle timeout ends, unless it
// says it is busy.
func TestPoolEndsIdleSessions(t *testing.T) {
	p := NewPool(cat(t), PoolConfig{IdleTimeout: 50 * time.Millisecond, Spares: -1})
	defer p.Close()
	idle, err := p.Acquire(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	busy, err := p.Acquire(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	busy.SetBusy(func() bool { return true })
	waitFor(t, "end of the idle session", func() bool { done, _ := idle.Exited(); return done })
	if _, err := idle.ReadFrame(); err == nil {
		t.Error("an ended session still reads")
	}
	if done, _ := busy.Exited(); done {
		t.Error("a busy session was ended as idle")
	}
	waitFor(t, "the idle session's place freed", func() bool { n, _, _ := p.Stats(); return n == 1 })
	if _, spares, _ := p.Stats(); spares != 0 {
		t.Errorf("%d spares, want none (Spares -1)", spares)
	}
}

// Close ends every session and spare.
func TestPoolCloseEndsEverything(t *testing.T) {
	p := NewPool(cat(t), PoolConfig{})
	l, err := p.Acquire(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if done, _ := l.Exited(); !done {
		t.Error("a session's process outlived Close")
	}
	if _, err := p.Acquire(context.Background(), "bob"); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Acquire after Close: %v", err)
	}
}

// A program that cannot start fails Acquire with why.
func TestPoolSaysWhyAProgramDoesNotStart(t *testing.T) {
	up, err := Program("missing", Command{Args: []string{"/no/such/program"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool(up, PoolConfig{})
	defer p.Close()
	_, err = p.Acquire(context.Background(), "alice")
	if err == nil || !strings.Contains(err.Error(), "/no/such/program") {
		t.Fatalf("Acquire = %v, want the start's failure naming the program", err)
	}
	if _, _, last := p.Stats(); last == "" {
		t.Error("no last error in the stats")
	}
}

// A spare is offered once the program has answered a ping (so its own
// start-up is done before a caller's initialize), and the answer is the
// pool's: the caller reads only what answers its own frames.
func TestPoolWarmsUpSparesAndKeepsTheAnswer(t *testing.T) {
	dir := t.TempDir()
	script := `sleep 0.3; touch ` + dir + `/started-$$; read ping; ` +
		`echo '{"jsonrpc":"2.0","id":"mcpmesh-warm-up","result":{}}'; exec cat`
	up, err := Program("warm", Command{Args: []string{"/bin/sh", "-c", script}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool(up, PoolConfig{})
	defer p.Close()
	waitFor(t, "a spare", func() bool { _, n, _ := p.Stats(); return n == 1 })
	if started, _ := filepath.Glob(filepath.Join(dir, "started-*")); len(started) != 1 {
		t.Fatalf("a spare was offered before its program had started up (%d started)", len(started))
	}
	l, err := p.Acquire(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	frame := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`
	if err := l.WriteFrame([]byte(frame)); err != nil {
		t.Fatal(err)
	}
	got, err := l.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != frame {
		t.Fatalf("the caller's first frame is %s, want its own echoed (the warm-up's answer is the pool's)", got)
	}
}

// readySink calls a session ready once its program has written a frame
// (as an MCP server answers initialize), then uses it until it ends.
type readySink struct{}

func (readySink) Serve(ctx context.Context, sess *Session, ready func()) error {
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	if _, err := sess.ReadFrame(); err != nil {
		return err
	}
	ready()
	for {
		if _, err := sess.ReadFrame(); err != nil {
			return err
		}
	}
}
func (readySink) Counts() (int, int, int) { return 0, 0, 0 }

// slowStart is a program that takes steps×0.1s to answer, saying on
// standard error what it does at each step if chatty.
func slowStart(steps int, chatty bool) Command {
	say := ":"
	if chatty {
		say = `echo "downloading $i" >&2`
	}
	line := fmt.Sprintf(`for i in $(seq %d); do %s; sleep 0.1; done; echo '{"jsonrpc":"2.0","method":"ready"}'; exec cat`, steps, say)
	return Command{Args: []string{"/bin/sh", "-c", line}, Line: "slow", Stderr: io.Discard}
}

// A program that keeps saying what it does on standard error is given
// longer than the start timeout; one that stays silent is not, and the
// error says why.
func TestStartTimeoutExtendedWhileTheProgramWritesOnStderr(t *testing.T) {
	up, err := Program("chatty", slowStart(30, true), 0)
	if err != nil {
		t.Fatal(err)
	}
	up.StartTimeout = time.Second // a tenth of the start, ten times its steps
	s := New(up, readySink{})
	s.Start()
	defer s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitFor(t, "the start deadline in the status", func() bool { return !s.Status().StartDeadline.IsZero() })
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("a program that wrote on stderr all along: %v", err)
	}
	if st := s.Status(); !st.Running || !st.StartDeadline.IsZero() {
		t.Errorf("status once up: %+v", st)
	}

	up, err = Program("silent", slowStart(30, false), 0)
	if err != nil {
		t.Fatal(err)
	}
	up.StartTimeout = time.Second
	silent := New(up, readySink{})
	silent.Start()
	defer silent.Stop()
	if err := silent.Ready(ctx); err == nil || !strings.Contains(err.Error(), "1s without a sign of life") {
		t.Fatalf("a silent program: %v, want the start given up after 1s of silence", err)
	}
}

// Launchers, whose first run may download what they run, get longer for
// their first start; so do they behind NAME=value assignments.
func TestLaunchersGetALongerFirstStart(t *testing.T) {
	for line, want := range map[string]time.Duration{
		"npx -y @modelcontextprotocol/server-everything stdio":  LauncherStartTimeout,
		"NODE_ENV=production /usr/local/bin/uvx mcp-server-git": LauncherStartTimeout,
		"docker run -i --rm mcp/fetch":                          LauncherStartTimeout,
		"node server.js":                                        0,
		"$LAUNCHER npx":                                         0,
	} {
		up, err := Program("x", ShellCommand(line), 0)
		if err != nil {
			t.Fatal(err)
		}
		if up.FirstStartTimeout != want {
			t.Errorf("%q: first start timeout %v, want %v", line, up.FirstStartTimeout, want)
		}
	}
	for line, want := range map[string]string{"A=1 B=2 prog x": "prog", "prog": "prog", "A=1": "", `"quoted prog"`: "", "1A=x prog": ""} {
		if got := ProgramOf(line); got != want {
			t.Errorf("ProgramOf(%q) = %q, want %q", line, got, want)
		}
	}
}
