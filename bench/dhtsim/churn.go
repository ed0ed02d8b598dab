package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/discovery"
)

// Churn makes nodes restart while lookups run, each with its home: the
// same identity and address, the same tools to offer (so the same provider
// records to announce again), and an empty DHT (routing table, provider
// records, cards held for others).
type Churn struct {
	Rounds   int           // intervals of churn; 0: no churn phase
	Every    time.Duration // one interval; default 1 min
	Fraction float64       // of the nodes restarted in each interval, spread evenly over it; default 0.1
	Down     time.Duration // how long a restarting node stays away; default 1 s
	Pause    time.Duration // between two lookups; default 500 ms
}

func (c *Churn) setDefaults() {
	if c.Every <= 0 {
		c.Every = time.Minute
	}
	if c.Fraction <= 0 {
		c.Fraction = 0.1
	}
	if c.Down <= 0 {
		c.Down = time.Second
	}
	if c.Pause <= 0 {
		c.Pause = 500 * time.Millisecond
	}
}

// minQuietLookups is how many lookups the interval without restarts waits
// for, past its length if it must.
const minQuietLookups = 5

// churnState is where a node stands during the churn phase.
type churnState struct {
	up       bool
	busy     bool // in a lookup, as searcher or target: not restarted meanwhile
	ready    bool // its own records went out since it last started
	restarts int
	started  time.Time
	stored   map[discovery.Capability]time.Time // StoredAt of its records as last seen
}

// ChurnResult is what the churn phase measured.
type ChurnResult struct {
	P        Churn
	Restarts int
	Time     time.Duration // of the churn phase
	Lookups  []Lookup      // single-provider lookups of live providers during the churn
	Failed   []string      // what the lookups that found nothing looked for
	// QuietLookups are the same lookups during the interval without
	// restarts.
	QuietLookups []Lookup

	// Quiet is what every node's DHT server received during one interval
	// before the churn, without restarts (card republishing); Churned
	// during the churn.
	Quiet, Churned         counts
	QuietTime, ChurnedTime time.Duration
	// Walks counts the capabilities that nodes which did not restart in
	// the interval provided again with a DHT walk (their holders mostly
	// went away); Walked how many node-intervals that covers.
	Walks, Walked int
	// Holders is, at the end of each interval, how many of the K nodes
	// closest to each live provider's own tool hold its provider record.
	Holders []HolderCount
}

// HolderCount summarizes the holders of the live providers' records.
type HolderCount struct {
	Records   int     // live providers counted
	Mean      float64 // holders per record
	Min       int
	Zero      int // records that no node among the K closest holds
	Restarted int // nodes restarted so far
}

// churn runs the churn phase: restarts spread over each interval, lookups
// of live providers back to back, holders counted at each interval's end.
func (s *sim) churn() {
	c := s.p.Churn
	res := &ChurnResult{P: c}
	s.res.Churn = res
	now := time.Now()
	s.mu.Lock()
	for _, n := range s.nodes {
		n.churn = churnState{up: true, ready: true, started: now}
	}
	s.mu.Unlock()
	s.noteWalks(res) // what the setup stored

	// Lookups run from the start: the interval without restarts measures
	// them and the background traffic alone.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.watchReady(ctx)
	}()
	lookupsDone := make(chan struct{})
	go func() {
		defer close(lookupsDone)
		s.churnLookups(ctx, res)
	}()

	s.logf("churn: one interval (%v) without restarts, for the background traffic and lookups", c.Every)
	before := s.cnt.snapshot()
	start := time.Now()
	time.Sleep(c.Every)
	// A baseline needs a few lookups, however slow the machine.
	for range 10 * int(c.Every/c.Pause) {
		s.mu.Lock()
		n := len(res.Lookups)
		s.mu.Unlock()
		if n >= minQuietLookups {
			break
		}
		time.Sleep(c.Pause)
	}
	res.Quiet, res.QuietTime = s.cnt.snapshot().sub(before), time.Since(start)
	s.noteWalks(res)
	res.Walks, res.Walked = 0, 0
	res.Holders = append(res.Holders, s.countHolders())
	s.mu.Lock()
	res.QuietLookups, res.Lookups = res.Lookups, nil
	s.mu.Unlock()

	before, start = s.cnt.snapshot(), time.Now()
	perRound := max(1, int(math.Round(c.Fraction*float64(s.p.N))))
	gap := c.Every / time.Duration(perRound)
	var restarts sync.WaitGroup
	for round := 1; round <= c.Rounds; round++ {
		roundStart := time.Now()
		for k := range perRound {
			time.Sleep(time.Until(roundStart.Add(time.Duration(k) * gap)))
			n := s.pickRestart()
			if n == nil {
				continue
			}
			res.Restarts++
			restarts.Add(1)
			go func() {
				defer restarts.Done()
				if err := s.restart(n); err != nil {
					s.logf("churn: restart of node %d: %v", n.idx, err)
				}
			}()
		}
		time.Sleep(time.Until(roundStart.Add(c.Every)))
		s.noteWalks(res)
		h := s.countHolders()
		res.Holders = append(res.Holders, h)
		found := 0
		s.mu.Lock()
		for _, l := range res.Lookups {
			if l.First > 0 {
				found++
			}
		}
		done := len(res.Lookups)
		s.mu.Unlock()
		s.logf("churn: interval %d/%d: %d restarts so far; %d/%d lookups found; holders per live record %.1f (min %d, %d with none)",
			round, c.Rounds, res.Restarts, found, done, h.Mean, h.Min, h.Zero)
	}
	restarts.Wait()
	cancel()
	<-lookupsDone
	wg.Wait()
	res.Churned, res.ChurnedTime = s.cnt.snapshot().sub(before), time.Since(start)
	res.Time = time.Since(start)
}

// pickRestart chooses a node to restart: up, not in a lookup; nil if none.
func (s *sim) pickRestart() *simNode {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 100 {
		n := s.nodes[s.rng.IntN(len(s.nodes))]
		if n.churn.up && !n.churn.busy {
			n.churn.up, n.churn.ready = false, false
			return n
		}
	}
	return nil
}

// restart stops n (service, connection manager, host), takes it off the
// network for Down, and starts it again with the same identity and
// address and an empty DHT; it rejoins through Bootstrap random peers.
func (s *sim) restart(n *simNode) error {
	s.mu.Lock()
	svc, cm, h := n.svc, n.cm, n.h
	s.mu.Unlock()
	svc.Close()
	if cm != nil {
		cm.Close()
	}
	h.Close()
	for _, o := range s.nodes {
		if o != n {
			_ = s.mn.UnlinkPeers(n.id, o.id) // dials to it fail at once, as to a closed port
		}
	}
	time.Sleep(s.p.Churn.Down)
	h, err := s.mn.AddPeer(n.key, n.addr)
	if err != nil {
		return err
	}
	for _, o := range s.nodes {
		if o != n {
			if _, err := s.mn.LinkPeers(n.id, o.id); err != nil {
				return err
			}
		}
	}
	fresh := &simNode{idx: n.idx, id: n.id, key: n.key, addr: n.addr, h: h}
	if err := s.startService(fresh); err != nil {
		return err
	}
	var peers []lpeer.AddrInfo
	s.mu.Lock()
	n.h, n.cm, n.svc = fresh.h, fresh.cm, fresh.svc
	for _, j := range s.rng.Perm(len(s.nodes)) {
		if o := s.nodes[j]; o != n && o.churn.up && len(peers) < s.p.Bootstrap {
			peers = append(peers, lpeer.AddrInfo{ID: o.id, Addrs: []ma.Multiaddr{o.addr}})
		}
	}
	s.mu.Unlock()
	for _, info := range peers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := h.Connect(ctx, info); err != nil {
			s.logf("churn: node %d connecting to %s after restart: %v", n.idx, info.ID, err)
		}
		cancel()
	}
	fresh.svc.Start(n.build)
	s.mu.Lock()
	n.churn.up = true
	n.churn.restarts++
	n.churn.started = time.Now()
	n.churn.stored = nil
	s.mu.Unlock()
	return nil
}

// watchReady marks restarted nodes ready once their own tool's provider
// record was stored with a walk: from then on lookups expect to find them.
func (s *sim) watchReady(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		waiting := map[*simNode]*discovery.Service{}
		for _, n := range s.nodes {
			if n.churn.up && !n.churn.ready {
				waiting[n] = n.svc
			}
		}
		s.mu.Unlock()
		for n, svc := range waiting {
			solo := discovery.Capability{Kind: "tool", Name: soloName(n.idx)}
			for _, r := range svc.Records() {
				if r.Capability == solo && !r.StoredAt.IsZero() {
					s.mu.Lock()
					if n.svc == svc {
						n.churn.ready = true
					}
					s.mu.Unlock()
				}
			}
		}
	}
}

// churnLookups looks up live providers' own tools, one after the other,
// from random live nodes, until ctx ends.
func (s *sim) churnLookups(ctx context.Context, res *ChurnResult) {
	for ctx.Err() == nil {
		s.mu.Lock()
		var live []*simNode
		for _, n := range s.nodes {
			if n.churn.up && n.churn.ready && !n.churn.busy {
				live = append(live, n)
			}
		}
		if len(live) < 2 {
			s.mu.Unlock()
			time.Sleep(s.p.Churn.Pause)
			continue
		}
		t := live[s.rng.IntN(len(live))]
		from := live[s.rng.IntN(len(live))]
		for from == t {
			from = live[s.rng.IntN(len(live))]
		}
		t.churn.busy, from.churn.busy = true, true
		age := time.Since(t.churn.started)
		s.mu.Unlock()

		l := s.find(from, discovery.Capability{Kind: "tool", Name: soloName(t.idx)}, map[lpeer.ID]bool{t.id: true})

		s.mu.Lock()
		t.churn.busy, from.churn.busy = false, false
		res.Lookups = append(res.Lookups, l)
		if l.First == 0 {
			res.Failed = append(res.Failed, fmt.Sprintf("node %d's %s from node %d (provider up for %v, restarted %d times; lookup: %v)",
				t.idx, soloName(t.idx), from.idx, age.Round(time.Millisecond), t.churn.restarts, l.Err))
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(s.p.Churn.Pause):
		}
	}
}

// noteWalks counts the capabilities that nodes up for the whole interval
// stored again with a walk since the last call.
func (s *sim) noteWalks(res *ChurnResult) {
	s.mu.Lock()
	nodes := map[*simNode]*discovery.Service{}
	for _, n := range s.nodes {
		if n.churn.up {
			nodes[n] = n.svc
		}
	}
	s.mu.Unlock()
	for n, svc := range nodes {
		recs := svc.Records()
		s.mu.Lock()
		if n.svc != svc { // restarted meanwhile
			s.mu.Unlock()
			continue
		}
		if n.churn.stored != nil {
			res.Walked++
			for _, r := range recs {
				if last, ok := n.churn.stored[r.Capability]; ok && r.Capability.Kind != "" && r.StoredAt.After(last) {
					res.Walks++
				}
			}
		}
		n.churn.stored = map[discovery.Capability]time.Time{}
		for _, r := range recs {
			n.churn.stored[r.Capability] = r.StoredAt
		}
		s.mu.Unlock()
	}
}

// countHolders counts, for every live provider, how many of the K live
// nodes closest to its own tool's key hold its provider record.
func (s *sim) countHolders() HolderCount {
	s.mu.Lock()
	var live []*simNode
	var ids []lpeer.ID
	byID := map[lpeer.ID]*discovery.Service{}
	restarted := 0
	for _, n := range s.nodes {
		if n.churn.up {
			ids = append(ids, n.id)
			byID[n.id] = n.svc
			if n.churn.ready {
				live = append(live, n)
			}
		}
		if n.churn.restarts > 0 {
			restarted++
		}
	}
	s.mu.Unlock()
	const k = 20 // kad-dht's bucket size, which discovery keeps
	hc := HolderCount{Records: len(live), Min: math.MaxInt, Restarted: restarted}
	total := 0
	ctx := context.Background()
	for _, n := range live {
		key := discovery.Capability{Kind: "tool", Name: soloName(n.idx)}.CID().Hash()
		held := 0
		closest := kb.SortClosestPeers(slices.Clone(ids), kb.ConvertKey(string(key)))
		count := 0
		for _, id := range closest {
			if id == n.id {
				continue
			}
			if count++; count > k {
				break
			}
			provs, err := byID[id].DHT().ProviderStore().GetProviders(ctx, key)
			if err != nil {
				continue
			}
			for _, p := range provs {
				if p.ID == n.id {
					held++
					break
				}
			}
		}
		total += held
		hc.Min = min(hc.Min, held)
		if held == 0 {
			hc.Zero++
		}
	}
	if len(live) > 0 {
		hc.Mean = float64(total) / float64(len(live))
	} else {
		hc.Min = 0
	}
	return hc
}

// reportChurn prints what the churn phases measured.
func reportChurn(w io.Writer, rs []*Result) {
	churned := false
	for _, r := range rs {
		churned = churned || r.Churn != nil
	}
	if !churned {
		return
	}
	c := rs[0].P.Churn
	rtt := rs[0].P.RTT()
	fmt.Fprintf(w, "\nChurn: %.0f%% of the nodes restarting every %v (spread over it, each away for %v, back with the same identity, address and tools and an empty DHT), %d intervals; card period %v; lookups of live providers' own tools from random live nodes, one every %v:\n\n",
		100*c.Fraction, c.Every, c.Down, c.Rounds, rs[0].P.Discovery.RepublishEvery, c.Pause)
	fmt.Fprintln(w, "| N | phase | restarts | live providers found | first found p50 / p95 | Find returns p50 / p95 | holders of a live record among the K closest: mean (min) at the end | records held by none |")
	fmt.Fprintln(w, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		ch := r.Churn
		if ch == nil {
			continue
		}
		row := func(phase string, restarts int, ls []Lookup, h []HolderCount) {
			var first, complete []time.Duration
			found := 0
			for _, l := range ls {
				if l.First > 0 {
					found++
					first = append(first, l.First)
				}
				complete = append(complete, l.Complete)
			}
			last, zero := h[len(h)-1], 0
			for _, x := range h {
				zero = max(zero, x.Zero)
			}
			fmt.Fprintf(w, "| %d | %s | %d | %d/%d (%.1f%%) | %s / %s | %s / %s | %.1f (%d) | %d |\n", r.P.N, phase, restarts,
				found, len(ls), 100*float64(found)/float64(max(1, len(ls))),
				durRTT(pct(first, 50), rtt), durRTT(pct(first, 95), rtt), durRTT(pct(complete, 50), rtt), durRTT(pct(complete, 95), rtt),
				last.Mean, last.Min, zero)
		}
		row("quiet", 0, ch.QuietLookups, ch.Holders[:1])
		row("churn", ch.Restarts, ch.Lookups, ch.Holders[1:])
	}
	fmt.Fprintln(w, "\nDHT requests received per node per minute, without restarts (card republishing and the lookups) and during the churn; walks: capabilities provided again with a walk by nodes that did not restart, per node per minute:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| N | phase | GET_PROVIDERS | GET_VALUE | FIND_NODE | PUT_VALUE | ADD_PROVIDER | total | walks |")
	fmt.Fprintln(w, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		ch := r.Churn
		if ch == nil {
			continue
		}
		row := func(phase string, c counts, d time.Duration, walks string) {
			per := float64(r.P.N) * d.Minutes()
			fmt.Fprintf(w, "| %d | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %s |\n", r.P.N, phase,
				float64(c[msgGetProviders])/per, float64(c[msgGetValue])/per, float64(c[msgFindNode])/per,
				float64(c[msgPutValue])/per, float64(c[msgAddProvider])/per, float64(c.total())/per, walks)
		}
		row("quiet", ch.Quiet, ch.QuietTime, "–")
		walks := "–"
		if ch.Walked > 0 {
			walks = fmt.Sprintf("%.2f", float64(ch.Walks)/float64(ch.Walked)/c.Every.Minutes())
		}
		row("churn", ch.Churned, ch.ChurnedTime, walks)
	}
	for _, r := range rs {
		if r.Churn != nil && len(r.Churn.Failed) > 0 {
			fmt.Fprintf(w, "\nLookups that found nothing at N=%d:\n", r.P.N)
			for _, f := range r.Churn.Failed {
				fmt.Fprintf(w, "- %s\n", f)
			}
		}
	}
}
