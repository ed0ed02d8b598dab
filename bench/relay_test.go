package bench

import (
	"context"
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

// TestRelayHopCPU holds the CPU time of a call through a relay hop
// (--share-peer) to a ratio of a direct call's, both set up in this process
// and measured side by side: rounds of one call on each path in turn, so
// that the machine's load falls on both alike, medians (a GC cycle's CPU
// falls on whichever call it interrupts). Everything the three nodes do for
// a call counts. Measured: x1.57 (about +110 µs; issue 12's target is
// +50 µs); held to x1.8. TestAllocationBudgets holds its allocations.
//
//	go test ./bench -run TestRelayHopCPU -v -count=1
func TestRelayHopCPU(t *testing.T) {
	const maxCPURatio = 1.8
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
	if cpu[0] == 0 {
		t.Skip("no CPU time on this platform")
	}
	ratio := float64(cpu[1]) / float64(cpu[0])
	t.Logf("median CPU per call: via relay %v, direct %v: x%.2f", cpu[1].Round(time.Microsecond), cpu[0].Round(time.Microsecond), ratio)
	if ratio > maxCPURatio {
		t.Errorf("a call via a relay costs x%.2f the CPU of a direct one, over x%.2f", ratio, maxCPURatio)
	}
}
