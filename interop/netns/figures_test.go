package netns

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The figures of issue 11, measured in the lab. Minutes, so behind a flag:
//
//	go test ./interop/netns -run TestFigures -netns.figures -v [-netns.attempts 20] [-netns.rtt 40ms]
//
// Every line to quote starts with "figure:". The "internet" of the NAT
// figures has cables: a round trip between two of its hosts takes
// -netns.rtt (no loss); LANs have none. NAT traversal meets Linux's NAT,
// not the variety of routers in the wild.
func TestFigures(t *testing.T) {
	if !*figures {
		t.Skip("figures run with -netns.figures")
	}
	t.Run("first call and share direct", func(t *testing.T) {
		for _, tr := range []Transport{QUIC, TCP} {
			t.Run(tr.String(), func(t *testing.T) { figureHolePunch(t, tr, *attempts) })
		}
	})
	t.Run("relay overhead", func(t *testing.T) { figureRelayOverhead(t, 10**attempts) })
	t.Run("partition detection", func(t *testing.T) { figurePartition(t, *attempts) })
}

// figureHolePunch: C behind a port-preserving NAT, and, attempts times, a
// fresh A (new identity, new port) behind another, calling C: the time to
// the first call (relayed: neither can dial the other), the time until the
// connection is direct, and how many attempts end direct within 15 s.
func figureHolePunch(t *testing.T, tr Transport, n int) {
	lab := newLab(t)
	inet := internet(lab)
	r := lab.Host("r", inet).Start(append(Listen(tr), "--relay-service", "on")...)
	rAddr := r.Addr(inet, tr)
	hc := lab.Host("c", lab.NATLAN("home-c", "192.168.1.0/24", inet, PortPreserving))
	share, _ := withTool(t, hc)
	c := hc.Start(append(append(Listen(tr), share...), "--peer", rAddr)...)
	waitFor(t, 30*time.Second, "c holds a relay reservation with r", func() (bool, string) {
		st, ok, why := status(c)
		return ok && st.hasRelay(r.ID()), why
	})
	ha := lab.Host("a", lab.NATLAN("home-a", "192.168.2.0/24", inet, PortPreserving))
	// A new port each attempt: the NATs' mappings of an earlier attempt
	// must not open the way for the next.
	anyPort := map[Transport][]string{
		TCP:  {"--listen", "/ip4/0.0.0.0/tcp/0"},
		QUIC: {"--listen", "/ip4/0.0.0.0/udp/0/quic-v1"},
	}[tr]

	var first, direct, warm []time.Duration
	relayedFirst := 0
	for i := range n {
		a := ha.Start(append(anyPort, "--peer", rAddr)...)
		start := time.Now()
		var ok bool
		for time.Since(start) < 30*time.Second {
			res := cli(a, "call", c.ID(), "tool/hello")
			if ok = res.OK(); ok {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !ok {
			t.Logf("attempt %d: no call succeeded within 30 s", i)
			a.Stop()
			continue
		}
		first = append(first, time.Since(start))
		if st, ok, _ := status(a); ok {
			if p, conn := st.peer(c.ID()); conn && p.Relayed {
				relayedFirst++
			}
		}
		for time.Since(start) < 15*time.Second {
			st, ok, _ := status(a)
			if p, conn := st.peer(c.ID()); ok && conn && !p.Relayed {
				direct = append(direct, time.Since(start))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		// What a call costs once connected, CLI start-up included: the
		// part of the first call that is not reaching C.
		if res := cli(a, "call", c.ID(), "tool/hello"); res.OK() {
			warm = append(warm, res.Took)
		}
		a.Stop()
	}
	t.Logf("figure: %s, both behind port-preserving NATs, RTT %v, %d attempts, times from A ready: first call after %s (still relayed right after it in %d); direct in %d of %d (%.0f %%), after %s; a call once connected (CLI start-up included) %s",
		tr, *rtt, n, spread(first), relayedFirst, len(direct), len(first), 100*float64(len(direct))/float64(max(len(first), 1)), spread(direct), spread(warm))
}

// figureRelayOverhead: from A, calls to C1 and C2, all three behind
// port-preserving NATs with R as their relay; C2 has hole punching off, so
// A reaches C1 directly (a hole punched) and C2 through R. The calls alternate, over one
// MCP session each through A's HTTP gateway (no CLI start-up in the
// figure).
func figureRelayOverhead(t *testing.T, n int) {
	lab := newLab(t)
	inet := internet(lab)
	r := lab.Host("r", inet).Start("--relay-service", "on")
	rAddr := r.Addr(inet, QUIC)
	var cs []*Daemon
	for i, extra := range [][]string{nil, {"--hole-punching=false"}} {
		h := lab.Host(fmt.Sprintf("c%d", i+1), lab.NATLAN(fmt.Sprintf("home%d", i+1), fmt.Sprintf("192.168.%d.0/24", i+1), inet, PortPreserving))
		share, _ := withTool(t, h)
		cs = append(cs, h.Start(append(append(share, "--peer", rAddr), extra...)...))
	}
	ha := lab.Host("a", lab.NATLAN("home-a", "192.168.9.0/24", inet, PortPreserving))
	a := ha.Start("--peer", rAddr, "--http", "127.0.0.1:8765")
	for i, c := range cs {
		waitFor(t, 30*time.Second, c.Name()+" holds a reservation", func() (bool, string) {
			st, ok, why := status(c)
			return ok && st.hasRelay(r.ID()), why
		})
		waitFor(t, 30*time.Second, "a calls "+c.Name(), func() (bool, string) {
			res := cli(a, "call", c.ID(), "tool/hello")
			return res.OK(), res.String()
		})
		wantRelayed := i == 1
		waitFor(t, 20*time.Second, fmt.Sprintf("a reaches %s relayed=%v", c.Name(), wantRelayed), func() (bool, string) {
			st, ok, why := status(a)
			p, conn := st.peer(c.ID())
			return ok && conn && p.Relayed == wantRelayed, fmt.Sprintf("%s %+v", why, p)
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	httpc := &http.Client{Transport: &http.Transport{DialContext: ha.DialContext}}
	var sessions []*sdkmcp.ClientSession
	for _, c := range cs {
		client := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "figures", Version: "1"}, nil)
		s, err := client.Connect(ctx, &sdkmcp.StreamableClientTransport{
			Endpoint:   fmt.Sprintf("http://127.0.0.1:8765/mcp/%s/tool", c.ID()),
			HTTPClient: httpc,
		}, nil)
		if err != nil {
			t.Fatalf("connect to a's gateway for %s: %v", c.Name(), err)
		}
		defer s.Close()
		sessions = append(sessions, s)
	}
	times := make([][]time.Duration, len(sessions))
	for i := range n + 10 {
		for j, s := range sessions {
			start := time.Now()
			if _, err := s.CallTool(ctx, &sdkmcp.CallToolParams{Name: "hello"}); err != nil {
				t.Fatalf("call %d to %s: %v", i, cs[j].Name(), err)
			}
			if i >= 10 { // the first ten warm up
				times[j] = append(times[j], time.Since(start))
			}
		}
	}
	d, rl := median(times[0]), median(times[1])
	t.Logf("figure: relay overhead, RTT %v, %d calls each, alternating, through A's HTTP gateway: direct %s, relayed %s; relayed/direct = %.2f (median %v more per call)",
		*rtt, n, spread(times[0]), spread(times[1]), float64(rl)/float64(d), (rl - d).Round(time.Microsecond))
	if st, ok, _ := status(a); ok {
		p1, _ := st.peer(cs[0].ID())
		p2, _ := st.peer(cs[1].ID())
		if p1.Relayed || !p2.Relayed {
			t.Errorf("the paths changed during the run: c1 relayed=%v, c2 relayed=%v", p1.Relayed, p2.Relayed)
		}
	}
}

// figurePartition: attempts times, A→B→C runs the slow tool, C's link is
// cut: how long until the root fails and C's handler is cancelled; then
// the link heals and a call must work again.
func figurePartition(t *testing.T, n int) {
	ch := newChain(t, Both)
	var root, leaf []time.Duration
	for i := range n {
		tag := fmt.Sprintf("p%d", i)
		res := ch.slowCall(t, tag)
		ch.cLink.Cut()
		cut := time.Now()
		select {
		case r := <-res:
			if r.OK() {
				t.Fatalf("attempt %d: the root call succeeded across a partition", i)
			}
			root = append(root, time.Since(cut))
		case <-time.After(60 * time.Second):
			t.Fatalf("attempt %d: the root call did not fail within 60 s", i)
		}
		waitFor(t, 60*time.Second, "c's handler is cancelled", func() (bool, string) { return hasMark(ch.marks, "cancelled "+tag) })
		leaf = append(leaf, time.Since(cut))
		ch.cLink.Heal()
		waitFor(t, 30*time.Second, "a call works after healing", func() (bool, string) {
			r := cli(ch.a, "call", ch.b.ID(), "slow/slow", `{"seconds":0,"tag":"heal"}`)
			return r.OK(), r.String()
		})
	}
	t.Logf("figure: partition of B–C under A→B→C, %d attempts: root fails after %s; C's handler cancelled after %s", n, spread(root), spread(leaf))
}

// internet is the figures' public segment, with cables of -netns.rtt.
func internet(lab *Lab) *LAN {
	inet := lab.LAN("inet", "16.0.0.0/24")
	if *rtt > 0 {
		inet.SetCable(Cable{Delay: *rtt / 4})
	}
	return inet
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// spread is "median M (min–max)" of d.
func spread(d []time.Duration) string {
	if len(d) == 0 {
		return "n/a"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	round := func(x time.Duration) time.Duration {
		if x > 10*time.Millisecond {
			return x.Round(time.Millisecond)
		}
		return x.Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("median %v (%v–%v)", round(s[len(s)/2]), round(s[0]), round(s[len(s)-1]))
}
