package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

// loopback is where every host of the benchmark listens.
const loopback = "/ip4/127.0.0.1/tcp/0"

type workIn struct {
	Text string `json:"text" jsonschema:"text to echo"`
}

type workOut struct {
	Text string `json:"text"`
}

// newServer starts the serving node: open to every peer (no policy in the
// way), with lc's limits and the tool "work".
func newServer(lc limits.Config, work time.Duration) (*node.Node, error) {
	n, err := node.New(node.WithListenAddrs(loopback), node.WithOpen(), node.WithLimits(lc), node.WithName("load-server"))
	if err != nil {
		return nil, fmt.Errorf("start serving node: %w", err)
	}
	node.AddTool(n, &sdkmcp.Tool{Name: "work", Description: "works a little, then echoes its text"},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in workIn) (*sdkmcp.CallToolResult, workOut, error) {
			t := time.NewTimer(work)
			defer t.Stop()
			select {
			case <-t.C:
				return nil, workOut(in), nil
			case <-ctx.Done():
				return nil, workOut{}, ctx.Err()
			}
		})
	return n, nil
}

// caller is one well-behaved node.
type caller struct{ n *node.Node }

func newCallers(k int) ([]*caller, error) {
	cs := make([]*caller, 0, k)
	for range k {
		n, err := node.New(node.WithListenAddrs(loopback), node.WithOpen(), node.WithName("load-caller"))
		if err != nil {
			closeAll(cs)
			return nil, fmt.Errorf("start caller node: %w", err)
		}
		cs = append(cs, &caller{n: n})
	}
	return cs, nil
}

func closeAll(cs []*caller) {
	for _, c := range cs {
		c.n.Close()
	}
}

// connectAll connects every caller to the server and makes one call each.
func connectAll(cs []*caller, server lpeer.AddrInfo) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(cs))
	for _, c := range cs {
		wg.Go(func() {
			if err := c.n.ConnectAddr(ctx, server); err != nil {
				errs <- err
				return
			}
			if err := c.call(ctx, server.ID); err != nil {
				errs <- fmt.Errorf("first call: %w", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (c *caller) call(ctx context.Context, server lpeer.ID) error {
	res, err := c.n.CallServerTool(ctx, server, transport.DefaultServer, "work", workIn{Text: "load"})
	if err != nil {
		return err
	}
	if res.IsError {
		return errors.New("error result")
	}
	return nil
}

// callStats is what the well-behaved callers got.
type callStats struct {
	ok, errors int64
	elapsed    time.Duration
	p50, p99   time.Duration
	firstErr   string
	perCaller  []int64 // completed calls of each caller
}

// runCallers has every caller call server with per goroutines for d (or
// until ctx ends), and measures each call.
func runCallers(ctx context.Context, cs []*caller, server lpeer.ID, per int, d time.Duration) callStats {
	end := time.Now().Add(d)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	type worker struct {
		lat      []time.Duration
		errors   int64
		firstErr error
	}
	workers := make([][]worker, len(cs))
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range cs {
		workers[i] = make([]worker, per)
		for j := range per {
			w := &workers[i][j]
			wg.Go(func() {
				for ctx.Err() == nil {
					t := time.Now()
					err := c.call(ctx, server)
					if ctx.Err() != nil || !time.Now().Before(end) {
						// Cut short by the end of the run (whose timer may
						// not have fired yet): not counted.
						return
					}
					if err != nil {
						w.errors++
						if w.firstErr == nil {
							w.firstErr = fmt.Errorf("%w (after %v, %v into the run)", err, time.Since(t).Round(time.Millisecond), t.Sub(start).Round(time.Millisecond))
						}
						continue
					}
					w.lat = append(w.lat, time.Since(t))
				}
			})
		}
	}
	wg.Wait()
	s := callStats{elapsed: time.Since(start), perCaller: make([]int64, len(cs))}
	var all []time.Duration
	for i := range workers {
		for _, w := range workers[i] {
			all = append(all, w.lat...)
			s.perCaller[i] += int64(len(w.lat))
			s.errors += w.errors
			if w.firstErr != nil && s.firstErr == "" {
				s.firstErr = w.firstErr.Error()
			}
		}
	}
	s.ok = int64(len(all))
	if len(all) > 0 {
		slices.Sort(all)
		s.p50 = all[len(all)/2]
		s.p99 = all[min(len(all)-1, len(all)*99/100)]
	}
	return s
}

// probe checks the server answers a newcomer's call.
func probe(server lpeer.AddrInfo) error {
	cs, err := newCallers(1)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	return connectAll(cs, server)
}
