package netns

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Scenario 2: two LANs joined only through B (on both). A finds C's tool
// through the DHT and calls it through a circuit relay on B: no
// --share-peer anywhere, and neither A nor C told about relays.
func TestTwoLANsJoinedThroughRelay(t *testing.T) {
	lab := newLab(t)
	lan1, lan2 := lab.LAN("lan1", "10.1.0.0/24"), lab.LAN("lan2", "10.2.0.0/24")
	hb, hc := lab.Host("b", lan1, lan2), lab.Host("c", lan2)
	// B's addresses are all private: AutoNAT cannot call it public, so
	// the bridge is told to relay.
	b := hb.Start("--relay-service", "on")
	share, _ := withTool(t, hc)
	c := hc.Start(share...)
	a := lab.Host("a", lan1).Start()

	waitFor(t, 20*time.Second, "c holds a relay reservation with b", func() (bool, string) {
		st, ok, why := status(c)
		return ok && st.hasRelay(b.ID()), why + fmt.Sprintf(" relays %v", st.Relays)
	})
	reserved := time.Now()
	took := waitFor(t, 20*time.Second, "a finds c's tool through the DHT", func() (bool, string) {
		r := cli(a, "find", "hello", "--timeout", "3s")
		return r.OK() && strings.Contains(r.Stdout, c.ID()), r.String()
	})
	t.Logf("a finds c's tool %v after c's reservation", took.Round(time.Millisecond))
	// C's circuit address reaches its card a moment after the
	// reservation (the host's addresses are updated, then the card
	// republished): calls may fail until then.
	waitFor(t, 20*time.Second, "a calls c through b", func() (bool, string) {
		r := cli(a, "call", c.ID(), "tool/hello")
		return r.OK() && strings.TrimSpace(r.Stdout) == "hello from c", r.String()
	})
	t.Logf("a's first successful call to c %v after c's reservation", time.Since(reserved).Round(time.Millisecond))
	st, ok, why := status(a)
	if !ok {
		t.Fatal(why)
	}
	p, ok := st.peer(c.ID())
	if !ok || !p.Relayed || p.Via != b.ID() {
		t.Fatalf("a's connection to c must be relayed by b; status says %+v (connected: %v)", p, ok)
	}
}

// natWorld is the "internet" (16.0.0.0/24, public-looking: AutoNAT
// ignores private and documentation ranges) with a relay R on it, C behind
// a NAT, and A public (aNAT nil) or behind a NAT of its own. Everyone
// knows R (--peer); nobody is told about relays.
type natWorld struct {
	lab     *Lab
	inet    *LAN
	r, a, c *Daemon
	marks   string // c's tool's marks
}

func newNATWorld(t *testing.T, aNAT *NATKind, cNAT NATKind, aArgs ...string) *natWorld {
	t.Helper()
	lab := newLab(t)
	w := &natWorld{lab: lab, inet: lab.LAN("inet", "16.0.0.0/24")}
	w.r = lab.Host("r", w.inet).Start("--relay-service", "on")
	rAddr := w.r.Addr(w.inet, QUIC)
	homeC := lab.NATLAN("home-c", "192.168.1.0/24", w.inet, cNAT)
	hc := lab.Host("c", homeC)
	share, marks := withTool(t, hc)
	w.marks = marks
	w.c = hc.Start(append(share, "--peer", rAddr)...)
	aLAN := w.inet
	if aNAT != nil {
		aLAN = lab.NATLAN("home-a", "192.168.2.0/24", w.inet, *aNAT)
	}
	w.a = lab.Host("a", aLAN).Start(append([]string{"--peer", rAddr}, aArgs...)...)
	waitFor(t, 30*time.Second, "c holds a relay reservation with r", func() (bool, string) {
		st, ok, why := status(w.c)
		return ok && st.hasRelay(w.r.ID()), why + fmt.Sprintf(" reachability %s (%s), relays %v", st.Reachability, st.DecidedBy, st.Relays)
	})
	return w
}

// firstCall finds C from A through the DHT and calls it until the first
// call succeeds; it returns how long that took.
func (w *natWorld) firstCall(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, 30*time.Second, "a calls c", func() (bool, string) {
		r := cli(w.a, "call", w.c.ID(), "tool/hello")
		return r.OK() && strings.TrimSpace(r.Stdout) == "hello from c", r.String()
	})
	return time.Since(start)
}

// waitDirect waits until A's connection to C is direct and returns how
// long that took.
func (w *natWorld) waitDirect(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	return waitFor(t, d, "a's connection to c turns direct", func() (bool, string) {
		st, ok, why := status(w.a)
		p, conn := st.peer(w.c.ID())
		return ok && conn && !p.Relayed, fmt.Sprintf("%s %+v", why, p)
	})
}

// Scenario 3: a node behind a NAT, called from outside.
func TestNATedNodeCalledFromOutside(t *testing.T) {
	// A public, C behind a home router: the call works, the connection
	// ends direct, and after A restarts C is reachable at once through its
	// reservation (before, only once C republished its card, 60 s later).
	t.Run("A public, C behind NAT; A restarts", func(t *testing.T) {
		w := newNATWorld(t, nil, PortPreserving)
		t.Logf("first call to c: %v", w.firstCall(t).Round(time.Millisecond))
		t.Logf("direct after %v more", w.waitDirect(t, 20*time.Second).Round(time.Millisecond))

		w.a.Restart()
		start := time.Now()
		r := cli(w.a, "call", w.c.ID(), "tool/hello")
		if !r.OK() {
			t.Fatalf("right after a restarted, c must be reachable (through its relay): %v", r)
		}
		if took := time.Since(start); took > 15*time.Second {
			t.Fatalf("the first call after a's restart took %v (c's card is republished every 60 s: that must not be what it waits for)", took)
		}
		t.Logf("first call after a's restart: %v", time.Since(start).Round(time.Millisecond))
	})

	// A and C each behind a port-preserving NAT: neither can dial the
	// other, so the first connection is relayed by R; DCUtR then punches a
	// hole and the connection turns direct.
	t.Run("both behind port-preserving NATs: relayed, then direct", func(t *testing.T) {
		pp := PortPreserving
		w := newNATWorld(t, &pp, PortPreserving)
		t.Logf("first call to c (relayed): %v", w.firstCall(t).Round(time.Millisecond))
		t.Logf("direct after %v more", w.waitDirect(t, 30*time.Second).Round(time.Millisecond))
		st, _, _ := status(w.a)
		p, _ := st.peer(w.c.ID())
		t.Logf("a → c now over %s at %s", p.Transport, p.Addr)
		r := cli(w.a, "call", w.c.ID(), "tool/hello")
		if !r.OK() {
			t.Fatalf("call over the direct connection: %v", r)
		}
	})

	// Both behind symmetric NATs: no hole can be punched; the connection
	// stays relayed and calls keep working.
	t.Run("both behind symmetric NATs: stays relayed, calls work", func(t *testing.T) {
		sym := Symmetric
		w := newNATWorld(t, &sym, Symmetric)
		t.Logf("first call to c (relayed): %v", w.firstCall(t).Round(time.Millisecond))
		// DCUtR makes its attempts within seconds; give it ten.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			st, ok, why := status(w.a)
			if !ok {
				t.Fatal(why)
			}
			p, conn := st.peer(w.c.ID())
			if conn && !p.Relayed {
				t.Fatalf("a direct connection through two symmetric NATs? %+v", p)
			}
			time.Sleep(time.Second)
		}
		for i := range 3 {
			r := cli(w.a, "call", w.c.ID(), "tool/hello")
			if !r.OK() {
				t.Fatalf("call %d over the relay: %v", i, r)
			}
		}
	})
}

// chain is A→B→C across two LANs: B re-shares C's tool server
// (--share-peer), so a call from A to B's "slow" runs C's slow tool.
type chain struct {
	lab     *Lab
	a, b, c *Daemon
	cLink   *Link // C's link to its LAN
	marks   string
}

func newChain(t *testing.T, tr Transport) *chain {
	t.Helper()
	lab := newLab(t)
	lan1, lan2 := lab.LAN("lan1", "10.1.0.0/24"), lab.LAN("lan2", "10.2.0.0/24")
	ha, hb, hc := lab.Host("a", lan1), lab.Host("b", lan1, lan2), lab.Host("c", lan2)
	share, marks := withTool(t, hc)
	c := hc.Start(append(Listen(tr), share...)...)
	b := hb.Start(append(Listen(tr), "--share-peer", "slow="+c.Addr(lan2, tr)+"/tool")...)
	a := ha.Start(append(Listen(tr), "--peer", b.Addr(lan1, tr))...)
	return &chain{lab: lab, a: a, b: b, c: c, cLink: hc.Link(lan2), marks: marks}
}

// slowCall starts A's call of the slow tool through B and waits until C's
// tool has started it.
func (ch *chain) slowCall(t *testing.T, tag string) <-chan Result {
	t.Helper()
	// A short call first: the sessions A→B→C exist before the long one.
	if r := cli(ch.a, "call", ch.b.ID(), "slow/slow", `{"seconds":0,"tag":"warm-`+tag+`"}`); !r.OK() {
		t.Fatalf("warm-up call: %v", r)
	}
	res := callAsync(ch.a, 90*time.Second, "call", ch.b.ID(), "slow/slow", fmt.Sprintf(`{"seconds":60,"tag":%q}`, tag))
	waitFor(t, 15*time.Second, "c's tool starts the slow call", func() (bool, string) {
		return hasMark(ch.marks, "started "+tag)
	})
	return res
}

// failsWithin waits for the root call's result: it must be a failure
// naming lost, within d.
func failsWithin(t *testing.T, res <-chan Result, d time.Duration, lost *Daemon) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case r := <-res:
		took := time.Since(start)
		if r.OK() {
			t.Fatalf("the root call succeeded: %v", r)
		}
		if !names(r.Stderr+r.Stdout, lost.ID()) {
			t.Errorf("the root call's error must name the lost hop %s (%s): %v", lost.Name(), lost.ID(), r)
		}
		t.Logf("root failed after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(r.Stderr))
		return took
	case <-time.After(d):
		t.Fatalf("the root call has not failed %v after %s was lost", d, lost.Name())
	}
	return 0
}

// leafCancelled waits until C's tool says the call was cancelled, and
// returns how long after since that was; C's task list must say so too.
func (ch *chain) leafCancelled(t *testing.T, tag string, d time.Duration, since time.Time) time.Duration {
	t.Helper()
	waitFor(t, d, "c's handler is cancelled", func() (bool, string) {
		return hasMark(ch.marks, "cancelled "+tag)
	})
	took := time.Since(since)
	waitFor(t, 5*time.Second, "c's tasks show the slow call cancelled", func() (bool, string) {
		r := cli(ch.c, "tasks", "--json")
		var list []struct {
			Server, Tool, State string
			Started             time.Time
		}
		if err := json.Unmarshal([]byte(r.Stdout), &list); err != nil || len(list) == 0 {
			return false, r.String()
		}
		last := list[0]
		for _, tk := range list {
			if tk.Tool == "slow" && tk.Started.After(last.Started) {
				last = tk
			}
		}
		return last.Tool == "slow" && last.State == "cancelled", fmt.Sprintf("latest slow task: %+v", last)
	})
	return took
}

// Scenario 4: a silent partition of B–C while A→B→C runs a slow tool. The
// root fails within seconds naming C, C's handler is cancelled, and once
// the link heals the next call works, without restarting anything.
func TestPartitionMidCall(t *testing.T) {
	ch := newChain(t, Both)
	res := ch.slowCall(t, "long")

	ch.cLink.Cut()
	cut := time.Now()
	took := failsWithin(t, res, 15*time.Second, ch.c)
	if took > 10*time.Second {
		t.Errorf("the root learned of the partition after %v: want a few seconds", took)
	}
	leaf := ch.leafCancelled(t, "long", 15*time.Second, cut)
	t.Logf("partition seen by the root after %v; c's handler cancelled %v after the cut", took.Round(time.Millisecond), leaf.Round(time.Millisecond))

	ch.cLink.Heal()
	r := cli(ch.a, "call", ch.b.ID(), "slow/slow", `{"seconds":0,"tag":"after"}`)
	if !r.OK() {
		t.Fatalf("the first call after healing: %v", r)
	}
}

// Scenario 5: kill -9 of the middle node B, over QUIC and over TCP (each
// listening on that transport only): the root fails within seconds naming
// B, and C's handler is cancelled.
func TestMiddleNodeKilled(t *testing.T) {
	for _, tr := range []Transport{QUIC, TCP} {
		t.Run(tr.String(), func(t *testing.T) {
			ch := newChain(t, tr)
			res := ch.slowCall(t, "long")
			killed := time.Now()
			ch.b.Kill()
			took := failsWithin(t, res, 15*time.Second, ch.b)
			if took > 10*time.Second {
				t.Errorf("the root learned of b's death after %v over %s: want a few seconds", took, tr)
			}
			leaf := ch.leafCancelled(t, "long", 15*time.Second, killed)
			t.Logf("over %s: root failed after %v, c's handler cancelled after %v", tr, took.Round(time.Millisecond), leaf.Round(time.Millisecond))
		})
	}
}
