package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// programsWithEnv counts the processes whose environment holds kv: the
// programs a daemon started for a share whose env has it.
func programsWithEnv(t *testing.T, kv string) int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/environ")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range dirs {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // gone meanwhile, or not ours to read
		}
		for _, v := range bytes.Split(data, []byte{0}) {
			if string(v) == kv {
				n++
				break
			}
		}
	}
	return n
}

// waitFor waits until f holds, or fails the test after d saying what.
func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !f(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// shareJSON is a configuration file sharing one program, the test binary
// run with env (which must set what makes it an MCP program).
func shareJSON(t *testing.T, name string, env map[string]string) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	share := map[string]any{"command": "'" + exe + "'", "env": env}
	data, err := json.Marshal(map[string]any{"shares": map[string]any{name: share}})
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// reloadPair starts daemon a on a home whose config.json the test writes
// (write), and daemon b connected to it. reload runs 'mcpmesh config
// reload' on a and checks that both it and the daemon said each of want.
func reloadPair(t *testing.T) (a, b *daemon, write func(string), reload func(want ...string)) {
	home := t.TempDir()
	write = func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(home, ConfigFile), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{}`)
	a = startDaemonAt(t, home)
	b = startDaemon(t, "--peer", a.addr)
	reload = func(want ...string) {
		t.Helper()
		out, stderr, code := run(t, "--home", a.home, "config", "reload")
		if code != 0 {
			t.Fatalf("config reload: exit %d: %s%s", code, out, stderr)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Fatalf("config reload did not say %q:\n%s", w, out)
			}
			if !strings.Contains(a.later.String(), w) && !strings.Contains(a.errs.String(), w) {
				t.Fatalf("the daemon did not say %q:\n%s%s", w, a.later, a.errs)
			}
		}
	}
	return a, b, write, reload
}

// A running daemon applies a changed configuration file's shares: a share
// added starts as at start-up and a peer calls it; one changed (its env)
// restarts, and the new program serves; one removed while a call runs
// takes no new call, lets that one finish, then is gone for the peer, its
// processes ended. A broken file applies nothing.
func TestConfigReloadAppliesShares(t *testing.T) {
	a, b, write, reload := reloadPair(t)
	call := func(tool, args string) (string, string, int) {
		t.Helper()
		return run(t, "--home", b.home, "call", a.id, tool, args)
	}

	// Added: started with the lines of a start-up; peers call it, and see
	// it in the node's card.
	mark := "MCPMESH_RELOAD_TEST=" + t.TempDir()
	k, v, _ := strings.Cut(mark, "=")
	write(shareJSON(t, "notes", map[string]string{demoProgramEnv: "1", k: v}))
	reload("share notes: starting", "share notes: ready, 2 tools", "card republished")
	if out, stderr, code := call("notes/write_note", `{"text":"added"}`); code != 0 || strings.TrimSpace(out) != "saved" {
		t.Fatalf("call the added share: exit %d: %s%s", code, out, stderr)
	}
	waitFor(t, 20*time.Second, "the card lists notes", func() bool {
		out, _, code := run(t, "--home", b.home, "card", a.id)
		return code == 0 && strings.Contains(out, "write_note")
	})

	// Changed (its env): the old program's processes end, the new one serves.
	gate := filepath.Join(t.TempDir(), "gate")
	write(shareJSON(t, "notes", map[string]string{gatedProgramEnv: gate}))
	reload("share notes: changed, restarting it", "share notes: stopped", "share notes: ready, 2 tools")
	if n := programsWithEnv(t, mark); n != 0 {
		t.Fatalf("%d processes of the old program still run", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	slow := exec.CommandContext(ctx, binary, "--home", b.home, "call", a.id, "notes/slow")
	var slowOut, slowErr bytes.Buffer
	slow.Stdout, slow.Stderr = &slowOut, &slowErr
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}
	slowDone := make(chan error, 1)
	go func() { slowDone <- slow.Wait() }()
	defer func() {
		if slow.ProcessState == nil {
			slow.Process.Kill()
			<-slowDone
		}
	}()
	waitFor(t, 20*time.Second, "the new program's slow call runs", func() bool {
		out, _, _ := run(t, "--home", a.home, "tasks")
		return strings.Contains(out, "notes/slow") && strings.Contains(out, "1/2 halfway")
	})

	// Removed while that call runs: no new call, the call in flight
	// finishes, then the share is gone and its processes have ended.
	write(`{}`)
	removed := make(chan string, 1)
	go func() {
		out, stderr, _ := run(t, "--home", a.home, "config", "reload")
		removed <- out + stderr
	}()
	waitFor(t, 20*time.Second, "the daemon says notes is removed", func() bool {
		return strings.Contains(a.later.String(), "share notes: removed")
	})
	// The peer's session in flight refuses it, or a new one finds no
	// server (the CLI's call may open either).
	if out, stderr, code := call("notes/slow", `{}`); code == 0 || !strings.Contains(stderr, "being removed") && !strings.Contains(stderr, `shares no server named "notes"`) {
		t.Fatalf("a new call while notes is removed: exit %d: %s%s", code, out, stderr)
	} else {
		t.Logf("a new call while notes is removed: %s", strings.TrimSpace(stderr))
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-slowDone:
		if err != nil || strings.TrimSpace(slowOut.String()) != "done" {
			t.Fatalf("the call in flight on the removed share: %v: %s%s", err, slowOut.String(), slowErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the call in flight on the removed share did not finish")
	}
	select {
	case out := <-removed:
		if !strings.Contains(out, "share notes: stopped") {
			t.Fatalf("config reload of the removal:\n%s", out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("config reload did not return once the call in flight finished")
	}
	if n := programsWithEnv(t, gatedProgramEnv+"="+gate); n != 0 {
		t.Fatalf("%d processes of the removed share still run", n)
	}
	if out, stderr, code := call("notes/slow", `{}`); code == 0 || !strings.Contains(stderr, `shares no server named "notes"`) {
		t.Fatalf("call the removed share: exit %d: %s%s", code, out, stderr)
	}

	// A broken file applies nothing, and says why; what runs stays.
	write(shareJSON(t, "notes", map[string]string{demoProgramEnv: "1"})[:20])
	out, stderr, code := run(t, "--home", a.home, "config", "reload")
	if code != 1 || !strings.Contains(stderr, "config not reloaded, nothing applied") {
		t.Fatalf("config reload of a broken file: exit %d: %s%s", code, out, stderr)
	}
	// A file that parses, with a share that would start, but an agent
	// that would not: nothing of it.
	good := shareJSON(t, "extra", map[string]string{demoProgramEnv: "1"})
	write(strings.TrimSuffix(good, "}") + `, "agents": [{"name": "helper", "description": "helps", "model": {"backend": "openai", "model": "m", "apiKeyEnv": "MCPMESH_RELOAD_TEST_UNSET_KEY"}}]}`)
	if _, stderr, code := run(t, "--home", a.home, "config", "reload"); code != 1 || !strings.Contains(stderr, "MCPMESH_RELOAD_TEST_UNSET_KEY is not set") {
		t.Fatalf("config reload of a file that does not check: exit %d: %s", code, stderr)
	}
	if out, _, code := run(t, "--home", a.home, "id", "--json"); code != 0 || strings.Contains(out, "extra") || !strings.Contains(out, `"node"`) {
		t.Fatalf("a broken file changed the shares: %s", out)
	}
}

// A reload adds, replaces and removes the file's agents (a peer calls the
// new one, then the replaced one, then finds it gone) and its triggers,
// and re-shares a peer's server, then stops.
func TestConfigReloadAppliesAgentsAndTriggers(t *testing.T) {
	a, b, write, reload := reloadPair(t)
	withAgent := func(greeting string) string {
		return `{"agents": [{"name": "greeter", "description": "greets", "model": {"backend": "scripted", "script": [{"answer": "` + greeting + ` {{task}}"}]}}],
		"triggers": [{"name": "greet", "event": "mesh.peer.joined", "from": ["self"], "call": "self/node/echo", "arguments": {"text": "joined"}}]}`
	}
	greet := func() (string, string, int) {
		return run(t, "--home", b.home, "call", a.id, "node/greeter", `{"task":"bob"}`)
	}
	triggers := func() string {
		out, _, _ := run(t, "--home", a.home, "on", "--list")
		return out
	}

	write(withAgent("hello"))
	reload("agent greeter: added", "trigger greet: added")
	if out, stderr, code := greet(); code != 0 || strings.TrimSpace(out) != "hello bob" {
		t.Fatalf("call the added agent: exit %d: %s%s", code, out, stderr)
	}
	if out := triggers(); !strings.Contains(out, "greet") {
		t.Fatalf("on --list after the trigger was added:\n%s", out)
	}

	write(withAgent("hi"))
	reload("agent greeter: replaced")
	if out, stderr, code := greet(); code != 0 || strings.TrimSpace(out) != "hi bob" {
		t.Fatalf("call the replaced agent: exit %d: %s%s", code, out, stderr)
	}

	write(`{}`)
	reload("agent greeter: removed", "trigger greet: removed")
	if out, stderr, code := greet(); code == 0 || !strings.Contains(stderr, "greeter") {
		t.Fatalf("call the removed agent: exit %d: %s%s", code, out, stderr)
	} else {
		t.Logf("call the removed agent: %s", strings.TrimSpace(stderr))
	}
	if out := triggers(); strings.Contains(out, "greet") {
		t.Fatalf("on --list after the trigger was removed:\n%s", out)
	}

	// A peer's server re-shared, then no longer (called by a itself: b's
	// call through a back to b would be a loop).
	write(`{"shares": {"far": {"peer": "` + b.addr + `/node"}}}`)
	reload("share far: re-sharing", "card republished")
	if out, stderr, code := run(t, "--home", a.home, "call", a.id, "far/echo", `{"text":"round trip"}`); code != 0 || strings.TrimSpace(out) != "round trip" {
		t.Fatalf("call the re-shared server: exit %d: %s%s", code, out, stderr)
	}
	write(`{}`)
	reload("share far: removed", "share far: stopped")

	// What a reload does not apply, it says.
	write(`{"name": "renamed"}`)
	reload("warning: name changed in", "restart it")
	if out, _, _ := run(t, "--home", a.home, "id"); strings.Contains(out, "renamed") {
		t.Fatalf("a reload applied the name:\n%s", out)
	}
}
