package netns

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newLab is a lab running the mcpmesh built by TestMain.
func newLab(t *testing.T) *Lab {
	t.Helper()
	var env []string
	if *logLevel != "" {
		env = append(env, "GOLOG_LOG_LEVEL="+*logLevel)
	}
	return New(t, Options{Binary: binary, Env: env})
}

// waitFor polls cond every 200 ms until it holds or d passes; then the test
// fails with what cond last said.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return time.Since(start)
		}
		last = msg
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v; last: %s", what, d, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cli runs a command of d's CLI with a 60 s bound.
func cli(d *Daemon, args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return d.CLI(ctx, args...)
}

// withTool returns the --share flags that give h's daemon the lab's tool
// server as server "tool", and the path of its marks file.
func withTool(t *testing.T, h *Host) ([]string, string) {
	t.Helper()
	marks := filepath.Join(t.TempDir(), h.Name()+".marks")
	return []string{"--share", "tool=" + ToolCommand(selfPath, h.Name(), marks)}, marks
}

// peerEntry is one line of `mcpmesh peers --json`.
type peerEntry struct {
	ID      string   `json:"id"`
	Addrs   []string `json:"addrs"`
	Servers []string `json:"servers"`
}

func peers(t *testing.T, d *Daemon) []peerEntry {
	t.Helper()
	r := cli(d, "peers", "--json")
	if !r.OK() {
		t.Fatalf("%s: %v", d.Name(), r)
	}
	var out []peerEntry
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		t.Fatalf("%s peers --json: %v: %s", d.Name(), err, r.Stdout)
	}
	return out
}

// connected reports whether d has a connection to id, and over what.
func connected(t *testing.T, d *Daemon, id string) (bool, []string) {
	for _, p := range peers(t, d) {
		if p.ID == id {
			return true, p.Addrs
		}
	}
	return false, nil
}

// relayed reports whether every address is a relayed (p2p-circuit) one.
func relayed(addrs []string) bool {
	return len(addrs) > 0 && !slices.ContainsFunc(addrs, func(a string) bool { return !strings.Contains(a, "/p2p-circuit") })
}

// hasMark reports whether the marks file holds the line want.
func hasMark(path, want string) (bool, string) {
	m := Marks(path)
	return slices.Contains(m, want), fmt.Sprintf("marks %v", m)
}

func short(id string) string {
	if len(id) > 12 {
		return id[:6] + "…" + id[len(id)-4:]
	}
	return id
}
