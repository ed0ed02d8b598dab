package bench

import (
	"context"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

// relayCall calls C's echo from A: directly, or through B re-sharing C's
// server (--share-peer), A connected only to B.
func relayCall(tb testing.TB, viaRelay bool, callerOpts ...node.Option) call {
	tb.Helper()
	ctx := context.Background()
	a, b, c := newNode(tb, callerOpts...), newNode(tb), newNode(tb)
	if _, err := b.Connect(ctx, c.Addrs()[0].String()); err != nil {
		tb.Fatal(err)
	}
	if !viaRelay {
		if _, err := a.Connect(ctx, c.Addrs()[0].String()); err != nil {
			tb.Fatal(err)
		}
		return func(ctx context.Context) error {
			return checkEcho(a.CallServerTool(ctx, c.ID(), transport.DefaultServer, "echo", echoArgs))
		}
	}
	if err := b.SharePeer("far", c.ID(), transport.DefaultServer); err != nil {
		tb.Fatal(err)
	}
	if _, err := a.Connect(ctx, b.Addrs()[0].String()); err != nil {
		tb.Fatal(err)
	}
	return func(ctx context.Context) error {
		return checkEcho(a.CallServerTool(ctx, b.ID(), "far", "echo", echoArgs))
	}
}

// BenchmarkRelay measures what one relay hop (--share-peer) adds to a call:
// the same call to C made directly and through B, in one run. B pumps the
// session message by message, decoding only the JSON-RPC envelope (and the
// _meta of a tools/call, to extend its task path).
func BenchmarkRelay(b *testing.B) {
	for _, c := range []struct {
		name string
		via  bool
		opts []node.Option
	}{
		{"direct", false, nil},
		{"via-relay", true, nil},
		{"direct-no-delegation", false, []node.Option{node.WithoutDelegation()}},
		{"via-relay-no-delegation", true, []node.Option{node.WithoutDelegation()}},
	} {
		b.Run(c.name, func(b *testing.B) { timeCalls(b, relayCall(b, c.via, c.opts...)) })
	}
}

func TestRelayPaths(t *testing.T) {
	for _, via := range []bool{false, true} {
		call := relayCall(t, via)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for range 3 {
			if err := call(ctx); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
	}
}

// TestRelayHopBudget holds a relay hop (--share-peer) to a budget over a
// direct hop, both set up in this process and measured side by side:
// allocations per call (testing.AllocsPerRun), bytes allocated per call,
// and the median CPU time per call as a ratio (rounds of one call on each path in
// turn, so that the machine's load falls on both alike). Everything the
// three nodes do for a call counts, the relay's rewrites (trust, the task
// layer) above all.
//
// Issue 12's targets for a relay hop are +4 KB and +50 µs over a direct
// hop; the budgets below are what the relay does today (+124 allocs,
// +15 KB, median CPU ×1.57: about +110 µs) with slack, so that it does not
// grow. Both are over the targets: see DESIGN.md ("What a relay hop
// costs").
//
//	go test ./bench -run TestRelayHopBudget -v -count=1
func TestRelayHopBudget(t *testing.T) {
	maxExtraAllocs, maxExtraBytes, maxCPURatio := 160.0, 20.0*1024, 1.8
	if raceEnabled { // measured +138 allocs, +20 KB, x1.65
		maxExtraAllocs, maxExtraBytes = 180, 26*1024
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	direct, relayed := relayCall(t, false), relayCall(t, true)
	run := func(c call) {
		if err := c(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 { // warm-up: sessions, pools, caches
		run(direct)
		run(relayed)
	}
	allocs := func(c call) float64 { return testing.AllocsPerRun(300, func() { run(c) }) }
	bytes := func(c call) float64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 300 {
			run(c)
		}
		runtime.ReadMemStats(&after)
		return float64(after.TotalAlloc-before.TotalAlloc) / 300
	}
	// Medians: a GC cycle's CPU falls on whichever call it interrupts.
	var samples [2][]time.Duration
	for range 301 {
		for i, c := range []call{direct, relayed} {
			start := cpuTime()
			run(c)
			samples[i] = append(samples[i], cpuTime()-start)
		}
	}
	var cpu [2]time.Duration
	for i := range samples {
		slices.Sort(samples[i])
		cpu[i] = samples[i][len(samples[i])/2]
	}
	da, ra := allocs(direct), allocs(relayed)
	db, rb := bytes(direct), bytes(relayed)
	ratio := float64(cpu[1]) / float64(cpu[0])
	t.Logf("per call: direct %.0f allocs, %.1f KB; via relay %.0f allocs, %.1f KB: the relay hop adds %+.0f allocs, %+.1f KB; median CPU via relay ×%.2f direct (%v vs %v)",
		da, db/1024, ra, rb/1024, ra-da, (rb-db)/1024, ratio, cpu[1].Round(time.Microsecond), cpu[0].Round(time.Microsecond))
	if ra-da > maxExtraAllocs {
		t.Errorf("a relay hop adds %.0f allocations per call, over its budget of %.0f", ra-da, maxExtraAllocs)
	}
	if rb-db > maxExtraBytes {
		t.Errorf("a relay hop adds %.1f KB per call, over its budget of %.0f KB", (rb-db)/1024, maxExtraBytes/1024)
	}
	if cpu[0] > 0 && ratio > maxCPURatio {
		t.Errorf("a call via a relay costs ×%.2f the CPU of a direct one, over ×%.2f", ratio, maxCPURatio)
	}
}
