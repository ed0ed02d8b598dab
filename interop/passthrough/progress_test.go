package passthrough

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// progressOf returns the progress values of the progress notifications for
// token among msgs, in order.
func progressOf(msgs []any, token string) []float64 {
	var out []float64
	for _, m := range msgs {
		if method(m) != "notifications/progress" {
			continue
		}
		p, _ := m.(map[string]any)["params"].(map[string]any)
		if p["progressToken"] == token {
			v, _ := p["progress"].(float64)
			out = append(out, v)
		}
	}
	return out
}

// Progress reaches the host from every path: each notification the program
// sends for the host's token arrives, on that token, before the barrier that
// follows the result (server-everything's long-running operation sends one
// per step). Several calls in a row, since a late notification is a race.
func TestProgressEverywhere(t *testing.T) {
	everything := everythingProgram(t)
	m := startMesh(t, share{name: "everything", command: everything.command()})
	const steps, calls = 3, 5
	want := fmt.Sprint([]float64{1, 2, 3})
	longOp := func(token string) map[string]any {
		return map[string]any{"name": "trigger-long-running-operation", "arguments": map[string]any{"duration": 0.15, "steps": steps},
			"_meta": map[string]any{"progressToken": token}}
	}

	// Directly, and through `stdio --to` and /mcp/PEER/SERVER: every
	// notification, on the host's own token.
	paths := map[string]func(t *testing.T) conn{
		"direct": func(t *testing.T) conn { return everything.start(t) },
		"stdio-to": func(t *testing.T) conn {
			return startStdio(t, nil, mcpmeshBin, "--home", m.a.home, "stdio", "--to", m.target("everything"))
		},
		"http": func(t *testing.T) conn { return newHTTPConn(t, m.url("everything"), "") },
	}
	for _, name := range []string{"direct", "stdio-to", "http"} {
		t.Run(name, func(t *testing.T) {
			r := &runner{t: t, c: paths[name](t), nextID: 1}
			for _, s := range initSteps(v20251125, "") {
				r.do(s)
			}
			for i := range calls {
				token := fmt.Sprintf("progress-%d", i)
				rec := r.do(step{name: "long op", method: "tools/call", params: longOp(token)})
				if got := fmt.Sprint(progressOf(rec.messages, token)); got != want {
					t.Errorf("call %d: progress on %q = %s, want %s (all %d steps)", i, token, got, want, steps)
				}
			}
		})
	}

	// Mesh mode: mesh_call carries the host's progressToken to the tool it
	// calls, and the tool's progress comes back on it.
	t.Run("mesh_call", func(t *testing.T) {
		r := &runner{t: t, c: startStdio(t, nil, mcpmeshBin, "--home", m.a.home, "stdio"), nextID: 1}
		for _, s := range initSteps(v20251125, "") {
			r.do(s)
		}
		rec := r.do(step{name: "mesh_call", method: "tools/call", params: map[string]any{"name": "mesh_call",
			"arguments": map[string]any{"ref": m.target("everything") + "/trigger-long-running-operation",
				"arguments": map[string]any{"duration": 0.15, "steps": steps}},
			"_meta": map[string]any{"progressToken": "mesh-call-progress"}}})
		if b, _ := json.Marshal(rec.response); bytes.Contains(b, []byte(`"isError":true`)) || bytes.Contains(b, []byte(`"error"`)) {
			t.Fatalf("mesh_call failed: %s", b)
		}
		if got := progressOf(rec.messages, "mesh-call-progress"); len(got) != steps {
			t.Errorf("mesh_call: %d progress notifications on the host's token (%v), want %d", len(got), got, steps)
		}
	})

	// `mcpmesh call` shows progress on stderr as it comes, as N/TOTAL.
	t.Run("mcpmesh-call", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, mcpmeshBin, "--home", m.a.home, "call", m.b.id, "everything/trigger-long-running-operation",
			fmt.Sprintf(`{"duration":0.15,"steps":%d}`, steps))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("mcpmesh call: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		for i := 1; i <= steps; i++ {
			if p := fmt.Sprintf("%d/%d", i, steps); !strings.Contains(stderr.String(), p) {
				t.Errorf("mcpmesh call: stderr lacks progress %s:\n%s", p, stderr.String())
			}
		}
	})
}
