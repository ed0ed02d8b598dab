package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

// Params describe one simulated mesh and what is measured on it.
type Params struct {
	N         int           // nodes
	Bootstrap int           // random peers each node connects to at start
	Latency   time.Duration // one-way latency of every mocknet link
	Popular   int           // popular tool names; each is offered by N/Popular nodes

	// ConnLow and ConnHigh are the watermarks of every node's connection
	// manager (libp2p's defaults, which node.New keeps, are 160 and 192);
	// ConnHigh 0: no connection manager, connections are never closed.
	// ConnGrace protects new connections from trimming.
	ConnLow, ConnHigh int
	ConnGrace         time.Duration

	// RefreshRounds is how many times every routing table is refreshed
	// (ForceRefresh) after the bootstrap connections. Default 2; -1: none
	// (the DHT refreshes on its own as it meets peers).
	RefreshRounds int
	// Settle is how long the mesh idles after setup before its memory is
	// measured: kad-dht closes streams idle for a minute, and the
	// connection manager trims connections older than ConnGrace. Default
	// ConnGrace + 5 s; -1: measure at once.
	Settle time.Duration
	// Quiet is how long no card or provider record may arrive before the
	// publishing is taken as done; Idle how long background traffic is
	// counted. Default 2 s each.
	Quiet, Idle time.Duration

	Lookups       int // single-provider lookups, one after the other
	PopularFinds  int // lookups of popular tools
	Fresh         int // new tools published, each timed until findable
	LookupTimeout time.Duration
	Seed          uint64

	// Discovery is the config of every node's discovery.Service. Cards
	// must outlive the run: nothing should expire while it is measured.
	Discovery discovery.Config

	// Churn restarts nodes after the other measurements (none by default).
	Churn Churn

	Progress io.Writer // progress lines; nil for none
}

func (p *Params) setDefaults() {
	if p.Bootstrap <= 0 {
		p.Bootstrap = 3
	}
	if p.Latency <= 0 {
		p.Latency = 10 * time.Millisecond
	}
	if p.Popular <= 0 {
		p.Popular = 10
	}
	if p.RefreshRounds == 0 {
		p.RefreshRounds = 2
	}
	if p.Quiet <= 0 {
		p.Quiet = 2 * time.Second
	}
	if p.Idle <= 0 {
		p.Idle = 2 * time.Second
	}
	if p.ConnGrace <= 0 {
		p.ConnGrace = time.Minute
	}
	if p.Settle == 0 {
		p.Settle = p.ConnGrace + 5*time.Second
	}
	if p.LookupTimeout <= 0 {
		p.LookupTimeout = 20 * time.Second
	}
	if p.Discovery.CardTTL <= 0 {
		p.Discovery.CardTTL = time.Hour
	}
	if p.Discovery.RepublishEvery <= 0 {
		p.Discovery.RepublishEvery = p.Discovery.CardTTL / 3
	}
	if p.Progress == nil {
		p.Progress = io.Discard
	}
	p.Churn.setDefaults()
}

// RTT is one request and its answer over one link.
func (p *Params) RTT() time.Duration { return 2 * p.Latency }

// Lookup is one timed Find.
type Lookup struct {
	First    time.Duration // until the first wanted provider was found (card verified); 0: not found
	Complete time.Duration // until Find returned
	Found    int           // providers found (verified cards listing the tool)
	Want     int           // providers that offer it
	Msgs     counts        // DHT requests received by every node during the lookup
	Sent     int           // requests the searcher reported sending (routing query events)
	Err      error
}

// Result is what one size measured.
type Result struct {
	P Params

	BuildTime, BootstrapTime, PublishTime, ShutdownTime time.Duration
	SetupCPU                                            time.Duration // CPU time of the whole setup (2 cores: wall×2 at most)
	RTMin, RTMedian, RTMax                              int           // routing table sizes after setup

	// HeapInuse and StackInuse (goroutine stacks, not in the heap) after a
	// GC, before anything and with the hosts and links only.
	HeapBase, StackBase, HeapMocknet uint64
	// Setup is measured as soon as every card is published; Mem once the
	// connection managers could trim (the same as Setup if they need not).
	Setup, Mem     Snapshot
	GoroutinesLeft int // after shutdown, minus before
	PublishRetries int // cards built again during setup: their first publish failed
	// LoadAvg is the machine's 1-minute load average as the lookups begin
	// and end (-1: unknown). Other processes' load slows the lookups too.
	LoadAvg        [2]float64
	IdleMsgsPerSec float64

	Single  []Lookup
	Popular []Lookup
	Fresh   []time.Duration // -1: not findable in time
	Churn   *ChurnResult    // nil without a churn phase
}

// Snapshot is the cost of the mesh at one moment.
type Snapshot struct {
	Heap, Stack uint64  // HeapInuse, StackInuse after GC
	Goroutines  int     // minus those before the mesh
	Conns       float64 // connections per node
	MaxConns    int     // of the most connected node
}

func (s *sim) measure(m *Snapshot, gBefore int, what string) {
	conns := 0
	m.MaxConns = 0
	for _, n := range s.nodes {
		c := len(n.h.Network().Conns())
		conns += c
		m.MaxConns = max(m.MaxConns, c)
	}
	m.Conns = float64(conns) / float64(s.p.N)
	m.Heap, m.Stack = memInuse()
	m.Goroutines = runtime.NumGoroutine() - gBefore
	n := float64(s.p.N)
	s.logf("%s: heap %.0f MB (%.2f MB/node), stacks %.0f MB (%.2f MB/node), %d goroutines (%.0f/node), %.1f connections per node (max %d)", what,
		mb(m.Heap-s.res.HeapBase), mb(m.Heap-s.res.HeapBase)/n, mb(m.Stack-s.res.StackBase), mb(m.Stack-s.res.StackBase)/n,
		m.Goroutines, float64(m.Goroutines)/n, m.Conns, m.MaxConns)
}

type simNode struct {
	idx   int
	id    lpeer.ID
	key   crypto.PrivKey
	addr  ma.Multiaddr
	h     host.Host
	cm    *connmgr.BasicConnMgr
	svc   *discovery.Service
	mu    sync.Mutex
	more  []string   // tools added during the run
	churn churnState // guarded by sim.mu; see churn.go
	// builds counts the cards built: one per publish attempt, so more
	// than one before anything changed means a publish failed.
	builds atomic.Int64
	pop    string
}

func soloName(i int) string { return fmt.Sprintf("solo-%d", i) }

func (n *simNode) build(context.Context) (*cardpb.Card, error) {
	n.builds.Add(1)
	n.mu.Lock()
	more := slices.Clone(n.more)
	n.mu.Unlock()
	srv := &cardpb.Server{Name: "sim", ToolsHash: make([]byte, 32)}
	srv.Tools = append(srv.Tools,
		&cardpb.Tool{Name: soloName(n.idx), Description: "Offered by this node only."},
		&cardpb.Tool{Name: n.pop, Description: "Offered by many nodes."},
	)
	for _, t := range more {
		srv.Tools = append(srv.Tools, &cardpb.Tool{Name: t, Description: "Added during the run."})
	}
	card := &cardpb.Card{Name: fmt.Sprintf("node-%d", n.idx), Version: "dhtsim", Servers: []*cardpb.Server{srv}}
	for _, a := range n.h.Addrs() {
		card.Addrs = append(card.Addrs, a.Bytes())
	}
	return card, nil
}

type sim struct {
	mu    sync.Mutex // the nodes' churn states, and their hosts and services during the churn
	p     Params
	rng   *mrand.Rand
	mn    mocknet.Mocknet
	nodes []*simNode
	cnt   *counter
	res   *Result
	start time.Time
}

func (s *sim) logf(format string, args ...any) {
	fmt.Fprintf(s.p.Progress, "[N=%d %5.1fs] "+format+"\n", append([]any{s.p.N, time.Since(s.start).Seconds()}, args...)...)
}

// Run builds a mesh of p.N nodes, measures it and shuts it down.
func Run(p Params) (*Result, error) {
	p.setDefaults()
	if p.N < 3 {
		return nil, fmt.Errorf("need at least 3 nodes, not %d", p.N)
	}
	s := &sim{p: p, rng: mrand.New(mrand.NewPCG(p.Seed, uint64(p.N))), cnt: &counter{}, res: &Result{P: p}, start: time.Now()}
	gBefore := runtime.NumGoroutine()
	s.res.HeapBase, s.res.StackBase = memInuse()
	err := s.run()
	t := time.Now()
	s.shutdown()
	s.res.ShutdownTime = time.Since(t)
	// Let closed streams' goroutines finish before counting what is left.
	for range 50 {
		if runtime.NumGoroutine()-gBefore < 5 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.res.GoroutinesLeft = runtime.NumGoroutine() - gBefore
	s.logf("shut down in %v; %d goroutines left over", s.res.ShutdownTime.Round(time.Millisecond), s.res.GoroutinesLeft)
	return s.res, err
}

func (s *sim) run() error {
	p := s.p
	cpu0 := cpuTime()
	gBefore := runtime.NumGoroutine()

	t := time.Now()
	if err := s.build(); err != nil {
		return err
	}
	s.res.BuildTime = time.Since(t)

	t = time.Now()
	if err := s.bootstrap(); err != nil {
		return err
	}
	s.res.BootstrapTime = time.Since(t)

	t = time.Now()
	if err := s.publish(); err != nil {
		return err
	}
	s.res.PublishTime = time.Since(t)
	s.res.SetupCPU = cpuTime() - cpu0

	s.measure(&s.res.Setup, gBefore, "setup done")
	// Right after the publishing storm the mesh holds what it no longer
	// needs: DHT streams that the serving side closes after a minute idle,
	// and connections too young for the connection manager to trim.
	if p.Settle > 0 {
		s.logf("waiting %v for idle streams to close and connections to be trimmed", p.Settle)
		time.Sleep(p.Settle)
		for _, n := range s.nodes {
			if n.cm != nil {
				n.cm.TrimOpenConns(context.Background())
			}
		}
		s.measure(&s.res.Mem, gBefore, "settled")
	} else {
		s.res.Mem = s.res.Setup
	}

	// Background traffic, to know how much of a lookup's count is noise.
	c0 := s.cnt.snapshot()
	time.Sleep(p.Idle)
	s.res.IdleMsgsPerSec = float64(s.cnt.snapshot().sub(c0).total()) / p.Idle.Seconds()

	s.res.LoadAvg[0] = loadAvg()
	s.lookups()
	s.popular()
	s.fresh()
	if p.Churn.Rounds > 0 {
		s.churn()
	}
	s.res.LoadAvg[1] = loadAvg()
	return nil
}

// build creates the hosts, links every pair (so that any node can dial any
// other, like on an internet) and starts every node's discovery service.
func (s *sim) build() error {
	p := s.p
	s.mn = mocknet.New()
	s.mn.SetLinkDefaults(mocknet.LinkOptions{Latency: p.Latency})
	s.nodes = make([]*simNode, p.N)
	for i := range s.nodes {
		key, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return err
		}
		// A blackholed IPv6 address per node, as mocknet's GenPeer does.
		ip := net.ParseIP("100::").To16()
		ip[13], ip[14], ip[15] = byte(i>>16), byte(i>>8), byte(i)
		addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip6/%s/tcp/4001", ip))
		if err != nil {
			return err
		}
		h, err := s.mn.AddPeer(key, addr)
		if err != nil {
			return err
		}
		s.nodes[i] = &simNode{idx: i, id: h.ID(), key: key, addr: addr, h: h, pop: fmt.Sprintf("pop-%d", i%p.Popular)}
	}
	for i := range s.nodes {
		for j := i + 1; j < len(s.nodes); j++ {
			if _, err := s.mn.LinkPeers(s.nodes[i].h.ID(), s.nodes[j].h.ID()); err != nil {
				return err
			}
		}
		if (i+1)%100 == 0 {
			s.logf("linking %d/%d", i+1, p.N)
		}
	}
	s.res.HeapMocknet, _ = memInuse()
	s.logf("%d hosts, %d links: heap %.0f MB", p.N, p.N*(p.N-1)/2, mb(s.res.HeapMocknet-s.res.HeapBase))
	for i, n := range s.nodes {
		if err := s.startService(n); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		if (i+1)%100 == 0 || i+1 == p.N {
			s.logf("building %d nodes… %d/%d", p.N, i+1, p.N)
		}
	}
	return nil
}

// startService gives n's host a connection manager (if the mesh has them)
// and starts its discovery service, not yet publishing.
func (s *sim) startService(n *simNode) error {
	p := s.p
	ch := &countingHost{Host: n.h, c: s.cnt}
	if p.ConnHigh > 0 {
		cm, err := connmgr.NewConnManager(p.ConnLow, p.ConnHigh, connmgr.WithGracePeriod(p.ConnGrace))
		if err != nil {
			return err
		}
		n.h.Network().Notify(cm.Notifee())
		n.cm, ch.cm = cm, cm
	}
	svc, err := discovery.New(ch, n.key, p.Discovery)
	if err != nil {
		return err
	}
	n.svc = svc
	return nil
}

// bootstrap connects each node to a few random others, then refreshes every
// routing table (by default twice: the second round finds the peers that
// joined the first one late).
func (s *sim) bootstrap() error {
	p := s.p
	ctx := context.Background()
	// Connect waits for identify (a round trip): dial many at once.
	peers := make([][]int, p.N)
	for i := range peers {
		for _, j := range s.rng.Perm(p.N)[:p.Bootstrap+1] {
			if j != i && len(peers[i]) < p.Bootstrap {
				peers[i] = append(peers[i], j)
			}
		}
	}
	var mu sync.Mutex
	var errs []error
	forEach(s.nodes, 64, func(n *simNode) {
		for _, j := range peers[n.idx] {
			o := s.nodes[j].h
			if err := n.h.Connect(ctx, lpeer.AddrInfo{ID: o.ID(), Addrs: o.Addrs()}); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("connect %d to %d: %w", n.idx, j, err))
				mu.Unlock()
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.logf("connected each node to %d random others", p.Bootstrap)
	// Wait for identify to put the first peers in the routing tables.
	waitUntil(5*time.Second, func() bool {
		for _, n := range s.nodes {
			if n.svc.DHT().RoutingTable().Size() == 0 {
				return false
			}
		}
		return true
	})
	for round := 1; round <= p.RefreshRounds; round++ {
		var done atomic.Int64
		forEach(s.nodes, 64, func(n *simNode) {
			<-n.svc.DHT().ForceRefresh()
			if d := done.Add(1); d%100 == 0 || int(d) == p.N {
				s.logf("routing table refresh, round %d: %d/%d", round, d, p.N)
			}
		})
	}
	sizes := make([]int, p.N)
	conns := 0
	for i, n := range s.nodes {
		sizes[i] = n.svc.DHT().RoutingTable().Size()
		conns += len(n.h.Network().Conns())
	}
	slices.Sort(sizes)
	s.res.RTMin, s.res.RTMedian, s.res.RTMax = sizes[0], sizes[p.N/2], sizes[p.N-1]
	s.logf("routing tables: min %d, median %d, max %d peers; %.1f connections per node", s.res.RTMin, s.res.RTMedian, s.res.RTMax, float64(conns)/float64(p.N))
	return nil
}

// record is a provider record that publishing must store: provider's
// record for key, on at least one of the nodes closest to key.
type record struct {
	key      []byte // the capability's multihash: the DHT key
	provider lpeer.ID
	closest  []*simNode
	stored   bool
}

// records lists the provider records of every node's card, each with the
// bucket-size nodes closest to its key (but the provider, which stores its
// own records locally).
func (s *sim) records() []*record {
	ids := make([]lpeer.ID, len(s.nodes))
	byID := map[lpeer.ID]*simNode{}
	for i, n := range s.nodes {
		ids[i] = n.h.ID()
		byID[ids[i]] = n
	}
	k := s.nodes[0].svc.DHT().BucketSize()
	var out []*record
	for _, n := range s.nodes {
		for _, name := range []string{soloName(n.idx), n.pop} {
			key := discovery.Capability{Kind: "tool", Name: name}.CID().Hash()
			r := &record{key: key, provider: n.h.ID()}
			for _, id := range kb.SortClosestPeers(slices.Clone(ids), kb.ConvertKey(string(key))) {
				if id != n.h.ID() && len(r.closest) < k {
					r.closest = append(r.closest, byID[id])
				}
			}
			out = append(out, r)
		}
	}
	return out
}

// check reports whether r is in the provider store of one of the nodes
// closest to its key, as a lookup would find it.
func (r *record) check(ctx context.Context) bool {
	if r.stored {
		return true
	}
	for _, n := range r.closest {
		provs, err := n.svc.DHT().ProviderStore().GetProviders(ctx, r.key)
		if err != nil {
			continue
		}
		for _, p := range provs {
			if p.ID == r.provider {
				r.stored = true
				return true
			}
		}
	}
	return false
}

// publish starts every service and waits until every node's provider
// records are stored where lookups look (the card is stored before them),
// and no card or provider record has arrived anywhere for a while.
func (s *sim) publish() error {
	ctx := context.Background()
	recs := s.records()
	for _, n := range s.nodes {
		n.svc.Start(n.build)
	}
	last, stable, begin := s.cnt.snapshot(), time.Now(), time.Now()
	// With a short card period (the churn's) republishing never lets the
	// counters rest: every record stored for a whole period plus the quiet
	// time is settled too.
	var allStored time.Time
	settled := s.p.Quiet
	if ttl := s.p.Discovery.CardTTL; ttl > 0 {
		settled += ttl / 3
	}
	for {
		time.Sleep(250 * time.Millisecond)
		missing := 0
		for _, r := range recs {
			if !r.check(ctx) {
				missing++
			}
		}
		now := s.cnt.snapshot()
		if now[msgPutValue] != last[msgPutValue] || now[msgAddProvider] != last[msgAddProvider] || missing > 0 {
			last, stable = now, time.Now()
		}
		switch {
		case missing > 0:
			allStored = time.Time{}
		case allStored.IsZero():
			allStored = time.Now()
		}
		if time.Since(stable) > s.p.Quiet || (!allStored.IsZero() && time.Since(allStored) > settled) {
			s.res.PublishRetries = 0
			for _, n := range s.nodes {
				s.res.PublishRetries += int(n.builds.Load()) - 1
			}
			s.logf("published: %d provider records stored, %d PUT_VALUE and %d ADD_PROVIDER requests received; %d publish attempts retried",
				len(recs), now[msgPutValue], now[msgAddProvider], s.res.PublishRetries)
			return nil
		}
		if time.Since(begin) > 5*time.Minute {
			return fmt.Errorf("%d of %d provider records not stored after five minutes", missing, len(recs))
		}
	}
}

// find runs one Find from node from for c and measures it. want is the
// provider whose finding is timed (nil: the first one found).
func (s *sim) find(from *simNode, c discovery.Capability, want map[lpeer.ID]bool) Lookup {
	var l Lookup
	l.Want = len(want)
	ctx, cancel := context.WithTimeout(context.Background(), s.p.LookupTimeout)
	ctx, events := routing.RegisterForQueryEvents(ctx)
	sent := make(chan int)
	go func() {
		n := 0
		for ev := range events {
			if ev.Type == routing.SendingQuery {
				n++
			}
		}
		sent <- n
	}()
	before := s.cnt.snapshot()
	start := time.Now()
	l.Err = from.svc.Find(ctx, c, func(f discovery.Found) {
		if !want[f.Card.Peer] || len(f.Matches) == 0 {
			return
		}
		l.Found++
		if l.First == 0 {
			l.First = time.Since(start)
		}
	})
	l.Complete = time.Since(start)
	cancel()
	l.Sent = <-sent
	// Answers in flight and the fixes GetValue sends after a lookup (the
	// newest card to peers that had none) land within a few link delays.
	time.Sleep(3 * s.p.Latency)
	l.Msgs = s.cnt.snapshot().sub(before)
	return l
}

func (s *sim) other(i int) int {
	j := s.rng.IntN(s.p.N - 1)
	if j >= i {
		j++
	}
	return j
}

func (s *sim) lookups() {
	for k := range s.p.Lookups {
		t := s.rng.IntN(s.p.N)
		from := s.nodes[s.other(t)]
		l := s.find(from, discovery.Capability{Kind: "tool", Name: soloName(t)}, map[lpeer.ID]bool{s.nodes[t].h.ID(): true})
		s.res.Single = append(s.res.Single, l)
		if (k+1)%20 == 0 || k+1 == s.p.Lookups {
			ok := 0
			for _, l := range s.res.Single {
				if l.First > 0 {
					ok++
				}
			}
			s.logf("single-provider lookups: %d/%d, %d found", k+1, s.p.Lookups, ok)
		}
	}
}

func (s *sim) popular() {
	for k := range s.p.PopularFinds {
		name := fmt.Sprintf("pop-%d", k%s.p.Popular)
		want := map[lpeer.ID]bool{}
		for _, n := range s.nodes {
			if n.pop == name {
				want[n.h.ID()] = true
			}
		}
		from := s.nodes[s.rng.IntN(s.p.N)]
		l := s.find(from, discovery.Capability{Kind: "tool", Name: name}, want)
		s.res.Popular = append(s.res.Popular, l)
		s.logf("popular lookup %d/%d: %s, %d of %d providers in %v (first after %v), %d requests",
			k+1, s.p.PopularFinds, name, l.Found, l.Want, l.Complete.Round(time.Millisecond), l.First.Round(time.Millisecond), l.Msgs.total())
	}
}

// fresh makes a node offer a new tool and polls from another node until a
// Find returns it: a new Find every 100 ms, each running to its end.
func (s *sim) fresh() {
	for k := range s.p.Fresh {
		t := s.rng.IntN(s.p.N)
		n := s.nodes[t]
		from := s.nodes[s.other(t)]
		name := fmt.Sprintf("fresh-%d-%d", t, k)
		c := discovery.Capability{Kind: "tool", Name: name}

		n.mu.Lock()
		n.more = append(n.more, name)
		n.mu.Unlock()
		start := time.Now()
		n.svc.Changed()

		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var (
			once  sync.Once
			found = make(chan time.Duration, 1)
			wg    sync.WaitGroup
		)
		tick := time.NewTicker(100 * time.Millisecond)
	poll:
		for {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
				defer fcancel()
				_ = from.svc.Find(fctx, c, func(f discovery.Found) {
					if f.Card.Peer == n.h.ID() && len(f.Matches) > 0 {
						once.Do(func() { found <- time.Since(start) })
					}
				})
			}()
			select {
			case <-tick.C:
			case <-ctx.Done():
				break poll
			case d := <-found:
				s.res.Fresh = append(s.res.Fresh, d)
				s.logf("new tool %d/%d findable after %v", k+1, s.p.Fresh, d.Round(time.Millisecond))
				break poll
			}
		}
		tick.Stop()
		if ctx.Err() != nil {
			s.res.Fresh = append(s.res.Fresh, -1)
			s.logf("new tool %d/%d not findable within a minute", k+1, s.p.Fresh)
		}
		cancel()
		wg.Wait()
	}
}

func (s *sim) shutdown() {
	if s.mn == nil {
		return
	}
	forEach(s.nodes, 64, func(n *simNode) {
		if n.svc != nil {
			n.svc.Close()
		}
	})
	forEach(s.nodes, 64, func(n *simNode) {
		if n.cm != nil {
			n.cm.Close()
		}
		n.h.Close()
	})
	s.mn.Close()
	s.nodes = nil
}

// forEach runs f on every node, at most par at a time.
func forEach(nodes []*simNode, par int, f func(*simNode)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, par)
	for _, n := range nodes {
		if n == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(n)
		}()
	}
	wg.Wait()
}

func waitUntil(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// memInuse returns HeapInuse and StackInuse after a full GC.
func memInuse() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.StackInuse
}

// loadAvg returns the 1-minute load average, or -1 where it is unknown.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var l float64
	if _, err := fmt.Sscan(string(b), &l); err != nil {
		return -1
	}
	return l
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }
