package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mcpmesh/mcpmesh/agent"
	"github.com/mcpmesh/mcpmesh/events/trigger"
	"github.com/mcpmesh/mcpmesh/node"
)

// configPoll is how often the daemon looks at its configuration file for
// changes.
const configPoll = 2 * time.Second

// reloadGrace is how long the calls in flight on a share that a reload
// removes or changes may take to finish; then they fail, saying why.
const reloadGrace = 10 * time.Second

// reloadedSections are the sections of the configuration file a reload
// applies; a change to any other is said, and waits for a restart.
var reloadedSections = []string{"policy", "shares", "agents", "triggers"}

// shareFlags are the shares given on the command line: a reload keeps them
// as they are (the file's shares merge with them as at start).
type shareFlags struct {
	shares, http, headers, relays, modes []string
}

// reloader applies the daemon's configuration file again while it runs:
// the policy, the shares, the agents and the triggers, each diffed by name
// against what runs. A file that does not parse or check applies nothing.
type reloader struct {
	n        *node.Node
	triggers *trigger.Engine
	path     string
	open     bool // --open: the file's policy is not applied
	flags    shareFlags
	ctx      context.Context // the daemon's: shares started on reload run within it
	out      io.Writer       // the daemon's output, and its errors
	errOut   io.Writer
	// policySaid, if set, is told the policy's line for status when it
	// changes.
	policySaid func(string)

	mu   sync.Mutex // one reload at a time
	seen []byte     // the file as last read (applied or refused)
	file *fileConfig
	raw  []byte // the file the running configuration came from
	// lastSaid is what the reload that applied raw said, for 'mcpmesh
	// config reload' after the file's change was seen.
	lastSaid []string
	specs    map[string]shareSpec
	kept     map[string]context.CancelFunc // re-shared peers kept connected, by share: stopped with it
}

func newReloader(ctx context.Context, n *node.Node, triggers *trigger.Engine, path string, open bool, flags shareFlags, file *fileConfig, raw []byte, specs []shareSpec, kept map[string]context.CancelFunc, out, errOut io.Writer) *reloader {
	r := &reloader{n: n, triggers: triggers, path: path, open: open, flags: flags, ctx: ctx, out: out, errOut: errOut,
		seen: raw, file: file, raw: raw, specs: map[string]shareSpec{}, kept: kept}
	for _, s := range specs {
		r.specs[s.name] = s
	}
	return r
}

// watch reloads the file when it changes (polled) or the process gets
// SIGHUP, until ctx ends. What it applies is said on the daemon's output;
// a file refused, on its errors.
func (r *reloader) watch(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(configPoll)
	defer tick.Stop()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return
		case <-hup:
			forced = true
		case <-tick.C:
		}
		data, err := os.ReadFile(r.path)
		if err != nil {
			if forced {
				fmt.Fprintf(r.errOut, "warning: config not reloaded, nothing applied: %v\n", err)
			}
			continue // a file being replaced, between its removal and its renaming
		}
		r.mu.Lock()
		same := bytes.Equal(data, r.seen)
		r.mu.Unlock()
		if same && !forced {
			continue
		}
		if err := r.reload(data, r.out, r.errOut); err != nil {
			fmt.Fprintf(r.errOut, "warning: %v\n", err)
		}
	}
}

// reloadNow rereads the file and applies it ('mcpmesh config reload'): it
// returns what the daemon said meanwhile (also on its own output).
func (r *reloader) reloadNow(context.Context) ([]string, error) {
	data, err := os.ReadFile(r.path)
	if err != nil {
		return nil, fmt.Errorf("config not reloaded, nothing applied: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if bytes.Equal(data, r.raw) && r.lastSaid != nil {
		// Applied already (the daemon saw the file change first): what
		// that reload said.
		return append([]string{fmt.Sprintf("config %s: applied already; its reload said:", r.path)}, r.lastSaid...), nil
	}
	var said lineBuffer
	err = r.reloadLocked(data, io.MultiWriter(r.out, &said), io.MultiWriter(r.errOut, &said))
	return said.lines(), err
}

// reload applies data, the configuration file, in place of the running
// one: all of what a reload applies, or, if it does not parse or check,
// none of it (the error says why).
func (r *reloader) reload(data []byte, out, errOut io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked(data, out, errOut)
}

func (r *reloader) reloadLocked(data []byte, out, errOut io.Writer) error {
	r.seen = data
	var lines lineBuffer
	out, errOut = io.MultiWriter(out, &lines), io.MultiWriter(errOut, &lines)
	cfg, specs, err := r.check(data)
	if err != nil {
		return fmt.Errorf("config not reloaded, nothing applied (the running configuration stays): %w", err)
	}
	said := false
	say := func(format string, args ...any) {
		said = true
		fmt.Fprintf(out, format+"\n", args...)
	}

	if !jsonEqual(section(r.raw, "policy"), section(data, "policy")) {
		if r.open {
			say("policy changed in %s: not applied, the node runs --open", r.path)
		} else {
			r.n.SetPolicy(cfg.Policy)
			line := describePolicy(cfg.Policy, false)
			if r.policySaid != nil {
				r.policySaid(line)
			}
			say("policy reloaded from %s: %s", r.path, line)
		}
	}
	sharesChanged := r.reloadShares(specs, say, out, errOut)
	if sharesChanged {
		said = true
	}
	agentsChanged := r.reloadAgents(cfg.Agents, say, errOut)
	r.reloadTriggers(cfg.Triggers, say, errOut)
	if d := r.n.Discovery(); d != nil && (sharesChanged || agentsChanged) {
		// Agents are tools of the node's own server, whose change reaches
		// the card a little later: announce it now, so Sync counts it.
		d.Changed()
		ctx, cancel := context.WithTimeout(r.ctx, cardSyncWait)
		err := d.Sync(ctx)
		cancel()
		if err != nil {
			fmt.Fprintf(errOut, "warning: %v; peers will see the change once it is\n", err)
		} else {
			say("card republished: peers see the change")
		}
	}
	var later []string
	for _, s := range changedSections(r.raw, data) {
		if !slices.Contains(reloadedSections, s) {
			later = append(later, s)
		}
	}
	if len(later) > 0 {
		said = true
		fmt.Fprintf(errOut, "warning: %s changed in %s: applied only when the node starts; restart it for them (a reload applies %s)\n",
			strings.Join(later, ", "), r.path, strings.Join(reloadedSections, ", "))
	}
	if !said {
		say("config %s reloaded: nothing changed", r.path)
	}
	r.file, r.raw, r.lastSaid = cfg, data, lines.lines()
	r.specs = map[string]shareSpec{}
	for _, s := range specs {
		r.specs[s.name] = s
	}
	return nil
}

// check reads data and checks all that a reload would apply, as the
// daemon does at start.
func (r *reloader) check(data []byte) (*fileConfig, []shareSpec, error) {
	cfg, err := parseConfig(r.path, data)
	if err != nil {
		return nil, nil, err
	}
	specs, err := shareSpecs(cfg, r.flags.shares, r.flags.http, r.flags.headers, r.flags.relays, r.flags.modes)
	if err != nil {
		return nil, nil, err
	}
	for _, s := range specs {
		if s.target.ID == r.n.ID() {
			return nil, nil, fmt.Errorf("share %s: %s is this node's own server", s.name, s.display)
		}
	}
	if err := cfg.checkTriggers(); err != nil {
		return nil, nil, err
	}
	names := map[string]bool{}
	for i, a := range cfg.Agents {
		if err := agent.Check(a); err != nil {
			return nil, nil, fmt.Errorf("agents[%d]: %w", i, err)
		}
		if names[a.Name] {
			return nil, nil, fmt.Errorf("agents[%d]: an agent named %q comes twice", i, a.Name)
		}
		names[a.Name] = true
	}
	return cfg, specs, nil
}

// reloadShares stops the shares that are gone or changed (their calls in
// flight get reloadGrace to finish), then starts the changed and the new
// ones as at start, saying how each comes up. It reports whether anything
// changed.
func (r *reloader) reloadShares(specs []shareSpec, say func(string, ...any), out, errOut io.Writer) bool {
	next := map[string]shareSpec{}
	for _, s := range specs {
		next[s.name] = s
	}
	var stop []string
	for name, old := range r.specs {
		if s, ok := next[name]; !ok || !reflect.DeepEqual(old.source, s.source) {
			stop = append(stop, name)
		}
	}
	var start []shareSpec
	for _, s := range specs { // sorted by name
		if old, ok := r.specs[s.name]; !ok || !reflect.DeepEqual(old.source, s.source) {
			start = append(start, s)
		}
	}
	if len(stop) == 0 && len(start) == 0 {
		return false
	}
	slices.Sort(stop)
	var wg sync.WaitGroup
	for _, name := range stop {
		what := "removed"
		if _, ok := next[name]; ok {
			what = "changed, restarting it"
		}
		say("share %s: %s (calls in flight have %v to finish)", name, what, reloadGrace)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.ctx, reloadGrace)
			defer cancel()
			if err := r.n.UnshareGracefully(ctx, name); err != nil {
				fmt.Fprintf(errOut, "warning: share %s: %v\n", name, err)
				return
			}
			fmt.Fprintf(out, "share %s: stopped\n", name)
		})
	}
	wg.Wait()
	for _, name := range stop {
		if cancel, ok := r.kept[name]; ok {
			cancel()
			delete(r.kept, name)
		}
	}
	started := &fileConfig{Shares: map[string]shareConfig{}}
	for _, s := range start {
		started.Shares[s.name] = s.source
	}
	for _, w := range shareWarnings(started, start, nil) {
		fmt.Fprintf(errOut, "warning: %s\n", w)
	}
	if err := sharePeers(r.n, start, r.kept); err != nil {
		fmt.Fprintf(errOut, "warning: %v\n", err)
	}
	for _, s := range start {
		if len(s.command.Args) == 0 && s.remote == nil {
			say("share %s: re-sharing %s", s.name, s.display)
		}
	}
	<-startShares(r.ctx, r.n, start, out, errOut)
	return true
}

// reloadAgents removes, replaces and adds the file's agents, by name. It
// reports whether anything changed.
func (r *reloader) reloadAgents(agents []agent.Config, say func(string, ...any), errOut io.Writer) bool {
	d := diffByName(r.file.Agents, agents, func(a agent.Config) string { return a.Name })
	for _, c := range d.put {
		// Adding an agent of the same name replaces it.
		if err := agent.Add(r.n, c.item); err != nil {
			fmt.Fprintf(errOut, "warning: agent %s: %v\n", c.item.Name, err)
			continue
		}
		say("agent %s: %s", c.item.Name, c.verb())
	}
	for _, name := range d.gone {
		agent.Remove(r.n, name)
		say("agent %s: removed (its calls in flight finish)", name)
	}
	return len(d.put)+len(d.gone) > 0
}

// reloadTriggers removes, replaces and adds the file's triggers, by name;
// those added with 'mcpmesh on' stay.
func (r *reloader) reloadTriggers(rules []trigger.Rule, say func(string, ...any), errOut io.Writer) {
	d := diffByName(r.file.Triggers, rules, func(t trigger.Rule) string { return t.Name })
	for _, c := range d.put {
		if c.replaces {
			r.triggers.Remove(c.item.Name) // gone already if removed with 'mcpmesh on --remove'
		}
		if err := r.triggers.Add(c.item); err != nil {
			fmt.Fprintf(errOut, "warning: trigger %s: %v\n", c.item.Name, err)
			continue
		}
		say("trigger %s: %s", c.item.Name, c.verb())
	}
	for _, name := range d.gone {
		r.triggers.Remove(name)
		say("trigger %s: removed", name)
	}
}

// nameDiff is how a list of named things changed: the ones to put in place
// (new, or changed: compared whole) in the new list's order, and the names
// of those gone, sorted.
type nameDiff[T any] struct {
	put  []putItem[T]
	gone []string
}

type putItem[T any] struct {
	item     T
	replaces bool // one of that name runs
}

func (p putItem[T]) verb() string {
	if p.replaces {
		return "replaced"
	}
	return "added"
}

func diffByName[T any](old, next []T, name func(T) string) nameDiff[T] {
	running := map[string]T{}
	for _, o := range old {
		running[name(o)] = o
	}
	var d nameDiff[T]
	for _, n := range next {
		prev, ok := running[name(n)]
		delete(running, name(n))
		if !ok || !reflect.DeepEqual(prev, n) {
			d.put = append(d.put, putItem[T]{item: n, replaces: ok})
		}
	}
	for k := range running {
		d.gone = append(d.gone, k)
	}
	slices.Sort(d.gone)
	return d
}

// section returns one top-level section of a configuration file, raw.
func section(data []byte, name string) json.RawMessage {
	var m map[string]json.RawMessage
	json.Unmarshal(data, &m)
	return m[name]
}

// lineBuffer collects what is written to it, line by line, from any
// goroutine.
type lineBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lineBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimRight(b.buf.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
