package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// gatedProgramEnv, set to a file's path, makes the test binary a stdio MCP
// program (see TestMain) whose tool "slow" reports progress 1/2, waits until
// that file exists, reports 2/2 and returns "done": a call that stays
// running, with progress, until the test lets it go.
const gatedProgramEnv = "MCPMESH_CLI_TEST_GATE"

// longToolError is the gated program's tool "fail"'s error: long, with
// its cause at the end and characters of two bytes where a byte count
// would cut one.
var longToolError = strings.Repeat("déjà vu, ", 30) + "\nthe cause: disk full"

// runGatedProgram serves the gated program on stdin/stdout until stdin ends.
func runGatedProgram(gate string) int {
	s := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "gated", Version: "1.0.0"}, nil)
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "slow", Description: "progress 1/2, then waits for the test"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
			tok := req.Params.GetProgressToken()
			notify := func(p float64, msg string) {
				if tok != nil {
					req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok, Progress: p, Total: 2, Message: msg})
				}
			}
			notify(1, "halfway")
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				if _, err := os.Stat(gate); err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				case <-tick.C:
				}
			}
			notify(2, "finishing")
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "done"}}}, nil, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "fail", Description: "fails with a long error"},
		func(context.Context, *sdkmcp.CallToolRequest, any) (*sdkmcp.CallToolResult, any, error) {
			return &sdkmcp.CallToolResult{IsError: true, Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: longToolError}}}, nil, nil
		})
	if err := s.Run(context.Background(), &sdkmcp.StdioTransport{}); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "gated program:", err)
		return 1
	}
	return 0
}

// gatedCall is a `mcpmesh call` of the gated program's slow tool, running.
type gatedCall struct {
	stdout, stderr *bytes.Buffer
	done           chan error // its exit, once it ends
}

// startGatedCall starts daemon b sharing the gated program (its slow tool
// finishes once the file gate exists), daemon a connected to it, and a
// `mcpmesh call` of gated/slow from a, with callArgs; the call is killed
// when the test ends if it still runs.
func startGatedCall(t *testing.T, callArgs ...string) (a, b *daemon, gate string, call gatedCall) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	gate = filepath.Join(t.TempDir(), "go")
	b = startDaemon(t, "--share", fmt.Sprintf("gated=env %s='%s' '%s'", gatedProgramEnv, gate, exe))
	a = startDaemon(t, "--peer", b.addr)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, binary, append([]string{"--home", a.home, "call", b.id, "gated/slow"}, callArgs...)...)
	call = gatedCall{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = call.stdout, call.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(exited)
		call.done <- err
	}()
	t.Cleanup(func() {
		cancel() // kills the call if it still runs
		<-exited
	})
	return a, b, gate, call
}

// `mcpmesh tasks` shows the latest progress of a running call, on the
// calling daemon (the root task `mcpmesh call` starts) and on the serving
// one (the task of the shared program's call), and `mcpmesh call` prints it
// on stderr as it comes; once the call is over, the column holds the last.
func TestTasksShowTheProgressOfARunningCall(t *testing.T) {
	a, b, gate, call := startGatedCall(t)
	stdout, stderr, done := call.stdout, call.stderr, call.done

	// taskLine waits until `mcpmesh tasks` on home lists the call with all
	// of want, and returns its line.
	taskLine := func(home string, want ...string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		var out string
		for time.Now().Before(deadline) {
			select {
			case err := <-done:
				t.Fatalf("mcpmesh call ended before the test let it (%v): stdout %q, stderr %q", err, stdout.String(), stderr.String())
			default:
			}
			out, _, _ = run(t, "--home", home, "tasks")
			for _, line := range strings.Split(out, "\n") {
				if !strings.Contains(line, "gated/slow") {
					continue
				}
				ok := true
				for _, w := range want {
					ok = ok && strings.Contains(line, w)
				}
				if ok {
					return line
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("mcpmesh tasks (home %s) never showed gated/slow with %q; last:\n%s", home, want, out)
		return ""
	}
	header := func(home string) string {
		out, _, _ := run(t, "--home", home, "tasks")
		return strings.SplitN(out, "\n", 2)[0]
	}
	// Running: the latest progress, on both daemons.
	taskLine(a.home, "call", "working", "1/2 halfway")
	taskLine(b.home, "served", "working", "1/2 halfway")
	if h := header(a.home); !slices.Contains(strings.Fields(h), "PROGRESS") {
		t.Errorf("tasks header %q: want a PROGRESS column", h)
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || strings.TrimSpace(stdout.String()) != "done" {
			t.Fatalf("mcpmesh call: %v: stdout %q, stderr %q", err, stdout.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("mcpmesh call still running 30s after the gate opened: stderr %q", stderr.String())
	}
	for _, p := range []string{"progress 1/2 halfway", "progress 2/2 finishing"} {
		if !strings.Contains(stderr.String(), p) {
			t.Errorf("mcpmesh call: stderr lacks %q:\n%s", p, stderr.String())
		}
	}
	// Over: the last progress stays.
	taskLine(a.home, "call", "completed", "2/2 finishing")
}

// A call cancelled with `mcpmesh tasks cancel` on the calling daemon ends
// with an error that says so, not "context canceled" failed at the hop
// below.
func TestCallCancelledByTasksCancelSaysSo(t *testing.T) {
	a, _, _, call := startGatedCall(t) // the gate never opens: the call runs until cancelled
	stdout, stderr, done := call.stdout, call.stderr, call.done
	var id string
	for deadline := time.Now().Add(20 * time.Second); id == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("mcpmesh tasks never listed the running call; stderr of call: %q", stderr.String())
		}
		out, _, _ := run(t, "--home", a.home, "tasks")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "gated/slow") && strings.Contains(line, "working") {
				id = strings.Fields(line)[0]
			}
		}
	}
	if out, stderr, code := run(t, "--home", a.home, "tasks", "cancel", id); code != 0 {
		t.Fatalf("tasks cancel: exit %d: %q %q", code, out, stderr)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(stderr.String(), "cancelled: its task "+id+" was cancelled on this node") ||
			strings.Contains(stderr.String(), "context canceled") {
			t.Fatalf("mcpmesh call cancelled by tasks cancel: %v: stdout %q, stderr %q", err, stdout.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("mcpmesh call still running 30s after tasks cancel: stderr %q", stderr.String())
	}
}

// A tool's error is printed whole, on one line: its cause is often at the
// end, and a cut inside a character prints invalid UTF-8.
func TestCallPrintsAToolErrorWhole(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := startDaemon(t, "--share", fmt.Sprintf("gated=env %s='%s' '%s'", gatedProgramEnv, filepath.Join(t.TempDir(), "go"), exe))
	a := startDaemon(t, "--peer", b.addr)
	_, stderr, code := run(t, "--home", a.home, "call", b.id, "gated/fail")
	if code != 1 || !strings.Contains(stderr, "déjà vu, déjà vu") || !strings.Contains(stderr, "the cause: disk full") ||
		strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !utf8.ValidString(stderr) {
		t.Fatalf("call of a tool that fails: exit %d, stderr %q", code, stderr)
	}
	for _, w := range []string{"dé", "déjà", "déjà vu, déjà vu, déjà"} { // cut inside "é" or not, firstLine cuts at a character
		for n := 2; n < 8; n++ {
			if got := firstLine(w+w, n); !utf8.ValidString(got) {
				t.Errorf("firstLine(%q, %d) = %q: not UTF-8", w+w, n, got)
			}
		}
	}
}
