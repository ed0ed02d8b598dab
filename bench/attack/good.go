package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// goodPeer is a well-behaved peer: its own libp2p host and a real MCP
// client session (the official SDK's) on a stream to the daemon's "node"
// server, calling the built-in tool echo. Like an mcpmesh node, it opens a
// new session for its next call when one ends.
type goodPeer struct {
	h      host.Host
	target lpeer.AddrInfo
	client *sdkmcp.Client
	cs     *sdkmcp.ClientSession // nil between sessions; used by one goroutine at a time
}

func newGoodPeer(target lpeer.AddrInfo) (*goodPeer, error) {
	h, err := newIdentity(false)
	if err != nil {
		return nil, err
	}
	return &goodPeer{h: h, target: target, client: sdkmcp.NewClient(&sdkmcp.Implementation{Name: "attack-good-peer", Version: "0"}, nil)}, nil
}

// session returns the peer's session, opening one if it has none.
func (g *goodPeer) session(ctx context.Context) (*sdkmcp.ClientSession, error) {
	if g.cs != nil {
		return g.cs, nil
	}
	if err := connect(ctx, g.h, g.target, 10*time.Second); err != nil {
		return nil, err
	}
	s, err := g.h.NewStream(ctx, g.target.ID, protocolOf("node"))
	if err != nil {
		return nil, fmt.Errorf("open a stream: %w", err)
	}
	cs, err := g.client.Connect(ctx, &sdkmcp.IOTransport{Reader: s, Writer: s}, &sdkmcp.ClientSessionOptions{ProtocolVersion: protocolVersion})
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("open an MCP session: %w", err)
	}
	g.cs = cs
	return cs, nil
}

// call makes one echo call and checks its answer. A call that fails for
// another reason than its context ends the session, so the next opens a
// new one; a call cut short keeps it (the SDK tells the daemon).
func (g *goodPeer) call(ctx context.Context) error {
	cs, err := g.session(ctx)
	if err != nil {
		return err
	}
	res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "good"}})
	if err == nil && (res.IsError || len(res.Content) == 0) {
		err = fmt.Errorf("echo answered with an error result: %v", res.Content)
	}
	if err == nil {
		if tc, ok := res.Content[0].(*sdkmcp.TextContent); !ok || tc.Text != "good" {
			err = fmt.Errorf("echo answered %v, not the text sent", res.Content[0])
		}
	}
	if err != nil && ctx.Err() == nil {
		g.endSession()
	}
	return err
}

func (g *goodPeer) endSession() {
	if g.cs != nil {
		g.cs.Close()
		g.cs = nil
	}
}

func (g *goodPeer) close() {
	g.endSession()
	g.h.Close()
}

func closePeers(ps []*goodPeer) {
	for _, p := range ps {
		p.close()
	}
}

// startGoodPeers starts k good peers and has each open its session and
// make a first call.
func startGoodPeers(ctx context.Context, k int, target lpeer.AddrInfo) ([]*goodPeer, error) {
	ps := make([]*goodPeer, 0, k)
	for range k {
		p, err := newGoodPeer(target)
		if err != nil {
			closePeers(ps)
			return nil, err
		}
		ps = append(ps, p)
	}
	var wg sync.WaitGroup
	errs := make([]error, k)
	for i, p := range ps {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			errs[i] = p.call(cctx)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closePeers(ps)
		return nil, fmt.Errorf("a good peer's first call: %w", err)
	}
	return ps, nil
}

// latencies is what the good peers got during one window.
type latencies struct {
	ok, errors int
	firstErr   string
	p50, p99   time.Duration
	window     time.Duration
	calls      []timedCall // every call that completed, by start
}

// timedCall is one good call that completed: when it started, how long it
// took.
type timedCall struct {
	start time.Time
	took  time.Duration
}

// percentiles returns the p50 and p99 of what the calls took.
func percentiles(calls []timedCall) (p50, p99 time.Duration) {
	if len(calls) == 0 {
		return 0, 0
	}
	all := make([]time.Duration, len(calls))
	for i, c := range calls {
		all[i] = c.took
	}
	slices.Sort(all)
	return all[len(all)/2], all[min(len(all)-1, len(all)*99/100)]
}

// split returns what the calls started before t took, and those started
// from t on.
func (l latencies) split(t time.Time) (before, after []timedCall) {
	for _, c := range l.calls {
		if c.start.Before(t) {
			before = append(before, c)
		} else {
			after = append(after, c)
		}
	}
	return before, after
}

// callLoop has every peer call once per interval (back to back when a call
// takes longer, or interval is 0) until ctx ends; each call may take up to
// callTimeout. Calls cut short by the end of ctx are not counted.
func callLoop(ctx context.Context, ps []*goodPeer, interval, callTimeout time.Duration) latencies {
	type tally struct {
		lat      []timedCall
		errors   int
		firstErr error
	}
	tallies := make([]tally, len(ps))
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range ps {
		t := &tallies[i]
		wg.Go(func() {
			// Peers start spread over the first interval, not in one burst.
			next := time.Now().Add(time.Duration(i) * interval / time.Duration(len(ps)))
			for {
				if !sleepUntil(ctx, next) {
					return
				}
				t0 := time.Now()
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				err := p.call(cctx)
				cancel()
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					t.errors++
					if t.firstErr == nil {
						t.firstErr = fmt.Errorf("%w (after %v, %v into the window)", err, time.Since(t0).Round(time.Millisecond), t0.Sub(start).Round(time.Millisecond))
					}
				} else {
					t.lat = append(t.lat, timedCall{start: t0, took: time.Since(t0)})
				}
				next = t0.Add(interval)
			}
		})
	}
	wg.Wait()
	l := latencies{window: time.Since(start)}
	for _, t := range tallies {
		l.calls = append(l.calls, t.lat...)
		l.errors += t.errors
		if t.firstErr != nil && l.firstErr == "" {
			l.firstErr = t.firstErr.Error()
		}
	}
	slices.SortFunc(l.calls, func(a, b timedCall) int { return a.start.Compare(b.start) })
	l.ok = len(l.calls)
	l.p50, l.p99 = percentiles(l.calls)
	return l
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// newcomer is a peer the daemon has never seen: a fresh identity connects,
// opens a session and calls echo, all within timeout (a node's dial
// timeout). It returns how long that took.
func newcomer(ctx context.Context, target lpeer.AddrInfo, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	p, err := newGoodPeer(target)
	if err != nil {
		return 0, err
	}
	defer p.close()
	err = p.call(ctx)
	return time.Since(start), err
}
