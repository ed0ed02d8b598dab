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
	return relayCallWith(tb, viaRelay, callerOpts, nil)
}

// relayCallWith is relayCall with options for A and for all three nodes.
func relayCallWith(tb testing.TB, viaRelay bool, callerOpts, allOpts []node.Option) call {
	tb.Helper()
	ctx := context.Background()
	a, b, c := newNode(tb, append(slices.Clone(allOpts), callerOpts...)...), newNode(tb, allOpts...), newNode(tb, allOpts...)
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
// the same call to C made directly and through B, in one run. B relays the
// session frame by frame, decoding a frame only where a layer must look at
// it (a tools/call: its envelope and the head of its params, once for the
// trust and task layers). The bare cases turn delegation and task tracking
// off at all three nodes: what is left of the hop is libp2p's and the
// policy's, the floor of what a relay hop can cost.
func BenchmarkRelay(b *testing.B) {
	bare := []node.Option{node.WithoutDelegation(), node.WithTaskTracking(false)}
	for _, c := range []struct {
		name      string
		via       bool
		opts, all []node.Option
	}{
		{"direct", false, nil, nil},
		{"via-relay", true, nil, nil},
		{"direct-no-delegation", false, []node.Option{node.WithoutDelegation()}, nil},
		{"via-relay-no-delegation", true, []node.Option{node.WithoutDelegation()}, nil},
		{"direct-bare", false, nil, bare},
		{"via-relay-bare", true, nil, bare},
	} {
		b.Run(c.name, func(b *testing.B) { timeCalls(b, relayCallWith(b, c.via, c.opts, c.all)) })
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
// a call counts. Measured: x1.32–1.65, median about x1.4 (about +80 µs at
// load 1; x1.57 and +110 µs before the relay decoded a frame once for its
// layers; issue 12's target is +50 µs, see BenchmarkRelay's bare cases);
// held to x1.7. TestAllocationBudgets holds its allocations.
//
//	go test ./bench -run TestRelayHopCPU -v -count=1
func TestRelayHopCPU(t *testing.T) {
	const maxCPURatio = 1.7
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The bare pair (delegation and task tracking off at all three nodes)
	// is the floor a relay hop costs, logged alongside, not held.
	bare := []node.Option{node.WithoutDelegation(), node.WithTaskTracking(false)}
	calls := []call{relayCall(t, false), relayCall(t, true), relayCallWith(t, false, nil, bare), relayCallWith(t, true, nil, bare)}
	run := func(c call) {
		if err := c(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 { // warm-up: sessions, pools, caches
		for _, c := range calls {
			run(c)
		}
	}
	samples := make([][]time.Duration, len(calls))
	for range 301 {
		for i, c := range calls {
			start := cpuTime()
			run(c)
			samples[i] = append(samples[i], cpuTime()-start)
		}
	}
	cpu := make([]time.Duration, len(calls))
	for i := range samples {
		slices.Sort(samples[i])
		cpu[i] = samples[i][len(samples[i])/2]
	}
	if cpu[0] == 0 {
		t.Skip("no CPU time on this platform")
	}
	ratio := float64(cpu[1]) / float64(cpu[0])
	us := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	t.Logf("median CPU per call: via relay %v, direct %v: x%.2f (+%v)", us(cpu[1]), us(cpu[0]), ratio, us(cpu[1]-cpu[0]))
	t.Logf("bare (no delegation, no task tracking): via relay %v, direct %v: x%.2f (+%v)", us(cpu[3]), us(cpu[2]), float64(cpu[3])/float64(cpu[2]), us(cpu[3]-cpu[2]))
	if ratio > maxCPURatio {
		t.Errorf("a call via a relay costs x%.2f the CPU of a direct one, over x%.2f", ratio, maxCPURatio)
	}
}
