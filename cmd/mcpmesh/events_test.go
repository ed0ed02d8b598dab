package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Triggers from the configuration file and from `mcpmesh on`: each firing
// is a root task whose cause `mcpmesh tasks` shows, `on --list` counts
// them, `on --remove` stops one, and a bad rule is a usage error naming it.
func TestTriggersFromConfigAndCLI(t *testing.T) {
	home := t.TempDir()
	cfg := `{"triggers": [{"name": "greet", "event": "mesh.peer.joined", "from": ["self"],
		"call": "self/node/echo", "arguments": {"text": "{{event.data.peer}} joined"}}]}`
	if err := os.WriteFile(filepath.Join(home, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startDaemonAt(t, home, "--config", filepath.Join(home, "config.json"), "--open")
	if !strings.Contains(a.out.String(), "triggers: 1") {
		t.Errorf("banner: %s", a.out)
	}
	b := startDaemon(t, "--peer", a.addr)

	eventually := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 15s: %s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	eventually("a's trigger fires when b joins", func() bool {
		out, _, _ := run(t, "--home", a.home, "tasks")
		return strings.Contains(out, "event mesh.peer.joined from") && strings.Contains(out, "(trigger greet)")
	})

	// From the command line, on b: when one of b's own calls to a ends,
	// b calls its own echo (whose own end does not match: its target is b).
	out, stderr, code := run(t, "--home", b.home, "on", "mcp.task.ended", "--name", "after-a", "--from", "self",
		"--where", "target="+a.id, "--where", "state=completed",
		"--call", "self/node/echo", "--args", `{"text":"{{event.data.tool}} done"}`)
	if code != 0 || !strings.Contains(out, "trigger after-a: on mcp.task.ended from self") || !strings.Contains(out, `"call": "self/node/echo"`) {
		t.Fatalf("on: exit %d: %s %s", code, out, stderr)
	}
	if _, stderr, code := run(t, "--home", b.home, "call", a.id, "echo", `{"text":"hi"}`); code != 0 {
		t.Fatalf("call: %s", stderr)
	}
	var root string
	eventually("b's trigger fires after its call to a", func() bool {
		out, _, _ := run(t, "--home", b.home, "tasks", "--json")
		var list []struct {
			ID    string `json:"id"`
			Cause *struct {
				Trigger string `json:"trigger"`
			} `json:"cause"`
		}
		json.Unmarshal([]byte(out), &list)
		for _, tk := range list {
			if tk.Cause != nil && tk.Cause.Trigger == "after-a" {
				root = tk.ID
			}
		}
		return root != ""
	})
	out, _, code = run(t, "--home", b.home, "tasks", "--tree", root)
	if lines := strings.Split(out, "\n"); code != 0 || !strings.HasPrefix(lines[0], "event mcp.task.ended from") || !strings.HasPrefix(lines[1], "└▶ call node/echo → "+b.id) {
		t.Errorf("tasks --tree of a firing: exit %d:\n%s", code, out)
	}
	out, _, _ = run(t, "--home", b.home, "on", "--list")
	if !strings.Contains(out, "after-a") || !strings.Contains(out, "mcp.task.ended") || !strings.Contains(out, "connected") {
		t.Errorf("on --list:\n%s", out)
	}
	out, _, code = run(t, "--home", b.home, "on", "--list", "--json")
	var st []struct {
		Counts struct{ Fired, Filtered int }
	}
	if json.Unmarshal([]byte(out), &st); code != 0 || len(st) != 1 || st[0].Counts.Fired != 1 {
		t.Errorf("on --list --json: %s", out)
	}
	if out, _, code := run(t, "--home", b.home, "on", "--remove", "after-a"); code != 0 || !strings.Contains(out, "removed after-a") {
		t.Errorf("on --remove: exit %d %s", code, out)
	}
	if _, stderr, code := run(t, "--home", b.home, "on", "x.y", "--call", "nobody/tool"); code != 2 || !strings.Contains(stderr, `"nobody" is not a peer ID`) {
		t.Errorf("a bad rule: exit %d %s", code, stderr)
	}

	// events lists what a peer lets this node subscribe to.
	out, _, code = run(t, "--home", b.home, "events", a.id)
	if code != 0 || !strings.Contains(out, "mcp.resource.updated") {
		t.Errorf("events %s: exit %d\n%s", a.id, code, out)
	}
}

func TestBadTriggerInConfigNamesIt(t *testing.T) {
	home := t.TempDir()
	path := filepath.Join(home, "config.json")
	for cfg, want := range map[string]string{
		`{"triggers": [{"name": "x", "event": "e.v", "call": "self/node/echo", "rate": -1}]}`:                      "triggers[0]: trigger x: rate",
		`{"triggers": [{"name": "x", "event": "e.v"}]}`:                                                            "give exactly one of call",
		`{"triggers": [{"name": "x", "event": "e.v", "agent": "a"}, {"name": "x", "event": "e.w", "agent": "b"}]}`: "comes twice",
	} {
		os.WriteFile(path, []byte(cfg), 0o600)
		_, stderr, code := run(t, "--home", home, "node", "--config", path, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns")
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("config %s: exit %d, %s; want 2 and %q", cfg, code, stderr, want)
		}
	}

}

// Watching an event type the peer does not offer fails at once, naming
// those it does (a subscription would retry the refusal forever), where a
// type it offers is subscribed to.
func TestWatchOfAnEventTypeThePeerDoesNotOfferFails(t *testing.T) {
	a := startDaemon(t)
	b := startDaemon(t, "--peer", a.addr)

	for _, peer := range []string{a.id, "self"} {
		start := time.Now()
		_, stderr, code := run(t, "--home", b.home, "events", peer, "mesh.nope", "--watch")
		if code != 1 || !strings.Contains(stderr, `no event type "mesh.nope"`) || !strings.Contains(stderr, "mesh.peer.joined") {
			t.Errorf("events %s mesh.nope --watch: exit %d, %q; want exit 1 naming what it offers", peer, code, stderr)
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("events %s mesh.nope --watch took %v", peer, time.Since(start))
		}
	}
	if _, _, code := run(t, "--home", b.home, "events", a.id, "mesh.nope"); code != 2 {
		t.Errorf("events PEER EVENT without --watch or --poll: exit %d, want 2", code)
	}

	// A type a offers: the watch subscribes and runs until stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "--home", b.home, "events", a.id, "mesh.peer.joined", "--watch")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "subscribed, cursor ") {
		t.Errorf("events %s mesh.peer.joined --watch: first line %q, want subscribed", a.id, sc.Text())
	}
}
