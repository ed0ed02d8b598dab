package passthrough

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/mcp/upstream"
	"github.com/mcpmesh/mcpmesh/node"
)

// What a share's mode costs a caller's first request and the sharing
// node's memory (issue 12): a new session (stream, initialize) and its
// first request (tools/list), new-session-ms, to the program shared
//
//	isolated        a process of its own, started ahead (the default)
//	isolated-cold   a process of its own started for it (no spare)
//	shared          the one process every caller shares
//
// beside the same program started, initialized and called directly
// (direct-cold). rss-MB is the resident memory of one of the share's
// processes: what each isolated session costs.
//
//	go test ./bench/passthrough -run XXX -bench ShareModes -benchtime 20x
func BenchmarkShareModes(b *testing.B) {
	build(b)
	programs := map[string][]string{"go-fixture": {fixtureBin, "--stdio", "--update-every", "1h"}}
	if mem, err := filepath.Abs("../../interop/servers/node_modules/.bin/mcp-server-memory"); err == nil {
		if _, err := os.Stat(mem); err == nil {
			programs["node-server-memory"] = []string{"env", "MEMORY_FILE_PATH=$" + upstream.SessionDirEnv + "/m.jsonl", mem}
		}
	}
	for _, prog := range []string{"go-fixture", "node-server-memory"} {
		args, ok := programs[prog]
		if !ok {
			continue // npm packages of interop/servers not installed
		}
		b.Run(prog+"/direct-cold", func(b *testing.B) {
			var total time.Duration
			for range b.N {
				start := time.Now()
				c := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "bench"}, nil)
				cmd := exec.Command("/bin/sh", "-c", "exec "+strings.Join(args, " "))
				cs, err := c.Connect(context.Background(), &sdkmcp.CommandTransport{Command: cmd}, nil)
				total += firstRequest(b, cs, err, start)
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "new-session-ms")
		})
		for _, mode := range []struct {
			name string
			opts []node.ShareOption
		}{
			{"isolated", nil},
			{"isolated-cold", []node.ShareOption{node.ShareSessions(upstream.PoolConfig{Spares: -1})}},
			{"shared", []node.ShareOption{node.ShareMode(relay.Shared)}},
		} {
			b.Run(prog+"/"+mode.name, func(b *testing.B) { shareModeCost(b, args, mode.name, mode.opts) })
		}
	}
}

func shareModeCost(b *testing.B, args []string, mode string, opts []node.ShareOption) {
	ctx := context.Background()
	newNode := func() *node.Node {
		n, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { n.Close() })
		return n
	}
	sharer, caller := newNode(), newNode()
	cmd := upstream.ShellCommand(strings.Join(args, " "))
	if err := sharer.ShareCommand(ctx, "prog", cmd, opts...); err != nil {
		b.Fatal(err)
	}
	if _, err := caller.Connect(ctx, sharer.Addrs()[0].String()); err != nil {
		b.Fatal(err)
	}
	status := func() upstream.ShareStatus { return sharer.Programs()[0] }
	client := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "bench"}, nil)
	var total time.Duration
	for range b.N {
		b.StopTimer()
		// A spare is ready again (and the last session's process gone).
		deadline := time.Now().Add(30 * time.Second)
		for mode == "isolated" && (status().Spares < 1 || status().Sessions > 0) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		b.StartTimer()
		start := time.Now()
		s, err := caller.Host().NewStream(ctx, sharer.ID(), transport.ProtocolID("prog"))
		if err != nil {
			b.Fatal(err)
		}
		cs, err := client.Connect(ctx, &transport.StreamTransport{Stream: s}, &sdkmcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
		total += firstRequest(b, cs, err, start)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "new-session-ms")
	if rss := rssMB(status().PID); rss > 0 {
		b.ReportMetric(rss, "rss-MB")
	}
	st := status()
	b.ReportMetric(float64(1+st.Spares), "idle-processes")
}

// firstRequest makes the first request of a session that connected (err
// from Connect), returns the time since start, and closes the session off
// the clock.
func firstRequest(b *testing.B, cs *sdkmcp.ClientSession, err error, start time.Time) time.Duration {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cs.ListTools(context.Background(), nil); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	b.StopTimer()
	cs.Close()
	b.StartTimer()
	return took
}

// rssMB is the resident memory of process pid, in MB (0 if unknown).
func rssMB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}
