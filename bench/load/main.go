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
// a plain libp2p host in a process of its own that, all at once and over
// and over: sends frames over the size limit, sends garbage, pipelines
// thousands of tools/call on raw MCP streams, and opens thousands of
// streams. Both scenarios (clean, then abusive) run in one run, each with a
// fresh serving node; the table and the ratios go to stdout, progress to
// stderr. The CPU time of each process (serving node, callers, abuser) is
// reported beside: on a small machine they share the same cores.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
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
		abuse     = flag.String("abuse", "", "run as the abusive peer against this multiaddr (internal)")
		duration  = flag.Duration("duration", 10*time.Second, "how long each scenario runs")
		callers   = flag.Int("callers", 50, "well-behaved caller nodes")
		perCaller = flag.Int("per-caller", 2, "concurrent calls of each caller")
		work      = flag.Duration("work", time.Millisecond, "how long the tool works per call")
		abusive   = flag.Bool("abusive", true, "also run the scenario with an abusive peer")
		rate      = flag.Float64("rate", 1000, "serving node's limit: calls/s per peer (limits.Config.Rate)")
		burst     = flag.Int("burst", 2000, "serving node's limit: burst per peer")
		conc      = flag.Int("concurrency", 32, "serving node's limit: calls in flight per peer")
		strikes   = flag.Int("strikes", 50, "serving node's limit: strikes within 10s that ban a peer; -1: never ban")
	)
	flag.Parse()
	logging.SetAllLoggers(logging.LevelError)
	lc := limits.DefaultConfig()
	lc.Rate, lc.Burst, lc.MaxConcurrentPerPeer, lc.Strikes = *rate, *burst, *conc, *strikes
	switch {
	case *serve:
		if err := serveChild(lc, *work); err != nil {
			fatal(err)
		}
		return
	case *abuse != "":
		if err := abuseChild(*abuse); err != nil {
			fatal(err)
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
		fmt.Printf("\nabusive / clean: calls/s %.2f, p50 %.2f, p99 %.2f, serving node peak RSS %.2f, serving node CPU per call %.2f\n",
			a.rate()/c.rate(), ratio(a.calls.p50, c.calls.p50), ratio(a.calls.p99, c.calls.p99),
			float64(a.rssKB)/float64(c.rssKB), ratio(a.cpuPerCall(), c.cpuPerCall()))
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
	cpu      cpuUse
	survived bool
	bans     []string // as the serving node reported them
	abuse    *abuseCounts
}

// cpuUse is the CPU time each process used during a run.
type cpuUse struct{ server, callers, abuser time.Duration }

func (r result) rate() float64 { return float64(r.calls.ok) / r.calls.elapsed.Seconds() }

// cpuPerCall is the serving node's CPU time per well-behaved call: what
// each cost, the abuse it fended off included.
func (r result) cpuPerCall() time.Duration {
	if r.calls.ok == 0 {
		return 0
	}
	return r.cpu.server / time.Duration(r.calls.ok)
}

func printTable(w io.Writer, rs []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\twell-behaved calls/s\tp50\tp99\terrors\tserving node peak RSS\tserving node CPU per call\tCPU: serving node\tcallers\tabuser\tsurvived\tbans")
	for _, r := range rs {
		cores := func(d time.Duration) string {
			return fmt.Sprintf("%.2f cores", d.Seconds()/r.calls.elapsed.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%v\t%d\t%.1f MiB\t%v\t%s\t%s\t%s\t%v\t%d\n", r.name, r.rate(),
			r.calls.p50.Round(10*time.Microsecond), r.calls.p99.Round(10*time.Microsecond), r.calls.errors,
			float64(r.rssKB)/1024, r.cpuPerCall().Round(time.Microsecond), cores(r.cpu.server), cores(r.cpu.callers), cores(r.cpu.abuser), r.survived, len(r.bans))
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
			fmt.Fprintf(w, "%s: the abuser sent %d oversized and %d garbage frames, %d raw calls written (%d answered, %d of them refused), opened %d streams (%d refused or reset), failed to connect %d times\n",
				r.name, a.Huge, a.Garbage, a.Calls, a.Answered, a.Refused, a.Streams, a.StreamsLost, a.ConnFails)
		}
	}
}

// runScenario starts a serving node in a child process, lets the callers
// (and the abuser, in another) at it for d, and measures.
func runScenario(cs []*caller, abuse bool, per int, d time.Duration, lc limits.Config, work time.Duration) (result, error) {
	name := "clean"
	if abuse {
		name = "abusive"
	}
	r := result{name: name}
	srv, err := startProc("-serve", "-work", work.String(),
		"-rate", strconv.FormatFloat(lc.Rate, 'g', -1, 64), "-burst", strconv.Itoa(lc.Burst),
		"-concurrency", strconv.Itoa(lc.MaxConcurrentPerPeer), "-strikes", strconv.Itoa(lc.Strikes))
	if err != nil {
		return r, fmt.Errorf("serving node: %w", err)
	}
	defer srv.stop()
	addr, err := srv.waitLine("ADDR ", 30*time.Second)
	if err != nil {
		return r, fmt.Errorf("serving node: %w", err)
	}
	info, err := addrInfo(addr)
	if err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "%s: serving node %s (pid %d)\n", name, info.ID, srv.pid())
	if err := connectAll(cs, info); err != nil {
		return r, err
	}
	var ab *proc
	if abuse {
		if ab, err = startProc("-abuse", addr); err != nil {
			return r, fmt.Errorf("abuser: %w", err)
		}
		defer ab.stop()
		if _, err := ab.waitLine("READY", 30*time.Second); err != nil {
			return r, fmt.Errorf("abuser: %w", err)
		}
	}
	before := cpuOf(srv, ab)
	start := time.Now()
	if ab != nil {
		ab.in.Write([]byte("go\n"))
	}
	fmt.Fprintf(os.Stderr, "%s: %d callers calling for %v\n", name, len(cs), d)
	r.calls = runCallers(context.Background(), cs, info.ID, per, d)
	after := cpuOf(srv, ab)
	r.cpu = cpuUse{server: after.server - before.server, callers: after.callers - before.callers, abuser: after.abuser - before.abuser}
	if ab != nil {
		ab.in.Close() // stop
		line, err := ab.waitLine("STATS ", 30*time.Second)
		if err != nil {
			return r, fmt.Errorf("abuser: %w", err)
		}
		r.abuse = new(abuseCounts)
		if err := json.Unmarshal([]byte(line), r.abuse); err != nil {
			return r, fmt.Errorf("abuser's counts: %w", err)
		}
	}
	r.survived = srv.alive() && probe(info) == nil
	if r.rssKB, err = peakRSS(srv.pid()); err != nil {
		return r, err
	}
	for _, l := range srv.linesWith("BAN ") {
		r.bans = append(r.bans, fmt.Sprintf("%s, %v into the run", l.text, l.at.Sub(start).Round(10*time.Millisecond)))
	}
	return r, nil
}

func addrInfo(addr string) (lpeer.AddrInfo, error) {
	m, err := ma.NewMultiaddr(addr)
	if err != nil {
		return lpeer.AddrInfo{}, fmt.Errorf("address %q: %w", addr, err)
	}
	info, err := lpeer.AddrInfoFromP2pAddr(m)
	if err != nil {
		return lpeer.AddrInfo{}, fmt.Errorf("address %q: %w", addr, err)
	}
	return *info, nil
}

// cpuOf reads the CPU time of the serving node, this process and the
// abuser (if any).
func cpuOf(srv, ab *proc) cpuUse {
	var u cpuUse
	u.server, _ = cpuTime(srv.pid())
	u.callers, _ = cpuTime(os.Getpid())
	if ab != nil {
		u.abuser, _ = cpuTime(ab.pid())
	}
	return u
}

// --- child processes ---

// proc is this program run again as a child: stdin tells it to stop (when
// closed), stdout lines tell the parent what happens.
type proc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{}

	mu    sync.Mutex
	lines []line
}

type line struct {
	text string
	at   time.Time
}

func startProc(args ...string) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(exe, args...)
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
		return nil, fmt.Errorf("start %v: %w", args, err)
	}
	p := &proc{cmd: cmd, in: in, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			if len(p.lines) < 10000 {
				p.lines = append(p.lines, line{sc.Text(), time.Now()})
			}
			p.mu.Unlock()
		}
		cmd.Wait()
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) linesWith(prefix string) []line {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []line
	for _, l := range p.lines {
		if rest, ok := strings.CutPrefix(l.text, prefix); ok {
			out = append(out, line{rest, l.at})
		}
	}
	return out
}

// waitLine waits for the first line that starts with prefix, and returns
// the rest of it.
func (p *proc) waitLine(prefix string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if ls := p.linesWith(prefix); len(ls) > 0 {
			return ls[0].text, nil
		}
		if !p.alive() {
			return "", fmt.Errorf("exited before it said %q", prefix)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("did not say %q within %v", prefix, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop closes the child's stdin (it ends) and waits for it.
func (p *proc) stop() {
	p.in.Close()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
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

// cpuTime reads the CPU time (user and system) a process has used.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	// After the command name (in parentheses) come the state, then 10
	// fields, then utime and stime (the 14th and 15th fields of the file).
	_, rest, ok := strings.Cut(string(data), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, errors.New("unexpected /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc stat: %w", err)
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
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

// abuseChild runs the abuser against addr from the first line on stdin
// until stdin closes, then prints its counts.
func abuseChild(addr string) error {
	info, err := addrInfo(addr)
	if err != nil {
		return err
	}
	ab, err := newAbuser()
	if err != nil {
		return err
	}
	defer ab.close()
	fmt.Println("READY")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return errors.New("stopped before it started")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, in)
		cancel()
	}()
	if err := ab.run(ctx, info); err != nil {
		return err
	}
	out, err := json.Marshal(ab.stats.counts())
	if err != nil {
		return err
	}
	fmt.Printf("STATS %s\n", out)
	return nil
}
