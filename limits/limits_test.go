package limits

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// clock is a hand-moved clock for the limiter.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLimiter(t *testing.T, cfg Config) (*Limiter, *clock) {
	t.Helper()
	l := New(cfg, test.RandPeerIDFatal(t))
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l.now = c.now
	return l, c
}

func refusal(t *testing.T, err error, reason string) *Refusal {
	t.Helper()
	r, ok := IsRefusal(err)
	if !ok {
		t.Fatalf("got %v, want a %s refusal", err, reason)
	}
	if r.Reason != reason {
		t.Fatalf("refused for %q (%v), want %q", r.Reason, r, reason)
	}
	return r
}

func TestConcurrencyLimitRefusesOneTooManyAndAdmitsAfterRelease(t *testing.T) {
	l, _ := newLimiter(t, Config{MaxConcurrentPerPeer: 3, Rate: -1})
	p, other := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	var releases []func()
	for i := range 3 {
		release, err := l.Admit(p)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		releases = append(releases, release)
	}
	_, err := l.Admit(p)
	r := refusal(t, err, ReasonConcurrency)
	if !strings.Contains(r.Error(), "too many concurrent calls from "+p.String()) || !strings.Contains(r.Error(), "3 in flight") {
		t.Errorf("message %q", r.Error())
	}
	if release, err := l.Admit(other); err != nil {
		t.Errorf("another peer refused: %v", err)
	} else {
		release()
	}

	releases[0]()
	releases[0]() // a second release changes nothing
	release, err := l.Admit(p)
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := l.Admit(p); err == nil {
		t.Fatal("a double release freed two slots")
	}
	release()
	releases[1]()
	releases[2]()
}

// TestPrincipalLimitsBoundOneUserOfARelay: calls a relay makes for one
// principal stop at the principal's limits, while the relay's other
// principals and its own calls go on; a refusal counts nothing.
func TestPrincipalLimitsBoundOneUserOfARelay(t *testing.T) {
	l, c := newLimiter(t, Config{MaxConcurrentPerPeer: 10, Rate: -1, MaxConcurrentPerPrincipal: 2, PrincipalRate: 10, PrincipalBurst: 4})
	relay, alice, bob := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)

	r1, err := l.AdmitFor(relay, alice)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.AdmitFor(relay, alice)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.AdmitFor(relay, alice)
	r := refusal(t, err, ReasonConcurrency)
	if r.For != alice || r.Peer != relay || !strings.Contains(r.Error(), "too many concurrent calls for "+alice.String()+" (through "+relay.String()+")") {
		t.Errorf("refusal %+v: %q", r, r.Error())
	}
	// Bob through the same relay, and the relay on its own, are not held up.
	for _, who := range []peer.ID{bob, "", relay} {
		release, err := l.AdmitFor(relay, who)
		if err != nil {
			t.Fatalf("for %q: %v", who, err)
		}
		release()
	}
	r1()
	r2()

	// Alice's rate: 4 in a burst (2 taken), then refused until a token comes.
	for i := range 2 {
		release, err := l.AdmitFor(relay, alice)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		release()
	}
	_, err = l.AdmitFor(relay, alice)
	r = refusal(t, err, ReasonRate)
	if r.For != alice || r.RetryAfter <= 0 || !strings.Contains(r.Error(), "10 calls/s for "+alice.String()) {
		t.Errorf("refusal %+v: %q", r, r.Error())
	}
	c.advance(r.RetryAfter)
	release, err := l.AdmitFor(relay, alice)
	if err != nil {
		t.Fatalf("after RetryAfter: %v", err)
	}
	release()

	// A refusal for the relay's own limit takes nothing from the principal.
	held := make([]func(), 0, 10)
	for range 10 {
		release, err := l.AdmitFor(relay, "")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, release)
	}
	c.advance(time.Second)
	for range 20 {
		if _, err := l.AdmitFor(relay, bob); err == nil {
			t.Fatal("admitted past the relay's own limit")
		}
	}
	for _, release := range held {
		release()
	}
	for i := range 2 { // bob's burst is whole: his concurrency was never taken
		if _, err := l.AdmitFor(relay, bob); err != nil {
			t.Fatalf("bob's call %d after the relay's refusals: %v", i, err)
		}
	}
	if l.Principals() != 2 {
		t.Errorf("%d principals tracked, want 2", l.Principals())
	}
}

func TestRateLimitRefusesBeyondBurstAndAdmitsLater(t *testing.T) {
	l, c := newLimiter(t, Config{MaxConcurrentPerPeer: -1, Rate: 10, Burst: 5})
	p := test.RandPeerIDFatal(t)
	for i := range 5 {
		release, err := l.Admit(p)
		if err != nil {
			t.Fatalf("call %d of the burst: %v", i, err)
		}
		release()
	}
	_, err := l.Admit(p)
	r := refusal(t, err, ReasonRate)
	if r.RetryAfter <= 0 || r.RetryAfter > 100*time.Millisecond {
		t.Errorf("RetryAfter %v, want (0, 100ms]", r.RetryAfter)
	}
	if !strings.Contains(r.Error(), "rate limit: 10 calls/s for "+p.String()) {
		t.Errorf("message %q", r.Error())
	}
	c.advance(r.RetryAfter)
	release, err := l.Admit(p)
	if err != nil {
		t.Fatalf("after RetryAfter: %v", err)
	}
	release()
	if _, err := l.Admit(p); err == nil {
		t.Fatal("a second call passed with one token earned")
	}
	c.advance(time.Second)
	for i := range 5 {
		release, err := l.Admit(p)
		if err != nil {
			t.Fatalf("call %d after a second: %v", i, err)
		}
		release()
	}
}

func TestStrikesBanOnceAndTheBanEnds(t *testing.T) {
	l, c := newLimiter(t, Config{Strikes: 3, StrikeWindow: 10 * time.Second, BanFor: time.Minute})
	p, other := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	var bans atomic.Int32
	var gotUntil time.Time
	var gotWhy string
	l.OnBan(func(q peer.ID, until time.Time, why string) {
		if q != p {
			t.Errorf("banned %s, want %s", q, p)
		}
		bans.Add(1)
		gotUntil, gotWhy = until, why
	})
	g := l.Gater()

	l.Strike(p, "bad frame")
	l.Strike(p, "bad frame")
	if _, ok := l.Banned(p); ok {
		t.Fatal("banned after 2 strikes of 3")
	}
	l.Strike(p, "rate")
	until, ok := l.Banned(p)
	if !ok {
		t.Fatal("not banned after 3 strikes")
	}
	if want := c.now().Add(time.Minute); !until.Equal(want) || !gotUntil.Equal(want) || gotWhy != "rate" {
		t.Errorf("banned until %v (OnBan %v, %q), want %v, \"rate\"", until, gotUntil, gotWhy, want)
	}
	for range 10 {
		l.Strike(p, "rate")
	}
	if n := bans.Load(); n != 1 {
		t.Errorf("OnBan ran %d times, want 1", n)
	}
	_, err := l.Admit(p)
	r := refusal(t, err, ReasonBanned)
	if r.RetryAfter != time.Minute || !strings.Contains(r.Error(), "is banned for 1m0s") {
		t.Errorf("refusal %v, RetryAfter %v", r, r.RetryAfter)
	}
	if g.InterceptPeerDial(p) || g.InterceptAddrDial(p, nil) || g.InterceptSecured(network.DirInbound, p, nil) {
		t.Error("the gater lets a banned peer through")
	}
	if !g.InterceptPeerDial(other) || !g.InterceptSecured(network.DirInbound, other, nil) {
		t.Error("the gater refuses a peer that is not banned")
	}
	if release, err := l.Admit(other); err != nil {
		t.Errorf("another peer refused: %v", err)
	} else {
		release()
	}

	c.advance(time.Minute)
	if _, ok := l.Banned(p); ok {
		t.Fatal("still banned after BanFor")
	}
	if !g.InterceptSecured(network.DirInbound, p, nil) {
		t.Error("the gater still refuses the peer after its ban")
	}
	release, err := l.Admit(p)
	if err != nil {
		t.Fatalf("after the ban: %v", err)
	}
	release()
	// A fresh allowance after the ban: two strikes do not ban again.
	l.Strike(p, "rate")
	l.Strike(p, "rate")
	if _, ok := l.Banned(p); ok {
		t.Error("banned again by 2 strikes right after a ban")
	}
}

func TestStrikesLeakAway(t *testing.T) {
	l, c := newLimiter(t, Config{Strikes: 3, StrikeWindow: 10 * time.Second})
	p := test.RandPeerIDFatal(t)
	for range 10 {
		l.Strike(p, "bad frame")
		l.Strike(p, "bad frame")
		c.advance(10 * time.Second)
	}
	if _, ok := l.Banned(p); ok {
		t.Error("banned for 2 strikes per window of 3")
	}
}

func TestSelfIsNeverLimited(t *testing.T) {
	self := test.RandPeerIDFatal(t)
	l := New(Config{MaxConcurrentPerPeer: 1, Rate: 1, Burst: 1, Strikes: 1}, self)
	for range 100 {
		l.Strike(self, "rate")
		if _, err := l.Admit(self); err != nil { // never released
			t.Fatal(err)
		}
	}
	if _, ok := l.Banned(self); ok {
		t.Error("self banned")
	}
	if !l.Gater().InterceptPeerDial(self) {
		t.Error("the gater refuses self")
	}
	if n := l.Peers(); n != 0 {
		t.Errorf("state kept for self: %d peers", n)
	}
}

func TestPeerStateIsBounded(t *testing.T) {
	const max = 400
	l, c := newLimiter(t, Config{MaxPeers: max, Strikes: 2})
	// Newcomers who come and go: their state goes back to a newcomer's as
	// their bucket refills, and is forgotten.
	for i := range 5000 {
		p := peer.ID(fmt.Sprintf("peer-%d", i))
		release, err := l.Admit(p)
		if err != nil {
			t.Fatal(err)
		}
		release()
		l.Strike(p, "bad frame")
		c.advance(time.Second)
	}
	if n := l.Peers(); n > max {
		t.Errorf("%d peers tracked, want at most %d", n, max)
	}
	// A flood of peers in no time (nothing refills): the least recently
	// seen are forgotten, but never one with a call in flight.
	held := peer.ID("holder")
	release, err := l.Admit(held)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20000 {
		l.Strike(peer.ID(fmt.Sprintf("flood-%d", i)), "bad frame")
	}
	if n := l.Peers(); n > max {
		t.Errorf("%d peers tracked after a flood, want at most %d", n, max)
	}
	l.mu.Lock()
	s, ok := l.peers.m[held]
	l.mu.Unlock()
	if !ok || s.inflight != 1 {
		t.Error("a peer with a call in flight was forgotten")
	}
	release()
}

func TestConcurrentUse(t *testing.T) {
	l := New(Config{MaxConcurrentPerPeer: 4, Rate: 1000, Burst: 50, Strikes: 20, BanFor: 50 * time.Millisecond}, test.RandPeerIDFatal(t))
	var banned atomic.Int32
	l.OnBan(func(peer.ID, time.Time, string) { banned.Add(1) })
	peers := make([]peer.ID, 8)
	for i := range peers {
		peers[i] = test.RandPeerIDFatal(t)
	}
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for w := range 16 {
		wg.Go(func() {
			for i := range 500 {
				p := peers[(w+i)%len(peers)]
				release, err := l.Admit(p)
				if err != nil {
					var r *Refusal
					if !errors.As(err, &r) {
						t.Errorf("not a refusal: %v", err)
						return
					}
					l.Strike(p, r.Reason)
					continue
				}
				admitted.Add(1)
				l.Banned(p)
				release()
			}
		})
	}
	wg.Wait()
	if admitted.Load() == 0 {
		t.Error("nothing admitted")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, s := range l.peers.m {
		if s.inflight != 0 {
			t.Errorf("%s: %d in flight after every release", p, s.inflight)
		}
	}
}

func TestDefaults(t *testing.T) {
	got := New(Config{}, "").Config()
	if got != DefaultConfig() {
		t.Errorf("zero config became %+v, want %+v", got, DefaultConfig())
	}
	off := New(Config{MaxConcurrentPerPeer: -1, Rate: -1, Strikes: -1, MaxConcurrentPerPrincipal: -1, PrincipalRate: -1}, "")
	p := peer.ID("p")
	for range 1000 {
		if _, err := off.AdmitFor(p, "q"); err != nil {
			t.Fatalf("limits off: %v", err)
		}
		off.Strike(p, "rate")
	}
	if _, ok := off.Banned(p); ok {
		t.Error("banned with strikes off")
	}
}

// BenchmarkAdmit is the limiter's cost per served call: a peer's own call,
// and one made for a principal through it (both checked under one lock).
func BenchmarkAdmit(b *testing.B) {
	l := New(Config{}, "")
	p, principal := peer.ID("caller"), peer.ID("principal")
	for _, bc := range []struct {
		name string
		for_ peer.ID
	}{{"own", ""}, {"for-principal", principal}} {
		b.Run(bc.name, func(b *testing.B) {
			t := time.Unix(1_700_000_000, 0)
			l.now = func() time.Time { t = t.Add(10 * time.Millisecond); return t } // tokens never run out
			for b.Loop() {
				release, err := l.AdmitFor(p, bc.for_)
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
		})
	}
}
