package node_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/node"
)

// BenchmarkIdleNode measures what an idle node holds: ten nodes with
// discovery on, connected in a ring, left alone for five seconds; reported
// per node. The liveness checker adds nothing here (no call, no ping); the
// reachability services (AutoNAT v1 and v2 with their dial-back hosts,
// AutoRelay, hole punching) are part of the figure.
//
// go test -run XXX -bench IdleNode -benchtime 1x ./node/
func BenchmarkIdleNode(b *testing.B) {
	const n = 10
	for b.Loop() {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h0, g0 := ms.HeapAlloc, runtime.NumGoroutine()
		var nodes []*node.Node
		for range n {
			nd, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen(), node.WithDiscovery(discovery.Config{}))
			if err != nil {
				b.Fatal(err)
			}
			nodes = append(nodes, nd)
		}
		for i := range nodes {
			if _, err := nodes[i].Connect(context.Background(), nodes[(i+1)%n].Addrs()[0].String()); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(5 * time.Second)
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		var pings uint64
		for _, nd := range nodes {
			pings += nd.Liveness().Stats().Pings
		}
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/node")
		b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(h0))/n/1024, "heap-KB/node")
		b.ReportMetric(float64(pings), "pings")
		for _, nd := range nodes {
			nd.Close()
		}
	}
}
