// Command load puts one mcpmesh node under the load of many well-behaved
// callers, with and without an abusive peer, and reports what the
// well-behaved callers get and what the serving node holds.
//
//	go run ./bench/load -duration 10s -callers 50
//
// The serving node runs in a child process (this program run again with
// -serve), so that its peak memory (VmHWM) is its own. It shares a tool
// "work" that sleeps -work (1 ms) and echoes its input. The callers are
// mcpmesh nodes in this process, on loopback, each with -per-caller
// goroutines calling as fast as they can for -duration. The abusive peer is
// a plain libp2p host that, all at once and over and over: sends frames
// over the size limit, sends garbage, pipelines thousands of tools/call on
// raw MCP streams, and opens thousands of streams. Both scenarios (clean,
// then abusive) run in one run, each with a fresh serving node; the table
// and the ratios go to stdout, progress to stderr.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	logging "github.com/ipfs/go-log/v2"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/limits"
)

func main() {
	var (
		serve     = flag.Bool("serve", false, "run as the serving node (internal: the parent starts it)")
		duration  = flag.Duration("duration", 10*time.Second, "how long each scenario runs")
		callers   = flag.Int("callers", 50, "well-behaved caller nodes")
		perCaller = flag.Int("per-caller", 2, "concurrent calls of each caller")
		work      = flag.Duration("work", time.Millisecond, "how long the tool works per call")
		abusive   = flag.Bool("abusive", true, "also run the scenario with an abusive peer")
		rate      = flag.Float64("rate", 1000, "serving node's limit: calls/s per peer (limits.Config.Rate)")
		burst     = flag.Int("burst", 2000, "serving node's limit: burst per peer")
		conc      = flag.Int("concurrency", 32, "serving node's limit: calls in flight per peer")
	)
	flag.Parse()
	logging.SetAllLoggers(logging.LevelError)
	lc := limits.DefaultConfig()
	lc.Rate, lc.Burst, lc.MaxConcurrentPerPeer = *rate, *burst, *conc
	if *serve {
		if err := serveChild(lc, *work); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		return
	}

	scenarios := []bool{false}
	if *abusive {
		scenarios = append(scenarios, true)
	}
	fmt.Fprintf(os.Stderr, "starting %d caller nodes\n", *callers)
	cs, err := newCallers(*callers)
	if err != nil {
		fatal(err)
	}
	defer closeAll(cs)

	var results []result
	for _, abuse := range scenarios {
		r, err := runScenario(cs, abuse, *perCaller, *duration, lc, *work)
		if err != nil {
			fatal(err)
		}
		results = append(results, r)
	}
	fmt.Printf("%d callers × %d concurrent calls, %v each scenario, tool works %v; serving node's limits: %g calls/s (burst %d), %d in flight per peer, ban after %d strikes for %v\n\n",
		*callers, *perCaller, *duration, *work, lc.Rate, lc.Burst, lc.MaxConcurrentPerPeer, lc.Strikes, lc.BanFor)
	printTable(os.Stdout, results)
	if len(results) == 2 {
		c, a := results[0], results[1]
		fmt.Printf("\nabusive / clean: calls/s %.2f, p50 %.2f, p99 %.2f, peak RSS %.2f\n",
			a.rate()/c.rate(), ratio(a.calls.p50, c.calls.p50), ratio(a.calls.p99, c.calls.p99), float64(a.rssKB)/float64(c.rssKB))
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "load:", err)
	os.Exit(1)
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// result is what one scenario measured.
type result struct {
	name     string
	calls    callStats
	rssKB    int64 // the serving node's VmHWM
	survived bool
	bans     []string // as the serving node reported them
	abuse    *abuseStats
}

func (r result) rate() float64 { return float64(r.calls.ok) / r.calls.elapsed.Seconds() }

func printTable(w io.Writer, rs []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\twell-behaved calls/s\tp50\tp99\terrors\tserving node peak RSS\tsurvived\tbans")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%v\t%d\t%.1f MiB\t%v\t%d\n", r.name, r.rate(),
			r.calls.p50.Round(10*time.Microsecond), r.calls.p99.Round(10*time.Microsecond),
			r.calls.errors, float64(r.rssKB)/1024, r.survived, len(r.bans))
	}
	tw.Flush()
	for _, r := range rs {
		if r.calls.firstErr != "" {
			fmt.Fprintf(w, "%s: first error of a well-behaved call: %s\n", r.name, r.calls.firstErr)
		}
		for _, b := range r.bans {
			fmt.Fprintf(w, "%s: %s\n", r.name, b)
		}
		if a := r.abuse; a != nil {
			fmt.Fprintf(w, "%s: the abuser sent %d oversized and %d garbage frames, %d raw calls (%d answered, %d of them refused), opened %d streams (%d refused or reset), failed to connect %d times\n",
				r.name, a.huge.Load(), a.garbage.Load(), a.calls.Load(), a.answered.Load(), a.refused.Load(), a.streams.Load(), a.streamsLost.Load(), a.connFails.Load())
		}
	}
}

// runScenario starts a serving node in a child process, lets the callers
// (and the abuser) at it for d, and measures.
func runScenario(cs []*caller, abuse bool, per int, d time.Duration, lc limits.Config, work time.Duration) (result, error) {
	name := "clean"
	if abuse {
		name = "abusive"
	}
	r := result{name: name}
	child, err := startChild(lc, work)
	if err != nil {
		return r, err
	}
	defer child.stop()
	fmt.Fprintf(os.Stderr, "%s: serving node %s (pid %d)\n", name, child.info.ID, child.cmd.Process.Pid)
	if err := connectAll(cs, child.info); err != nil {
		return r, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	var ab *abuser
	abuseDone := make(chan error, 1)
	if abuse {
		ab, err = newAbuser()
		if err != nil {
			return r, err
		}
		defer ab.close()
		go func() { abuseDone <- ab.run(ctx, child.info) }()
	}
	fmt.Fprintf(os.Stderr, "%s: %d callers calling for %v\n", name, len(cs), d)
	r.calls = runCallers(ctx, cs, child.info.ID, per, d)
	cancel()
	if ab != nil {
		if err := <-abuseDone; err != nil {
			return r, err
		}
		r.abuse = &ab.stats
	}
	r.survived = child.alive() && probe(child.info) == nil
	r.rssKB, err = peakRSS(child.cmd.Process.Pid)
	if err != nil {
		return r, err
	}
	r.bans = child.bans(start)
	return r, nil
}

// --- the serving node, in a child process ---

type child struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	info lpeer.AddrInfo
	done chan struct{}
	banc chan ban
}

// ban is a ban the serving node reported, and when the parent read it.
type ban struct {
	line string
	at   time.Time
}

func startChild(lc limits.Config, work time.Duration) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(exe, "-serve", "-work", work.String(),
		"-rate", strconv.FormatFloat(lc.Rate, 'g', -1, 64), "-burst", strconv.Itoa(lc.Burst),
		"-concurrency", strconv.Itoa(lc.MaxConcurrentPerPeer))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start serving node: %w", err)
	}
	c := &child{cmd: cmd, in: in, done: make(chan struct{}), banc: make(chan ban, 1000)}
	addr := make(chan string, 1)
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "ADDR "):
				addr <- strings.TrimPrefix(line, "ADDR ")
			case strings.HasPrefix(line, "BAN "):
				select {
				case c.banc <- ban{strings.TrimPrefix(line, "BAN "), time.Now()}:
				default:
				}
			}
		}
		cmd.Wait()
	}()
	select {
	case a := <-addr:
		m, err := ma.NewMultiaddr(a)
		if err == nil {
			var info *lpeer.AddrInfo
			info, err = lpeer.AddrInfoFromP2pAddr(m)
			if err == nil {
				c.info = *info
				return c, nil
			}
		}
		c.stop()
		return nil, fmt.Errorf("serving node's address %q: %w", a, err)
	case <-c.done:
		return nil, errors.New("serving node exited before it was ready")
	case <-time.After(30 * time.Second):
		c.stop()
		return nil, errors.New("serving node not ready within 30s")
	}
}

func (c *child) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// bans returns the bans reported so far, with when they came after start.
func (c *child) bans(start time.Time) []string {
	var out []string
	for {
		select {
		case b := <-c.banc:
			out = append(out, fmt.Sprintf("%s, %v into the run", b.line, b.at.Sub(start).Round(10*time.Millisecond)))
		default:
			return out
		}
	}
}

// stop closes the child's stdin (it closes its node and exits) and waits.
func (c *child) stop() {
	c.in.Close()
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// peakRSS reads a process's peak resident set size, in KiB.
func peakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory of the serving node: %w", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// serveChild runs the serving node until stdin closes.
func serveChild(lc limits.Config, work time.Duration) error {
	n, err := newServer(lc, work)
	if err != nil {
		return err
	}
	n.Limits().OnBan(func(p lpeer.ID, until time.Time, why string) {
		fmt.Printf("BAN banned %s for %v (%s)\n", p, time.Until(until).Round(time.Second), why)
	})
	fmt.Printf("ADDR %s\n", n.Addrs()[0])
	io.Copy(io.Discard, os.Stdin)
	return n.Close()
}
