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

// reachStatus is what the tests read of `mcpmesh status --json`.
type reachStatus struct {
	Reachability string `json:"reachability"`
	DecidedBy    string `json:"decidedBy"`
	Relaying     bool   `json:"relaying"`
	Relays       []struct {
		ID    string   `json:"id"`
		Addrs []string `json:"addrs"`
	} `json:"relays"`
	Peers []peerStatus `json:"peers"`
}

type peerStatus struct {
	ID        string `json:"id"`
	Relayed   bool   `json:"relayed"`
	Via       string `json:"via"`
	Transport string `json:"transport"`
	Addr      string `json:"addr"`
}

// status reads d's `mcpmesh status --json`; ok is false (with why) if the
// command failed.
func status(d *Daemon) (reachStatus, bool, string) {
	r := cli(d, "status", "--json")
	var st reachStatus
	if !r.OK() {
		return st, false, r.String()
	}
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		return st, false, fmt.Sprintf("status --json: %v: %s", err, r.Stdout)
	}
	return st, true, ""
}

// peerIn returns d's status of peer id, if connected.
func (s reachStatus) peer(id string) (peerStatus, bool) {
	for _, p := range s.Peers {
		if p.ID == id {
			return p, true
		}
	}
	return peerStatus{}, false
}

// hasRelay reports whether d holds a reservation with relay id.
func (s reachStatus) hasRelay(id string) bool {
	for _, r := range s.Relays {
		if r.ID == id {
			return true
		}
	}
	return false
}

// names reports whether text names peer id (whole, or by the end that
// short forms keep).
func names(text, id string) bool {
	return strings.Contains(text, id[len(id)-8:])
}

// callAsync runs a CLI command in the background; its result arrives on
// the channel.
func callAsync(d *Daemon, timeout time.Duration, args ...string) <-chan Result {
	out := make(chan Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out <- d.CLI(ctx, args...)
	}()
	return out
}
