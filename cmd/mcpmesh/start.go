package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/mcpmesh/mcpmesh/mcp/upstream"
	"github.com/mcpmesh/mcpmesh/node"
)

// stillStarting is how often the daemon says a shared server is still
// starting (a first `npx -y` downloads its package: tens of seconds).
const stillStarting = 10 * time.Second

// startShares starts the shared programs and HTTP servers among specs, all
// at once, and says on out how each comes up ("share NAME: ready, N tools
// (2.1s)"), on errOut when one fails its first start (the node keeps
// retrying it). The channel it returns is closed when every one has
// started or failed its first start, or ctx has ended.
func startShares(ctx context.Context, n *node.Node, specs []shareSpec, out, errOut io.Writer) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range specs {
		if len(s.command.Args) == 0 && s.remote == nil {
			continue // a peer's server: shared already
		}
		if upstream.Launcher(s.display) {
			fmt.Fprintf(out, "share %s: starting %s (a first run may download its package: given up to %v)\n", s.name, s.display, upstream.LauncherStartTimeout)
		} else {
			fmt.Fprintf(out, "share %s: starting %s\n", s.name, s.display)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			started := time.Now()
			tick := time.NewTicker(stillStarting)
			defer tick.Stop()
			result := make(chan error, 1)
			go func() {
				if s.remote != nil {
					result <- n.ShareHTTP(ctx, s.name, *s.remote, s.opts...)
				} else {
					result <- n.ShareCommand(ctx, s.name, s.command, s.opts...)
				}
			}()
			for {
				select {
				case err := <-result:
					took := time.Since(started).Round(100 * time.Millisecond)
					switch {
					case ctx.Err() != nil:
					case err != nil:
						fmt.Fprintf(errOut, "warning: %v\n", err)
					default:
						fmt.Fprintf(out, "share %s: ready, %s (%v)\n", s.name, shareCounts(n, s.name), took)
					}
					return
				case <-tick.C:
					fmt.Fprintf(out, "share %s: still starting (%v%s)\n", s.name, time.Since(started).Round(time.Second), startLeft(n, s.name))
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// startLeft says how long a share still starting is given, from now, if
// it shows no more sign of life (each line it writes on stderr extends it).
func startLeft(n *node.Node, name string) string {
	for _, p := range n.Programs() {
		if p.Name == name && !p.StartDeadline.IsZero() {
			return fmt.Sprintf("; given %v more, or longer while it writes on stderr", time.Until(p.StartDeadline).Round(time.Second))
		}
	}
	return ""
}

// shareCounts says what a shared server offers, as its supervisor counted.
func shareCounts(n *node.Node, name string) string {
	for _, p := range n.Programs() {
		if p.Name == name {
			s := fmt.Sprintf("%d tools", p.Tools)
			if p.Resources > 0 {
				s += fmt.Sprintf(", %d resources", p.Resources)
			}
			if p.Prompts > 0 {
				s += fmt.Sprintf(", %d prompts", p.Prompts)
			}
			return s
		}
	}
	return "up"
}

// bannerServers lists the servers for the start banner: those shared
// already, then those still starting.
func bannerServers(shared []string, specs []shareSpec) []string {
	out := slices.Clone(shared)
	for _, s := range specs {
		if !slices.Contains(out, s.name) {
			out = append(out, s.name+" (starting)")
		}
	}
	return out
}

// syncWriter lets the goroutines that report on shares write whole lines
// to the banner's output.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
