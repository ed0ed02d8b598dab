package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// config is one run of the suite: its scale and its targets. The program
// takes each from a flag; the test sets a small scale.
type config struct {
	bin  string // the mcpmesh command
	self string // this executable, shared by a daemon as a stdio program (the sleep tool)

	peers           int           // well-behaved peers calling throughout
	interval        time.Duration // each good peer calls once per interval
	callTimeout     time.Duration // a good call that takes longer is an error
	phase           time.Duration // the clean window, and the window under attack
	newcomerTimeout time.Duration // the new peer's dial timeout
	readyTimeout    time.Duration // how long an attack may take to be in place

	maxMessage     int // the daemon's frame limit (its default), which attack frames stay just under
	ampInflight    int // amplification: frames in flight from one identity
	ampIdentities  int // amplification from many identities: how many
	ampPerIdentity int // … and frames in flight from each
	idleIdentities int // idle streams: fresh identities
	idleStreams    int // … and streams each
	pipelined      int // requests pipelined on one stream
	pipeIdentities int // … from each of this many identities, in the many-identity variant
	halfClose      int // requests followed by a half-close
	portDials      int // fresh identities dialing the shared port

	maxRatio       float64       // target: good peers' p50 and p99 under attack / clean
	maxRSSMB       int64         // target: the daemon's peak RSS
	settle         time.Duration // target: goroutines back to baseline within this
	goroutineSlack int           // … baseline meaning at most this many more
	rssGuardMB     int64         // the suite kills a daemon past this RSS (0: never)

	attackers []attackerMode // each attack is run once per mode: where its attackers are
	// reference: a second daemon, never attacked, called by as many good
	// peers in the same windows; the latency ratios are taken against its
	// own (README, "The reference daemon").
	reference bool
}

// defaultConfig is the program's scale: the issue's.
func defaultConfig() config {
	return config{
		peers:           50,
		interval:        100 * time.Millisecond,
		callTimeout:     10 * time.Second,
		phase:           5 * time.Second,
		newcomerTimeout: 10 * time.Second,
		readyTimeout:    60 * time.Second,
		maxMessage:      4 << 20,
		ampInflight:     8,
		ampIdentities:   8,
		ampPerIdentity:  4,
		idleIdentities:  40,
		idleStreams:     70,
		pipelined:       10000,
		pipeIdentities:  8,
		halfClose:       20,
		portDials:       20,
		maxRatio:        2,
		maxRSSMB:        256,
		settle:          5 * time.Second,
		goroutineSlack:  20,
		rssGuardMB:      3072,
		attackers:       []attackerMode{attackersApart},
		reference:       true,
	}
}

// attack is one attack of the suite.
type attack struct {
	name   string // a subtest name: "1-amplification-keys"
	title  string // what it does, in a line
	daemon daemonSpec
	// explicitPort: the daemon listens on a port chosen beforehand (given
	// to run as env.port).
	explicitPort bool
	// oneShot: the attack ends by itself (a flood that is answered or cut
	// off); the suite lets it end, and see what came of it, instead of
	// stopping it once the newcomer has tried.
	oneShot bool
	// run carries out the attack until ctx ends (or, if oneShot, until it
	// is done), telling st when it is in place and when it is over (the
	// good peers' window under attack ends there), and closes
	// every host it started before it returns. What it sees goes into rep.
	run func(ctx context.Context, e *env, rep *report, st *stage) error
}

// stage is how an attack tells the suite where it stands.
type stage struct {
	ready, over         chan struct{}
	readyOnce, overOnce sync.Once
	readyAt, overAt     time.Time // when ready and over were closed
}

func newStage() *stage { return &stage{ready: make(chan struct{}), over: make(chan struct{})} }

// Ready says the attack is in place: the newcomer may try.
func (s *stage) Ready() {
	s.readyOnce.Do(func() {
		s.readyAt = time.Now()
		close(s.ready)
	})
}

// Over says the attack has done all it will (a one-shot flood that has
// ended): the good peers' window under attack ends here.
func (s *stage) Over() {
	s.Ready()
	s.overOnce.Do(func() {
		s.overAt = time.Now()
		close(s.over)
	})
}

// env is what an attack gets to work with.
type env struct {
	cfg    *config
	target lpeer.AddrInfo
	home   string // the daemon's home
	port   int    // the daemon's TCP port, for explicitPort attacks
}

// report is what an attack saw, beyond the common measures: notes, and
// checks of its own targets.
type report struct {
	mu     sync.Mutex
	notes  []string
	checks []check
	ids    []idCase
}

// check is one target of an attack's own.
type check struct {
	what, measured, target string
	ok                     bool
}

// idCase is one JSON-RPC ID sent, and what came back.
type idCase struct {
	sent, got, due string
	ok             bool
}

func (r *report) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *report) check(what string, ok bool, measured, target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, check{what: what, measured: measured, target: target, ok: ok})
}

// outcome is what one attack measured.
type outcome struct {
	a            *attack
	where        attackerMode // where the attackers ran
	clean, under latencies
	// cleanAfter is a second clean window, once the attack is over and
	// the goroutines have come back: do the good peers still get
	// answers, and as fast? It is not the reference: a daemon still busy
	// with an attack's leftovers would hide the attack's effect.
	cleanAfter latencies
	// refClean, refUnder: the reference daemon's good peers in the same
	// two windows (nothing without cfg.reference).
	refClean, refUnder latencies
	refCPU             [2]time.Duration // the reference daemon's CPU time in the two windows
	baseRSSKB, peakKB  int64
	peakBy             string // how the peak was read
	guardKilled        bool
	gBase, gPeak       int // goroutines: baseline (clean, good peers idle) and the most seen during the attack
	gAfter             int
	settled            bool
	settleTook         time.Duration
	newcomerTook       time.Duration
	newcomerErr        error
	daemonDied         string // how the daemon ended, if it did during the attack
	rep                *report
	err                error // the suite could not run the attack
}

// runAttack runs one attack on a fresh daemon: good peers call it for a
// clean window, then for a window under attack; a newcomer tries to get
// in while the attack is in place; then the attack ends and the daemon's
// goroutines must come back to their baseline.
//
// Where the attackers run is where's: a process of their own (niced or
// not), or the suite's, beside the good peers, as they first did (README,
// "Whose process was slow").
func runAttack(ctx context.Context, cfg *config, a *attack, where attackerMode, progress io.Writer) (o *outcome) {
	o = &outcome{a: a, where: where, rep: &report{}}
	say := func(format string, args ...any) {
		fmt.Fprintf(progress, "%s: %s\n", o.name(), fmt.Sprintf(format, args...))
	}
	home, err := os.MkdirTemp("", "mcpmesh-attack-")
	if err != nil {
		o.err = err
		return o
	}
	defer os.RemoveAll(home)
	spec := a.daemon
	e := &env{cfg: cfg}
	if a.explicitPort {
		if e.port, err = freePort(); err != nil {
			o.err = err
			return o
		}
		spec.args = append(slicesClone(spec.args), "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", e.port))
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	d, err := startDaemon(sctx, cfg.bin, home, spec)
	cancel()
	if err != nil {
		o.err = fmt.Errorf("start the daemon: %w", err)
		return o
	}
	defer d.stop()
	e.target, e.home = d.info, d.home
	say("daemon %s (pid %d); %d good peers", d.info.ID, d.pid(), cfg.peers)

	peers, err := startGoodPeers(ctx, cfg.peers, d.info)
	if err != nil {
		o.err = err
		return o
	}
	defer closePeers(peers)

	// The reference: a daemon of its own, never attacked, its good peers
	// calling in the same windows.
	var ref *daemon
	var refPeers []*goodPeer
	if cfg.reference {
		refHome, err := os.MkdirTemp("", "mcpmesh-attack-ref-")
		if err != nil {
			o.err = err
			return o
		}
		defer os.RemoveAll(refHome)
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		ref, err = startDaemon(sctx, cfg.bin, refHome, daemonSpec{})
		cancel()
		if err != nil {
			o.err = fmt.Errorf("start the reference daemon: %w", err)
			return o
		}
		defer ref.stop()
		if refPeers, err = startGoodPeers(ctx, cfg.peers, ref.info); err != nil {
			o.err = fmt.Errorf("the reference daemon: %w", err)
			return o
		}
		defer closePeers(refPeers)
		say("reference daemon %s (pid %d), never attacked; %d good peers of its own", ref.info.ID, ref.pid(), cfg.peers)
	}
	// window has the good peers of both daemons call until ctx ends.
	// The suite reads each daemon's metrics every 250 ms in every window
	// (under attack, for the goroutines' peak), so that what the reads
	// cost a daemon is in its clean window too.
	window := func(ctx context.Context) (l, refL latencies, refCPU time.Duration) {
		if ref == nil {
			return callLoop(ctx, peers, cfg.interval, cfg.callTimeout), latencies{}, 0
		}
		before := procCPU(ref.pid())
		refSampled := sampleGoroutines(ctx, ref)
		var wg sync.WaitGroup
		wg.Go(func() { refL = callLoop(ctx, refPeers, cfg.interval, cfg.callTimeout) })
		l = callLoop(ctx, peers, cfg.interval, cfg.callTimeout)
		wg.Wait()
		<-refSampled
		return l, refL, procCPU(ref.pid()) - before
	}

	// The clean window.
	cctx, cancel := context.WithTimeout(ctx, cfg.phase)
	cpuD, cpuS := procCPU(d.pid()), procCPU(os.Getpid())
	cleanSampled := sampleGoroutines(cctx, d)
	o.clean, o.refClean, o.refCPU[0] = window(cctx)
	cancel()
	<-cleanSampled
	cleanD, cleanS := procCPU(d.pid())-cpuD, procCPU(os.Getpid())-cpuS
	// The baseline: the least of a few readings, good peers idle with
	// their sessions open.
	o.gBase = -1
	for range 3 {
		sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
		if g, err := d.goroutines(ctx); err == nil && (o.gBase < 0 || g < o.gBase) {
			o.gBase = g
		}
	}
	if o.gBase < 0 {
		o.err = fmt.Errorf("read the daemon's goroutines before the attack")
		return o
	}
	o.baseRSSKB, _ = procStatusKB(d.pid(), "VmRSS")

	// Under attack.
	o.peakBy = "VmHWM"
	if err := resetPeakRSS(d.pid()); err != nil {
		o.peakBy = "VmRSS sampled every 25 ms"
	}
	watch := watchRSS(d, cfg.rssGuardMB<<10)
	sampling, stopSampling := context.WithCancel(ctx)
	gPeak := sampleGoroutines(sampling, d)
	actx, stopAttack := context.WithCancel(ctx)
	defer stopAttack()
	st := newStage()
	var runErr error
	runDone := make(chan struct{})
	attackerPID := 0
	if where == attackersInline {
		say("attacking, from the suite's process: %s", a.title)
		go func() {
			defer close(runDone)
			defer st.Over()
			runErr = a.run(actx, e, o.rep, st)
		}()
	} else {
		p, err := startAttacker(cfg, a, where, e, o.rep, st)
		if err != nil {
			stopSampling()
			<-gPeak
			watch.end()
			o.err = err
			return o
		}
		attackerPID = p.pid()
		say("attacking, from process %d (%s): %s", attackerPID, where, a.title)
		context.AfterFunc(actx, p.stop)
		go func() {
			defer close(runDone)
			<-p.done
			runErr = p.err
		}()
		defer func() {
			// However runAttack ends, the attacker process ends with it.
			p.stop()
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				p.kill()
				<-p.done
			}
		}()
	}
	// The window under attack is as long as the clean one, whether or not
	// the attack ends before it (a one-shot flood that the daemon cuts
	// short costs the good peers what it costs them in that time, as a
	// longer attack does); how long the attack took is noted.
	attackStart := time.Now()
	wctx, endWindow := context.WithTimeout(ctx, cfg.phase)
	cpuD, cpuS = procCPU(d.pid()), procCPU(os.Getpid())
	o.under, o.refUnder, o.refCPU[1] = window(wctx)
	endWindow()
	// Whose processor time the attack costs: the daemon's, the good peers'
	// (the suite's process), the attackers'.
	underD, underS := procCPU(d.pid())-cpuD, procCPU(os.Getpid())-cpuS
	if where == attackersInline {
		o.rep.note("CPU time in the clean window and under attack: daemon %v → %v, suite (good peers and attackers) %v → %v",
			cleanD, underD, cleanS, underS)
	} else {
		o.rep.note("CPU time in the clean window and under attack: daemon %v → %v, suite (good peers) %v → %v; the attackers' process %v by the window's end",
			cleanD, underD, cleanS, underS, procCPU(attackerPID))
	}

	// The newcomer, once the attack is in place (or over).
	select {
	case <-st.ready:
	case <-time.After(cfg.readyTimeout):
		o.rep.note("the attack was not in place after %v; the newcomer tried anyway", cfg.readyTimeout)
	}
	if !st.readyAt.IsZero() && !a.oneShot {
		// The window under attack, in two: while the attack was being set
		// up (a flood of opens), and once it was in place.
		setup, held := o.under.split(st.readyAt)
		s50, s99 := percentiles(setup)
		h50, h99 := percentiles(held)
		o.rep.note("the attack was in place %v after it started: good calls while it was set up %d, p50 %v, p99 %v; once in place %d, p50 %v, p99 %v",
			st.readyAt.Sub(attackStart).Round(time.Millisecond), len(setup), round(s50), round(s99), len(held), round(h50), round(h99))
	}
	g, err1 := d.goroutines(ctx)
	streams, err2 := d.metric(ctx, mcpStreamsMetric)
	if err := errors.Join(err1, err2); err != nil {
		o.rep.note("when the newcomer tried, the daemon's metrics could not be read: %v", err)
	} else {
		o.rep.note("when the newcomer tried: %d goroutines, %v inbound streams on the node server (resource manager)", g, streams)
	}
	say("a newcomer tries to get in")
	o.newcomerTook, o.newcomerErr = newcomer(ctx, d.info, cfg.newcomerTimeout)

	// The end of the attack: a one-shot attack ends by itself.
	if a.oneShot {
		select {
		case <-runDone:
			o.rep.note("the attack was over %v after it started (the window under attack lasts %v)",
				st.overAt.Sub(attackStart).Round(time.Millisecond), cfg.phase)
		case <-time.After(cfg.readyTimeout):
			o.rep.note("the attack was not over after %v more; stopped", cfg.readyTimeout)
		}
	}
	stopAttack()
	select {
	case <-runDone:
		if runErr != nil {
			o.rep.note("the attack ended with: %v", runErr)
		}
	case <-time.After(60 * time.Second):
		o.rep.note("the attack did not stop within a minute of being told to")
	}
	stopSampling()
	o.gPeak = max(o.gBase, <-gPeak)
	sampled, killed := watch.end()
	o.guardKilled = killed
	o.peakKB = sampled
	if o.peakBy == "VmHWM" {
		if hwm, err := procStatusKB(d.pid(), "VmHWM"); err == nil {
			o.peakKB = max(hwm, sampled)
		}
	}

	// Goroutines back to the baseline?
	say("waiting up to %v for the daemon's goroutines to come back to %d", cfg.settle, o.gBase)
	start := time.Now()
	for {
		g, err := d.goroutines(ctx)
		if err == nil {
			o.gAfter = g
			if g <= o.gBase+cfg.goroutineSlack {
				o.settled = true
				o.settleTook = time.Since(start)
				break
			}
		}
		if time.Since(start) > cfg.settle || !d.alive() {
			break
		}
		sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
	}
	if !d.alive() {
		o.daemonDied = d.exitStatus()
		return o
	}
	say("a second clean window")
	cctx, cancel = context.WithTimeout(ctx, cfg.phase)
	o.cleanAfter = callLoop(cctx, peers, cfg.interval, cfg.callTimeout)
	cancel()
	return o
}

// sampleGoroutines reads d's goroutines from its metrics every 250 ms
// until ctx ends, then sends the most it read (0 if none).
func sampleGoroutines(ctx context.Context, d *daemon) <-chan int {
	peak := make(chan int, 1)
	go func() {
		most := 0
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if g, err := d.goroutines(ctx); err == nil {
				most = max(most, g)
			}
			select {
			case <-ctx.Done():
				peak <- most
				return
			case <-t.C:
			}
		}
	}()
	return peak
}

// name is the attack's name, marked with where its attackers ran unless
// that was the default.
func (o *outcome) name() string { return o.a.name + o.where.suffix() }

// latencyRatio is one of the good peers' latency ratios that the target
// applies to, and how it was come by.
type latencyRatio struct {
	name  string // p50, p99
	ratio float64
	how   string
}

// ratios are the good peers' p50 and p99 under attack against the clean
// window's; with a reference daemon, each divided by the reference's own
// ratio in the same two windows, so that what the machine did to both
// daemons (other work starting or ending) cancels out.
func (o *outcome) ratios() []latencyRatio {
	var rs []latencyRatio
	for _, q := range []struct {
		name                             string
		clean, under, refClean, refUnder time.Duration
	}{
		{"p50", o.clean.p50, o.under.p50, o.refClean.p50, o.refUnder.p50},
		{"p99", o.clean.p99, o.under.p99, o.refClean.p99, o.refUnder.p99},
	} {
		raw := ratio(q.under, q.clean)
		r := latencyRatio{name: q.name, ratio: raw, how: fmt.Sprintf("%v clean, %v under attack", round(q.clean), round(q.under))}
		if ref := ratio(q.refUnder, q.refClean); ref > 0 {
			r.ratio = raw / ref
			r.how = fmt.Sprintf("×%.1f: %v clean, %v under attack; the reference daemon in the same windows ×%.1f: %v, %v",
				raw, round(q.clean), round(q.under), ref, round(q.refClean), round(q.refUnder))
		}
		rs = append(rs, r)
	}
	return rs
}

// failures lists every target the attack missed, each with the value
// measured against the target.
func (o *outcome) failures(cfg *config) []string {
	if o.err != nil {
		return []string{"the suite could not run the attack: " + o.err.Error()}
	}
	var f []string
	if o.daemonDied != "" {
		why := o.daemonDied
		if o.guardKilled {
			why = fmt.Sprintf("killed by the suite's guard at %d MB RSS", cfg.rssGuardMB)
		}
		f = append(f, "the daemon died during the attack: "+why+"; target: it keeps serving")
	}
	if o.under.errors > 0 {
		f = append(f, fmt.Sprintf("good peers' errors under attack: %d (first: %s); target 0", o.under.errors, o.under.firstErr))
	}
	if o.cleanAfter.errors > 0 {
		f = append(f, fmt.Sprintf("good peers' errors after the attack: %d (first: %s); target 0", o.cleanAfter.errors, o.cleanAfter.firstErr))
	}
	if o.under.ok == 0 {
		f = append(f, "no good peer's call completed under attack")
	} else {
		for _, q := range o.ratios() {
			if cfg.maxRatio > 0 && q.ratio > cfg.maxRatio {
				f = append(f, fmt.Sprintf("good peers' %s ×%.1f (%s); target ≤ ×%g", q.name, q.ratio, q.how, cfg.maxRatio))
			}
		}
	}
	if mb := o.peakKB >> 10; mb > cfg.maxRSSMB {
		f = append(f, fmt.Sprintf("the daemon's peak RSS %d MB (%d MB before); target ≤ %d MB", mb, o.baseRSSKB>>10, cfg.maxRSSMB))
	}
	if !o.settled && o.daemonDied == "" {
		f = append(f, fmt.Sprintf("the daemon's goroutines: %d, %v after the attack ended (baseline %d); target ≤ %d within %v", o.gAfter, cfg.settle, o.gBase, o.gBase+cfg.goroutineSlack, cfg.settle))
	}
	if o.newcomerErr != nil {
		f = append(f, fmt.Sprintf("a new peer could not get in within %v: %v; target: always", cfg.newcomerTimeout, o.newcomerErr))
	}
	for _, c := range o.rep.checks {
		if !c.ok {
			f = append(f, fmt.Sprintf("%s: %s; target: %s", c.what, c.measured, c.target))
		}
	}
	for _, c := range o.rep.ids {
		if !c.ok {
			f = append(f, fmt.Sprintf("JSON-RPC id %s: got back %s; target: %s", c.sent, c.got, c.due))
		}
	}
	return f
}

func (l latencies) String() string {
	if l.ok == 0 && l.errors == 0 {
		return "–"
	}
	return fmt.Sprintf("%d calls in %v, p50 %v, p99 %v, %d errors", l.ok, l.window.Round(10*time.Millisecond), round(l.p50), round(l.p99), l.errors)
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// printTable writes one row per attack, then what each saw and missed.
func printTable(w io.Writer, cfg *config, os []*outcome) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "attack\tgood calls clean / attack\tp50 clean → attack\tp99 clean → attack\treference daemon p50 / p99\tratios vs reference p50 / p99\tgood errors\tpeak RSS\tgoroutines base → peak → after\tnewcomer\ttargets missed")
	for _, o := range os {
		if o.err != nil {
			fmt.Fprintf(tw, "%s\t–\t–\t–\t–\t–\t–\t–\t–\t–\t(not run)\n", o.name())
			continue
		}
		after := fmt.Sprintf("%d (%v)", o.gAfter, o.settleTook.Round(100*time.Millisecond))
		switch {
		case o.daemonDied != "":
			after = "daemon died"
		case !o.settled:
			after = fmt.Sprintf("%d (not by %v)", o.gAfter, cfg.settle)
		}
		rss := fmt.Sprintf("%d MB", o.peakKB>>10)
		if o.guardKilled {
			rss = fmt.Sprintf("> %d MB (killed)", cfg.rssGuardMB)
		}
		nc := fmt.Sprintf("yes, %v", round(o.newcomerTook))
		if o.newcomerErr != nil {
			nc = "NO"
		}
		refCol, vsCol := "–", "–"
		if o.refClean.ok > 0 {
			rs := o.ratios()
			refCol = fmt.Sprintf("×%.1f / ×%.1f", ratio(o.refUnder.p50, o.refClean.p50), ratio(o.refUnder.p99, o.refClean.p99))
			vsCol = fmt.Sprintf("×%.1f / ×%.1f", rs[0].ratio, rs[1].ratio)
		}
		fmt.Fprintf(tw, "%s\t%d / %d\t%v → %v (×%.1f)\t%v → %v (×%.1f)\t%s\t%s\t%d\t%s\t%d → %d → %s\t%s\t%d\n",
			o.name(), o.clean.ok, o.under.ok,
			round(o.clean.p50), round(o.under.p50), ratio(o.under.p50, o.clean.p50),
			round(o.clean.p99), round(o.under.p99), ratio(o.under.p99, o.clean.p99),
			refCol, vsCol,
			o.under.errors+o.cleanAfter.errors, rss, o.gBase, o.gPeak, after, nc, len(o.failures(cfg)))
	}
	tw.Flush()
	for _, o := range os {
		fmt.Fprintf(w, "\n%s: %s\n", o.name(), o.a.title)
		if o.err == nil {
			fmt.Fprintf(w, "  good peers: clean before %s; under attack %s; clean after %s\n", o.clean, o.under, o.cleanAfter)
			if o.refClean.ok > 0 {
				fmt.Fprintf(w, "  the reference daemon's good peers, same windows: clean %s; while the other was attacked %s; its CPU time %v → %v\n",
					o.refClean, o.refUnder, o.refCPU[0], o.refCPU[1])
			}
			fmt.Fprintf(w, "  daemon: RSS %d MB before, peak %d MB (%s)\n", o.baseRSSKB>>10, o.peakKB>>10, o.peakBy)
		}
		for _, n := range o.rep.notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
		if len(o.rep.ids) > 0 {
			iw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(iw, "  id sent\tgot back\tdue\tok")
			for _, c := range o.rep.ids {
				fmt.Fprintf(iw, "  %s\t%s\t%s\t%v\n", c.sent, c.got, c.due, c.ok)
			}
			iw.Flush()
		}
		for _, c := range o.rep.checks {
			mark := "ok  "
			if !c.ok {
				mark = "MISS"
			}
			fmt.Fprintf(w, "  %s %s: %s (target: %s)\n", mark, c.what, c.measured, c.target)
		}
		for _, f := range o.failures(cfg) {
			fmt.Fprintf(w, "  MISSED: %s\n", f)
		}
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }
