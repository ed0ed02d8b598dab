package console_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mcpmesh/mcpmesh/console"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/tasks"
)

var loadRounds = flag.Int("console.load", 0, "TestConsoleLoad: rounds of each kind (0 skips the test); e.g. -console.load 5")

// TestConsoleLoad measures what an open console costs the node: calls/s
// through alpha (callers on alpha calling bravo, and bravo calling alpha:
// alpha's tasks and audit trail change all the time) in rounds that cycle
// through no page open; the page's event streams read by a Go client (the
// daemon's share of the cost); and Chromium showing the Tasks view with the
// live tree of a running three-hop call (the daemon's and the browser's,
// on the same machine), in one run. It reports the ratios of the medians.
//
//	go test ./console -run TestConsoleLoad -console.load 5 -v
func TestConsoleLoad(t *testing.T) {
	if *loadRounds == 0 {
		t.Skip("a measurement: run with -console.load N")
	}
	const (
		workers = 8 // per direction
		round   = 2 * time.Second
	)
	ctx := browser(t)
	m := newTestMesh(t)
	_, url := startConsole(t, m.a, console.Options{})
	p := &page{t: t, ctx: ctx, dir: screenshotDir(t)}
	p.do("sign in", chromedp.Navigate(url))
	base := strings.Split(url, "?")[0]

	// The tree to watch: a three-hop call that runs until the test ends.
	treeCtx, stopTree := context.WithCancel(context.Background())
	started := make(chan string, 1)
	treeDone := make(chan struct{})
	go func() {
		defer close(treeDone)
		cctx := tasks.OnRootTask(treeCtx, func(id string) { started <- id })
		m.a.CallServerTool(cctx, m.a.ID(), transport.DefaultServer, "plan", map[string]any{"topic": "load"})
	}()
	defer func() { stopTree(); <-treeDone }()
	root := <-started
	<-m.leafStarted

	// The load: calls of echo both ways, as fast as they go.
	var calls atomic.Int64
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 2 * workers {
		from, to := m.a, m.b
		if i%2 == 1 {
			from, to = m.b, m.a
		}
		wg.Go(func() {
			for loadCtx.Err() == nil {
				if _, err := from.CallServerTool(loadCtx, to.ID(), transport.DefaultServer, "echo", echoIn{Text: "x"}); err == nil {
					calls.Add(1)
				}
			}
		})
	}
	defer func() { stopLoad(); wg.Wait() }()

	// The daemon's side alone: the page's two streams, read and dropped.
	_, _, gc := testConsoleClient(t, url)
	streams := func() func() {
		sctx, stop := context.WithCancel(context.Background())
		var swg sync.WaitGroup
		for _, path := range []string{"/api/events", "/api/tasks/" + root + "/events"} {
			resp := gc.request(sctx, "GET", path, "", nil)
			swg.Go(func() {
				for range events(resp) {
				}
			})
		}
		return func() { stop(); swg.Wait() }
	}

	var browserCPU []float64 // CPU seconds per second of the browser's processes, in the Chromium rounds
	measure := func() float64 {
		before, cpu, start := calls.Load(), childrenCPU(), time.Now()
		time.Sleep(round) // a measuring window, not a wait for an event
		d := time.Since(start).Seconds()
		browserCPU = append(browserCPU, (childrenCPU()-cpu)/d)
		return float64(calls.Load()-before) / d
	}
	var off, feed, on []float64
	measure() // warm up
	for r := range *loadRounds {
		p.do("close the page", chromedp.Navigate("about:blank"))
		off = append(off, measure())
		stop := streams()
		feed = append(feed, measure())
		stop()
		p.do("open the tree", chromedp.Navigate(base+"#/tasks/"+root))
		p.wait("the live tree", `document.querySelectorAll("[data-tree] li.tnode[data-state=working]").length === 4 && document.querySelector(".conn-live")`)
		on = append(on, measure())
		if cpu := browserCPU[len(browserCPU)-1]; cpu >= 0 {
			t.Logf("round %d: the browser used %.2f CPU (cores) with the page open", r, cpu)
		}
		if r == 0 {
			p.shot("load")
		}
	}
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	t.Logf("calls/s without a page: %s (median %.0f)", fmtRates(off), med(off))
	t.Logf("calls/s with the page's streams read by a Go client: %s (median %.0f)", fmtRates(feed), med(feed))
	t.Logf("calls/s with Chromium showing the Tasks view and a live tree: %s (median %.0f)", fmtRates(on), med(on))
	t.Logf("ratio, streams only / none: %.2f; Chromium / none: %.2f", med(feed)/med(off), med(on)/med(off))
}

// childrenCPU returns the CPU time (user and system, in seconds) used so
// far by the processes this test started and their descendants (the
// browser), or -1 where /proc does not tell.
func childrenCPU() float64 {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil || len(stats) == 0 {
		return -1
	}
	type proc struct {
		ppid int
		cpu  float64
	}
	procs := map[int]proc{}
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15)
		s := string(b)
		end := strings.LastIndexByte(s, ')')
		if end < 0 {
			continue
		}
		var pid int
		fmt.Sscanf(s, "%d", &pid)
		f := strings.Fields(s[end+2:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		procs[pid] = proc{ppid, (ut + st) / 100} // USER_HZ is 100 on Linux
	}
	self := os.Getpid()
	total := 0.0
	for pid, p := range procs {
		for q, hops := p.ppid, 0; q > 1 && hops < 20; q, hops = procs[q].ppid, hops+1 {
			if q == self {
				total += procs[pid].cpu
				break
			}
		}
	}
	return total
}

func fmtRates(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, " ")
}
