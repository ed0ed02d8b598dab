package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

// relayIn asks the relay tool to call relay on Next[0] with the rest, and
// to answer like echo at the end of the list.
type relayIn struct {
	Next []string `json:"next,omitempty"`
	Text string   `json:"text"`
}

// chain is four connected nodes, each serving echo and relay, with task
// tracking on or off.
type chain struct {
	nodes [4]*node.Node
}

func newChain(tb testing.TB, tracking bool) *chain {
	tb.Helper()
	c := &chain{}
	for i := range c.nodes {
		n := newNode(tb, node.WithTaskTracking(tracking))
		node.AddTool(n, &sdkmcp.Tool{Name: "relay", Description: "calls the next node, or echoes"},
			func(ctx context.Context, _ *sdkmcp.CallToolRequest, in relayIn) (*sdkmcp.CallToolResult, any, error) {
				if len(in.Next) == 0 {
					return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: in.Text}}}, nil, nil
				}
				p, err := lpeer.Decode(in.Next[0])
				if err != nil {
					return nil, nil, err
				}
				res, err := n.CallServerTool(ctx, p, transport.DefaultServer, "relay", relayIn{Next: in.Next[1:], Text: in.Text})
				return res, nil, err
			})
		c.nodes[i] = n
	}
	for i := 1; i < len(c.nodes); i++ {
		if _, err := c.nodes[i-1].Connect(context.Background(), c.nodes[i].Addrs()[0].String()); err != nil {
			tb.Fatal(err)
		}
	}
	return c
}

// oneHop calls echo on B from A.
func (c *chain) oneHop(ctx context.Context) error {
	return checkEcho(c.nodes[0].CallServerTool(ctx, c.nodes[1].ID(), transport.DefaultServer, "echo", echoArgs))
}

// threeHops calls relay on B, which calls relay on C, which calls relay on
// D, which echoes: three hops.
func (c *chain) threeHops(ctx context.Context) error {
	next := []string{c.nodes[2].ID().String(), c.nodes[3].ID().String()}
	return checkEcho(c.nodes[0].CallServerTool(ctx, c.nodes[1].ID(), transport.DefaultServer, "relay", relayIn{Next: next, Text: echoText}))
}

// BenchmarkTaskHops times, in one run and interleaved call by call (so that
// the machine's drift hits every path alike), a 3-hop nested call and a
// 1-hop call, each with task tracking on and off, and reports:
//
//   - 1hop-µs, 3hop-µs: the calls with tracking (the default);
//   - 1hop-untracked-µs, 3hop-untracked-µs: the same with tracking off;
//   - tracking-%: what tracking adds to a 3-hop call, per hop alike
//     (target: under 10);
//   - 3hop/1hop: the 3-hop call against one hop, both tracked (target: at
//     most 3.3).
func BenchmarkTaskHops(b *testing.B) {
	ctx := context.Background()
	tracked, untracked := newChain(b, true), newChain(b, false)
	calls := []func(context.Context) error{tracked.oneHop, tracked.threeHops, untracked.oneHop, untracked.threeHops}
	for _, call := range calls { // warm up sessions and caches
		for range 20 {
			if err := call(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	var took [4]time.Duration
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		for i, call := range calls {
			start := time.Now()
			if err := call(ctx); err != nil {
				b.Fatal(err)
			}
			took[i] += time.Since(start)
		}
	}
	reportCPU(b, cpu)
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(us(took[0]), "1hop-µs")
	b.ReportMetric(us(took[1]), "3hop-µs")
	b.ReportMetric(us(took[2]), "1hop-untracked-µs")
	b.ReportMetric(us(took[3]), "3hop-untracked-µs")
	b.ReportMetric(100*(float64(took[1])/float64(took[3])-1), "tracking-%")
	b.ReportMetric(float64(took[1])/float64(took[0]), "3hop/1hop")
	b.ReportMetric(0, "ns/op") // the sum of four different calls means nothing
}

// TestTaskHops runs the paths of BenchmarkTaskHops a few times, and checks
// that the tracked chain recorded its tasks.
func TestTaskHops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tracked, untracked := newChain(t, true), newChain(t, false)
	for _, call := range []func(context.Context) error{tracked.oneHop, tracked.threeHops, untracked.oneHop, untracked.threeHops} {
		for range 3 {
			if err := call(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := len(tracked.nodes[3].Tasks()); n != 3 {
		t.Errorf("D of the tracked chain holds %d tasks, want 3", n)
	}
	if n := len(untracked.nodes[3].Tasks()); n != 0 {
		t.Errorf("D of the untracked chain holds %d tasks, want none", n)
	}
}

// BenchmarkTaskHop times each path of BenchmarkTaskHops on its own, so that
// B/op and allocs/op (which the interleaved run can only sum) are per path,
// for comparing tracked and untracked calls, and for profiling one of them
// (-bench 'TaskHop/1hop-tracked' -cpuprofile ...).
func BenchmarkTaskHop(b *testing.B) {
	for _, tracking := range []bool{true, false} {
		for _, hops := range []int{1, 3} {
			name := fmt.Sprintf("%dhop-tracked", hops)
			if !tracking {
				name = fmt.Sprintf("%dhop-untracked", hops)
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				c := newChain(b, tracking)
				call := c.oneHop
				if hops == 3 {
					call = c.threeHops
				}
				for range 20 { // warm up sessions and caches
					if err := call(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				cpu := cpuTime()
				for b.Loop() {
					if err := call(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				reportCPU(b, cpu)
			})
		}
	}
}
