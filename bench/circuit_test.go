package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/reach"
)

// circuitCall calls echo on a node from A: directly, or over a connection
// relayed by B's circuit relay (libp2p circuit v2: B forwards bytes between
// two streams; A and the target run TLS and yamux end to end inside).
func circuitCall(tb testing.TB, relayed bool) call {
	tb.Helper()
	ctx := context.Background()
	a := newNode(tb)
	if !relayed {
		c := newNode(tb)
		if _, err := a.Connect(ctx, c.Addrs()[0].String()); err != nil {
			tb.Fatal(err)
		}
		return func(ctx context.Context) error {
			return checkEcho(a.CallServerTool(ctx, c.ID(), transport.DefaultServer, "echo", echoArgs))
		}
	}
	b := newNode(tb, node.WithRelayService(reach.RelayOn))
	d := newNode(tb, node.WithRelays(lpeer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}))
	var circuits []ma.Multiaddr
	deadline := time.Now().Add(10 * time.Second)
	for len(circuits) == 0 && time.Now().Before(deadline) {
		for _, addr := range d.Host().Addrs() {
			if strings.Contains(addr.String(), "/p2p-circuit") {
				circuits = append(circuits, addr)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(circuits) == 0 {
		tb.Fatal("no reservation with the relay within 10s")
	}
	if err := a.ConnectAddr(ctx, lpeer.AddrInfo{ID: d.ID(), Addrs: circuits}); err != nil {
		tb.Fatal(err)
	}
	return func(ctx context.Context) error {
		if conns := a.Host().Network().ConnsToPeer(d.ID()); len(conns) != 1 || !conns[0].Stat().Limited {
			return fmt.Errorf("%d connections to the target, want one relayed", len(conns))
		}
		return checkEcho(a.CallServerTool(ctx, d.ID(), transport.DefaultServer, "echo", echoArgs))
	}
}

// BenchmarkCircuitRelay measures what a circuit relay adds to a call: the
// same call made over a direct connection and over one relayed by a third
// node, in one run. Unlike BenchmarkRelay (--share-peer, an MCP-level hop),
// the relay sees only encrypted bytes.
func BenchmarkCircuitRelay(b *testing.B) {
	for _, relayed := range []bool{false, true} {
		name := "direct"
		if relayed {
			name = "circuit"
		}
		b.Run(name, func(b *testing.B) { timeCalls(b, circuitCall(b, relayed)) })
	}
}

// BenchmarkCircuitRelayInterleaved makes one direct and one relayed call per
// iteration, timing each: on a busy machine both see the same load, and
// relayed/direct is the overhead as a ratio.
func BenchmarkCircuitRelayInterleaved(b *testing.B) {
	direct, relayed := circuitCall(b, false), circuitCall(b, true)
	ctx := context.Background()
	var td, tr time.Duration
	for _, call := range []call{direct, relayed} {
		if err := call(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if err := direct(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := relayed(ctx); err != nil {
			b.Fatal(err)
		}
		td += t1.Sub(t0)
		tr += time.Since(t1)
	}
	b.ReportMetric(float64(td.Nanoseconds())/float64(b.N), "direct-ns/call")
	b.ReportMetric(float64(tr.Nanoseconds())/float64(b.N), "circuit-ns/call")
	b.ReportMetric(float64(tr)/float64(td), "circuit/direct")
}

func TestCircuitPaths(t *testing.T) {
	for _, relayed := range []bool{false, true} {
		call := circuitCall(t, relayed)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for range 3 {
			if err := call(ctx); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
	}
}
