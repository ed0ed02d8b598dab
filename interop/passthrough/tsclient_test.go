package passthrough

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A client on the official TypeScript SDK (2.x, @modelcontextprotocol/client)
// uses the gateway's mesh mode (/mcp) over Streamable HTTP on both protocol
// eras: the 2025 initialize handshake and 2026-07-28 (server/discover, no
// sessions). On each it lists the three tools and calls a program two hops
// away through mesh_call, with its progress.
func TestTypeScriptClientOnMeshModeBothVersions(t *testing.T) {
	everything := everythingProgram(t)
	script, err := filepath.Abs(filepath.Join("..", "tsclient", "http.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(script), "node_modules", "@modelcontextprotocol", "client")); err != nil {
		skipOrFail(t, "npm packages of interop/tsclient not installed: run `npm install --no-package-lock --prefix interop/tsclient` (.ci/run does)")
	}
	m := startMesh(t, share{name: "everything", command: everything.command()})
	const steps = 3
	for mode, version := range map[string]string{"legacy": v20251125, "modern": v20260728} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", script, m.a.http, mode, m.target("everything")+"/trigger-long-running-operation",
				fmt.Sprintf(`{"duration":0.15,"steps":%d}`, steps))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("ts client (%s): %v\n%s", mode, err, stderr.String())
			}
			var got struct {
				Version  string    `json:"version"`
				Server   string    `json:"server"`
				Tools    []string  `json:"tools"`
				Answer   string    `json:"answer"`
				Progress []float64 `json:"progress"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("ts client printed %q: %v", out, err)
			}
			if got.Version != version || got.Server != "mcpmesh" || strings.Join(got.Tools, ",") != "mesh_call,mesh_describe,mesh_search" ||
				!strings.Contains(got.Answer, "Long running operation completed") {
				t.Errorf("ts client (%s) saw %+v", mode, got)
			}
			if len(got.Progress) != steps {
				t.Errorf("ts client (%s): progress %v, want %d notifications", mode, got.Progress, steps)
			}
		})
	}
}
