package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTasksListTreeAndCancel(t *testing.T) {
	a := startDaemon(t)
	b := startDaemon(t, "--peer", a.addr)
	if _, stderr, code := run(t, "--home", b.home, "call", a.id, "echo", `{"text":"hi"}`); code != 0 {
		t.Fatalf("call: exit %d: %s", code, stderr)
	}

	out, _, code := run(t, "--home", b.home, "tasks", "--json")
	var list []struct {
		ID       string `json:"id"`
		Role     string `json:"role"`
		State    string `json:"state"`
		Children []struct {
			Peer string `json:"peer"`
		} `json:"children"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 {
		t.Fatalf("tasks --json: exit %d: %s", code, out)
	}
	root := list[0]
	if root.Role != "call" || root.State != "completed" || len(root.Children) != 1 || root.Children[0].Peer != a.id {
		t.Fatalf("root task: %+v", root)
	}

	out, _, code = run(t, "--home", b.home, "tasks")
	if code != 0 || !strings.Contains(out, root.ID) || !strings.Contains(out, "node/echo") {
		t.Fatalf("tasks: exit %d: %s", code, out)
	}
	out, _, code = run(t, "--home", a.home, "tasks")
	if code != 0 || !strings.Contains(out, "served") || !strings.Contains(out, b.id) {
		t.Fatalf("tasks on the serving daemon: exit %d: %s", code, out)
	}

	out, stderr, code := run(t, "--home", b.home, "tasks", "--tree", root.ID)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "call node/echo → "+a.id) ||
		!strings.HasPrefix(lines[1], "└─ node/echo on "+a.id) || !strings.Contains(lines[1], "completed") {
		t.Fatalf("tasks --tree: exit %d: %q %s", code, out, stderr)
	}

	// A task is named by the start of its ID, as people type it.
	short, _, code := run(t, "--home", b.home, "tasks", "--tree", root.ID[:5])
	if code != 0 || short != out {
		t.Fatalf("tasks --tree %s: exit %d: %q, want %q", root.ID[:5], code, short, out)
	}
	// The task has completed: cancelling it does nothing, and says so.
	out, stderr, code = run(t, "--home", b.home, "tasks", "cancel", root.ID[:5]+"…")
	if code != 1 || out != "" || !strings.Contains(stderr, "task "+root.ID+" has already ended (completed)") {
		t.Fatalf("tasks cancel of a completed task: exit %d: %q %q", code, out, stderr)
	}
	_, stderr, code = run(t, "--home", b.home, "tasks", "cancel", "nosuchtask")
	if code != 1 || !strings.Contains(stderr, "no task nosuchtask") {
		t.Fatalf("tasks cancel of an unknown task: exit %d: %s", code, stderr)
	}
}
