package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// waitTask waits until `mcpmesh tasks` on home lists a task of tool whose
// line holds all of want.
func waitTask(t *testing.T, home, tool string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var out string
	for time.Now().Before(deadline) {
		out, _, _ = run(t, "--home", home, "tasks")
		for _, line := range strings.Split(out, "\n") {
			ok := strings.Contains(line, tool)
			for _, w := range want {
				ok = ok && strings.Contains(line, w)
			}
			if ok {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("mcpmesh tasks (home %s) never showed %s with %q; last:\n%s", home, tool, want, out)
}

// A call that outlives --timeout is the tool's doing, not the daemon's:
// the error says the tool did not answer in time, that the call was
// cancelled (it is, on the peer) and how to wait longer.
func TestCallTimeoutBlamesTheToolAndCancelsIt(t *testing.T) {
	_, b, _, call := startGatedCall(t, "--timeout", "2s")
	select {
	case err := <-call.done:
		if err == nil {
			t.Fatalf("call --timeout 2s of a tool that waits: exit 0, stdout %q", call.stdout.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("call --timeout 2s still running after 30s: stderr %q", call.stderr.String())
	}
	stderr := call.stderr.String()
	for _, want := range []string{"tool gated/slow on ", "did not answer within 2s", "the call was cancelled, on the peer too", "--timeout 1m,", "--timeout 0 for no limit"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("call --timeout 2s: stderr %q lacks %q", stderr, want)
		}
	}
	if strings.Contains(stderr, "daemon") {
		t.Errorf("call --timeout 2s blames the daemon: %q", stderr)
	}
	waitTask(t, b.home, "gated/slow", "served", "cancelled")
}

// --timeout 0 waits as long as the tool takes.
func TestCallTimeoutZeroWaitsForTheTool(t *testing.T) {
	_, b, gate, call := startGatedCall(t, "--timeout", "0")
	waitTask(t, b.home, "gated/slow", "served", "working")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-call.done:
		if err != nil || strings.TrimSpace(call.stdout.String()) != "done" {
			t.Fatalf("call --timeout 0: %v: stdout %q, stderr %q", err, call.stdout.String(), call.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("call --timeout 0 still running 30s after the gate opened: stderr %q", call.stderr.String())
	}
}
