// Command dhtsim measures mcpmesh discovery on a simulated mesh: N nodes in
// one process on go-libp2p's mocknet, every link with the same latency, each
// node running the real discovery.Service (private Kademlia DHT, signed
// cards, provider records) and bootstrapped from a few random peers.
//
//	go run ./bench/dhtsim -sizes 50,200,500
//
// For each size it reports lookup success and latency for tools offered by
// one node only, DHT requests per lookup, memory and goroutines per node,
// and how long a newly offered tool takes to become findable; then how each
// figure grows with N. Progress goes to stderr, the tables to stdout.
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	logging "github.com/ipfs/go-log/v2"

	"github.com/mcpmesh/mcpmesh/discovery"
)

func main() {
	var (
		sizes     = flag.String("sizes", "50,200,500", "comma-separated mesh sizes")
		lookups   = flag.Int("lookups", 100, "single-provider lookups per size")
		popular   = flag.Int("popular", 5, "lookups of tools offered by many nodes, per size")
		fresh     = flag.Int("fresh", 5, "new tools published and timed until findable, per size")
		bootstrap = flag.Int("bootstrap", 3, "random peers each node connects to at start")
		refresh   = flag.Int("refresh", 2, "forced routing table refreshes of every node after connecting; -1: none")
		latency   = flag.Duration("latency", 10*time.Millisecond, "one-way latency of every link")
		seed      = flag.Uint64("seed", 1, "random seed (which peers, which lookups)")
		conns     = flag.String("conns", "160,192", "low,high watermarks of each node's connection manager (libp2p's defaults); 0: none")
		grace     = flag.Duration("grace", time.Minute, "connection manager grace period for new connections")
		settle    = flag.Duration("settle", 0, "idle time after setup before memory is measured (default grace+5s; -1s: none)")
		cpuprof   = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
		cardTTL   = flag.Duration("card-ttl", 0, "card TTL; the card is republished every third of it (default 1h, so that nothing expires while measured; with -churn, the daemon's 3m)")
		reprovide = flag.Duration("reprovide", 0, "how often every provider record is provided again with a walk (default discovery's 1h)")
		churn     = flag.Int("churn", 0, "after the other measurements, restart nodes for this many intervals while lookups run (0: no churn phase)")
		churnFrac = flag.Float64("churn-fraction", 0.1, "share of the nodes restarted in each churn interval")
		churnInt  = flag.Duration("churn-every", time.Minute, "one churn interval")
		churnDown = flag.Duration("churn-down", time.Second, "how long a restarting node stays away")
	)
	flag.Parse()
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dhtsim:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "dhtsim:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	logging.SetAllLoggers(logging.LevelError)

	var low, high int
	if *conns != "0" {
		if _, err := fmt.Sscanf(*conns, "%d,%d", &low, &high); err != nil || low > high {
			fmt.Fprintf(os.Stderr, "dhtsim: bad -conns %q: want LOW,HIGH\n", *conns)
			os.Exit(2)
		}
	}

	ttl := *cardTTL
	if ttl == 0 {
		ttl = time.Hour
		if *churn > 0 {
			ttl = 3 * time.Minute
		}
	}

	var results []*Result
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 3 {
			fmt.Fprintf(os.Stderr, "dhtsim: bad size %q\n", f)
			os.Exit(2)
		}
		r, err := Run(Params{
			N: n, Bootstrap: *bootstrap, Latency: *latency, RefreshRounds: *refresh,
			ConnLow: low, ConnHigh: high, ConnGrace: *grace, Settle: *settle,
			Lookups: *lookups, PopularFinds: *popular, Fresh: *fresh, Seed: *seed,
			Discovery: discovery.Config{CardTTL: ttl, ReprovideEvery: *reprovide},
			Churn:     Churn{Rounds: *churn, Every: *churnInt, Fraction: *churnFrac, Down: *churnDown},
			Progress:  os.Stderr,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "dhtsim: N=%d: %v\n", n, err)
			pprof.StopCPUProfile()
			os.Exit(1)
		}
		results = append(results, r)
	}
	Report(os.Stdout, results)
}

// Report prints the table of results and how the figures grow.
func Report(w io.Writer, rs []*Result) {
	if len(rs) == 0 {
		return
	}
	p := rs[0].P
	rtt := p.RTT()
	fmt.Fprintf(w, "mcpmesh discovery on mocknet: %v one-way link latency (1 RTT = %v: one request and its answer over one link), "+
		"each node bootstrapped from %d random peers; %s; %s/%s, %d CPUs\n\n",
		p.Latency, rtt, p.Bootstrap, connStr(p), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())

	fmt.Fprintln(w, "| N | single-provider found | first found p50 / p95 | Find returns p50 / p95 | DHT requests per lookup, mean (p95) | memory per node: heap + stacks | goroutines per node | new tool findable p50 / max |")
	fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		s := summarize(r)
		heap, stack := r.perNode(r.Mem)
		fmt.Fprintf(w, "| %d | %d/%d (%.0f%%) | %s / %s | %s / %s | %.0f (%d) | %.2f + %.2f = %.2f MB | %.0f | %s / %s |\n",
			r.P.N, s.found, len(r.Single), 100*s.rate,
			durRTT(s.firstP50, rtt), durRTT(s.firstP95, rtt),
			durRTT(s.completeP50, rtt), durRTT(s.completeP95, rtt),
			s.msgsMean, s.msgsP95,
			heap, stack, heap+stack,
			float64(r.Mem.Goroutines)/float64(r.P.N),
			freshStr(s.freshP50), freshStr(s.freshMax))
	}

	fmt.Fprintln(w, "\nDHT requests per single-provider lookup, mean by type (received by all nodes; the searcher's own count of requests sent in brackets):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| N | GET_PROVIDERS | GET_VALUE | FIND_NODE | PUT_VALUE | other | total (sent) | idle background, requests/s |")
	fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		var sum counts
		sent := 0
		for _, l := range r.Single {
			for i := range sum {
				sum[i] += l.Msgs[i]
			}
			sent += l.Sent
		}
		k := float64(max(1, len(r.Single)))
		other := sum[msgAddProvider] + sum[msgPing] + sum[numMsgTypes]
		fmt.Fprintf(w, "| %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f (%.1f) | %.1f |\n", r.P.N,
			float64(sum[msgGetProviders])/k, float64(sum[msgGetValue])/k, float64(sum[msgFindNode])/k,
			float64(sum[msgPutValue])/k, float64(other)/k, float64(sum.total())/k, float64(sent)/k, r.IdleMsgsPerSec)
	}

	fmt.Fprintf(w, "\nTools offered by many nodes (each by N/%d nodes):\n\n", p.Popular)
	fmt.Fprintln(w, "| N | lookups | providers each | found per lookup, mean | first found p50 | Find returns p50 | DHT requests per lookup, mean |")
	fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		if len(r.Popular) == 0 {
			continue
		}
		var first, complete []time.Duration
		found, want, msgs := 0, 0, int64(0)
		for _, l := range r.Popular {
			if l.First > 0 {
				first = append(first, l.First)
			}
			complete = append(complete, l.Complete)
			found += l.Found
			want = max(want, l.Want)
			msgs += l.Msgs.total()
		}
		k := float64(len(r.Popular))
		fmt.Fprintf(w, "| %d | %d | %d | %.1f | %s | %s | %.0f |\n", r.P.N, len(r.Popular), want, float64(found)/k,
			durRTT(pct(first, 50), rtt), durRTT(pct(complete, 50), rtt), float64(msgs)/k)
	}

	fmt.Fprintf(w, "\nSetup and cost (memory per node: heap + stacks; \"at setup\" as soon as every card is out, \"settled\" after idling %v: idle DHT streams closed, connections trimmed):\n", p.Settle)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| N | build / bootstrap / publish / shutdown | setup CPU | publish retries | routing table min / median / max | at setup: conns, memory | settled: conns, memory | of which mocknet hosts+links | goroutines left after shutdown | load average during lookups |")
	fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		h0, s0 := r.perNode(r.Setup)
		h1, s1 := r.perNode(r.Mem)
		fmt.Fprintf(w, "| %d | %s / %s / %s / %s | %s | %d | %d / %d / %d | %.0f, %.2f MB | %.0f, %.2f MB | %.2f MB | %d | %.1f → %.1f |\n", r.P.N,
			secs(r.BuildTime), secs(r.BootstrapTime), secs(r.PublishTime), secs(r.ShutdownTime), secs(r.SetupCPU), r.PublishRetries,
			r.RTMin, r.RTMedian, r.RTMax, r.Setup.Conns, h0+s0, r.Mem.Conns, h1+s1,
			mb(r.HeapMocknet-r.HeapBase)/float64(r.P.N), r.GoroutinesLeft, r.LoadAvg[0], r.LoadAvg[1])
	}

	reportChurn(w, rs)

	for _, r := range rs {
		if l := max(r.LoadAvg[0], r.LoadAvg[1]); l > float64(runtime.NumCPU()) {
			fmt.Fprintf(w, "\nWARNING: at N=%d the load average reached %.1f on %d CPUs: other processes competed for the CPU and slowed the lookups.\n", r.P.N, l, runtime.NumCPU())
		}
	}

	if len(rs) >= 2 && rs[0].P.N != rs[len(rs)-1].P.N {
		a, b := rs[0], rs[len(rs)-1]
		sa, sb := summarize(a), summarize(b)
		na, nb := float64(a.P.N), float64(b.P.N)
		fmt.Fprintf(w, "\nGrowth from N=%d to N=%d: N grows %.1f×, log2 N grows %.2f× (%.2f → %.2f).\n\n",
			a.P.N, b.P.N, nb/na, math.Log2(nb)/math.Log2(na), math.Log2(na), math.Log2(nb))
		fmt.Fprintln(w, "| figure | N="+strconv.Itoa(a.P.N)+" | N="+strconv.Itoa(b.P.N)+" | ratio |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: |")
		row := func(name string, x, y float64, unit string) {
			fmt.Fprintf(w, "| %s | %.2f%s | %.2f%s | %.2f× |\n", name, x, unit, y, unit, y/x)
		}
		ha, sta := a.perNode(a.Mem)
		hb, stb := b.perNode(b.Mem)
		row("first found p50", ms(sa.firstP50), ms(sb.firstP50), " ms")
		row("first found p95", ms(sa.firstP95), ms(sb.firstP95), " ms")
		row("Find returns p50", ms(sa.completeP50), ms(sb.completeP50), " ms")
		row("DHT requests per lookup", sa.msgsMean, sb.msgsMean, "")
		row("heap per node", ha, hb, " MB")
		row("goroutine stacks per node", sta, stb, " MB")
		row("goroutines per node", float64(a.Mem.Goroutines)/na, float64(b.Mem.Goroutines)/nb, "")
		row("connections per node", a.Mem.Conns, b.Mem.Conns, "")
		if sa.freshP50 > 0 && sb.freshP50 > 0 {
			row("new tool findable p50", ms(sa.freshP50), ms(sb.freshP50), " ms")
		}
		row("setup CPU per node", ms(a.SetupCPU)/na, ms(b.SetupCPU)/nb, " ms")
	}
}

// perNode returns the heap and stack memory of m per node, in MB, without
// what the process held before the mesh.
func (r *Result) perNode(m Snapshot) (heap, stack float64) {
	n := float64(r.P.N)
	return (float64(m.Heap) - float64(r.HeapBase)) / n / (1 << 20), (float64(m.Stack) - float64(r.StackBase)) / n / (1 << 20)
}

type summary struct {
	found                                        int
	rate                                         float64
	firstP50, firstP95, completeP50, completeP95 time.Duration
	msgsMean                                     float64
	msgsP95                                      int64
	freshP50, freshMax                           time.Duration
}

func summarize(r *Result) summary {
	var s summary
	var first, complete []time.Duration
	var msgs []int64
	var total int64
	for _, l := range r.Single {
		if l.First > 0 {
			s.found++
			first = append(first, l.First)
		}
		complete = append(complete, l.Complete)
		msgs = append(msgs, l.Msgs.total())
		total += l.Msgs.total()
	}
	if len(r.Single) > 0 {
		s.rate = float64(s.found) / float64(len(r.Single))
		s.msgsMean = float64(total) / float64(len(r.Single))
	}
	s.firstP50, s.firstP95 = pct(first, 50), pct(first, 95)
	s.completeP50, s.completeP95 = pct(complete, 50), pct(complete, 95)
	slices.Sort(msgs)
	if len(msgs) > 0 {
		s.msgsP95 = msgs[min(len(msgs)-1, int(math.Ceil(0.95*float64(len(msgs))))-1)]
	}
	var fresh []time.Duration
	for _, d := range r.Fresh {
		if d < 0 {
			s.freshMax = -1
			continue
		}
		fresh = append(fresh, d)
	}
	s.freshP50 = pct(fresh, 50)
	if s.freshMax == 0 && len(fresh) > 0 {
		s.freshMax = slices.Max(fresh)
	}
	return s
}

// pct returns the p-th percentile (nearest rank) of ds, or 0.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	i := int(math.Ceil(p/100*float64(len(ds)))) - 1
	return ds[max(0, min(len(ds)-1, i))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func durRTT(d, rtt time.Duration) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f ms (%.1f RTT)", ms(d), float64(d)/float64(rtt))
}

func freshStr(d time.Duration) string {
	switch {
	case d < 0:
		return "not found"
	case d == 0:
		return "–"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func connStr(p Params) string {
	if p.ConnHigh == 0 {
		return "no connection manager"
	}
	return fmt.Sprintf("connection manager %d/%d, grace %v", p.ConnLow, p.ConnHigh, p.ConnGrace)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
