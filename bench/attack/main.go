// Command attack runs the attacks of issue 14 against an mcpmesh daemon,
// one after another, while well-behaved peers call it, and prints what the
// good peers got and what the daemon held during each.
//
//	go run ./bench/attack                     # the scale: 50 good peers, 5 s windows
//	go run ./bench/attack -only 'idle|ids'    # some attacks only
//
// Each attack gets a fresh daemon (`mcpmesh node --open --metrics ...`, a
// process of its own, built from ./cmd/mcpmesh unless -mcpmesh is given),
// then: the good peers (libp2p hosts in this process, each with an MCP
// client session of the official SDK) call its built-in tool echo for a
// clean window; the attack starts, from throwaway libp2p identities
// speaking hand-made JSON-RPC on raw streams, and the good peers call for
// a second window; a new peer tries to get in; the attack ends, and the
// daemon's goroutines must come back to their baseline. Per attack it
// prints the good peers' p50/p99 (clean → under attack), their errors, the
// daemon's peak RSS, its goroutines (baseline → peak → after) and whether
// the newcomer got in, then every target missed. The exit status is 1 if
// any target was missed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	logging "github.com/ipfs/go-log/v2"
)

func main() {
	if asSharedProgram() {
		return
	}
	cfg := defaultConfig()
	only := flag.String("only", "", "run only the attacks whose name matches this regular expression (the control run always runs)")
	flag.StringVar(&cfg.bin, "mcpmesh", "", "the mcpmesh command to attack (default: built from ./cmd/mcpmesh)")
	flag.IntVar(&cfg.peers, "peers", cfg.peers, "well-behaved peers calling throughout")
	flag.DurationVar(&cfg.interval, "interval", cfg.interval, "each good peer calls once per interval (0: back to back)")
	flag.DurationVar(&cfg.phase, "phase", cfg.phase, "length of the clean window and of the window under attack")
	flag.DurationVar(&cfg.newcomerTimeout, "newcomer-timeout", cfg.newcomerTimeout, "the new peer's dial timeout (the daemon's default --dial-timeout)")
	flag.IntVar(&cfg.ampInflight, "amp-inflight", cfg.ampInflight, "amplification: frames in flight from one identity")
	flag.IntVar(&cfg.ampIdentities, "amp-identities", cfg.ampIdentities, "amplification from many identities: how many")
	flag.IntVar(&cfg.ampPerIdentity, "amp-per-identity", cfg.ampPerIdentity, "amplification from many identities: frames in flight from each")
	flag.IntVar(&cfg.idleIdentities, "idle-identities", cfg.idleIdentities, "idle streams: fresh identities")
	flag.IntVar(&cfg.idleStreams, "idle-streams", cfg.idleStreams, "idle streams: streams from each identity")
	flag.IntVar(&cfg.pipelined, "pipelined", cfg.pipelined, "requests pipelined on one stream")
	flag.IntVar(&cfg.pipeIdentities, "pipe-identities", cfg.pipeIdentities, "pipelining from many identities: how many")
	flag.IntVar(&cfg.halfClose, "half-close", cfg.halfClose, "requests followed by a half-close")
	flag.IntVar(&cfg.portDials, "port-dials", cfg.portDials, "fresh identities dialing the port two daemons share")
	flag.Float64Var(&cfg.maxRatio, "max-ratio", cfg.maxRatio, "target: good peers' p50 and p99 under attack at most this times the clean run's")
	flag.Int64Var(&cfg.maxRSSMB, "max-rss", cfg.maxRSSMB, "target: the daemon's peak RSS, in MB")
	flag.DurationVar(&cfg.settle, "settle", cfg.settle, "target: the daemon's goroutines back to baseline within this")
	flag.IntVar(&cfg.goroutineSlack, "goroutine-slack", cfg.goroutineSlack, "target: 'back to baseline' means at most this many goroutines more")
	flag.Int64Var(&cfg.rssGuardMB, "rss-guard", cfg.rssGuardMB, "kill a daemon whose RSS passes this many MB, to protect the machine (0: never)")
	flag.BoolVar(&cfg.reference, "reference", cfg.reference, "run a second daemon, never attacked, with good peers of its own in the same windows, and take the latency ratios against its own (what the machine's other work does to both cancels out)")
	attackers := flag.String("attackers", "process", "where the attackers run: process (a process of their own), niced (the same at nice 19: the cores go to the daemon and the good peers first, which also slows the attack on a loaded machine), inline (the suite's process, beside the good peers, as first measured); a comma-separated list runs each attack once per mode, side by side")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "attack: no arguments expected; see -help")
		os.Exit(2)
	}
	sel, err := regexp.Compile(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attack: -only:", err)
		os.Exit(2)
	}
	if cfg.attackers, err = parseAttackerModes(*attackers); err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		os.Exit(2)
	}
	logging.SetAllLoggers(logging.LevelError)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, &cfg, sel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(ctx context.Context, cfg *config, sel *regexp.Regexp) (int, error) {
	var err error
	if cfg.self, err = os.Executable(); err != nil {
		return 0, fmt.Errorf("find this executable: %w", err)
	}
	if cfg.bin == "" {
		dir, err := os.MkdirTemp("", "mcpmesh-attack-bin-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "building ./cmd/mcpmesh")
		if cfg.bin, err = buildMcpmesh(dir); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	var outcomes []*outcome
	missed := 0
	for _, a := range attacks(cfg) {
		if a.name != "0-control" && !sel.MatchString(a.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		for _, where := range cfg.attackers {
			o := runAttack(ctx, cfg, a, where, os.Stderr)
			outcomes = append(outcomes, o)
			if len(o.failures(cfg)) > 0 {
				missed++
			}
		}
	}
	fmt.Printf("%d good peers, each calling echo every %v; %v windows; attackers: %s; targets: p50/p99 ≤ ×%g, 0 errors, peak RSS ≤ %d MB, goroutines back to baseline (+%d) within %v, the newcomer gets in within %v\n\n",
		cfg.peers, cfg.interval, cfg.phase, modesString(cfg.attackers), cfg.maxRatio, cfg.maxRSSMB, cfg.goroutineSlack, cfg.settle, cfg.newcomerTimeout)
	printTable(os.Stdout, cfg, outcomes)
	fmt.Printf("\n%d of %d runs missed a target (%v)\n", missed, len(outcomes), time.Since(start).Round(time.Second))
	if missed > 0 {
		return 1, nil
	}
	return 0, nil
}
