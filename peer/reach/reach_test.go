package reach

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/internal/cable"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		// go-flow-metrics' process-wide sweeper, behind BenchmarkLivenessCost's bandwidth counter.
		goleak.IgnoreTopFunction("github.com/libp2p/go-flow-metrics.(*sweeper).runActive"),
	)
}

// newHost starts a libp2p host on loopback TCP with the service's options
// and starts the service, both closed when the test ends.
func newHost(t testing.TB, s *Service) host.Host {
	t.Helper()
	opts := []libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics()}
	if s != nil {
		opts = append(opts, s.Options()...)
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	if s != nil {
		if err := s.Start(h, Hooks{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if s != nil {
			s.Close()
		}
		h.Close()
	})
	return h
}

func service(t *testing.T, edit func(*Config)) *Service {
	t.Helper()
	cfg := DefaultConfig()
	cfg.PortMapping = false // libp2p's UPnP search outlives the host by up to 15 s
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.scan = 100 * time.Millisecond
	return s
}

func eventually(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func connect(t testing.TB, from, to host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Reachability = "sometimes" }, "reachability"},
		{func(c *Config) { c.RelayService = "yes" }, "relay service"},
		{func(c *Config) { c.RelayLimits.Data = 0 }, "data"},
		{func(c *Config) { c.RelayLimits.Duration = -time.Second }, "duration"},
		{func(c *Config) { c.RelayLimits.BufferSize = 10 }, "bufferSize"},
		{func(c *Config) { c.Relays = []peer.AddrInfo{{}} }, "relay 1"},
	} {
		cfg := DefaultConfig()
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error naming %q", err, tc.want)
		}
	}
	if cfg := DefaultConfig(); cfg.Validate() != nil {
		t.Errorf("the default configuration is invalid: %v", cfg.Validate())
	}
}

// A node with no public address and no relay configured finds a relay
// among the peers it connects to (one that speaks the relay protocol),
// reserves a slot there, and announces an address through it.
func TestRelayFoundAmongConnectedPeers(t *testing.T) {
	relay := newHost(t, service(t, func(c *Config) { c.RelayService = RelayOn }))
	plain := newHost(t, service(t, func(c *Config) { c.RelayService = RelayOff }))
	s := service(t, nil)
	h := newHost(t, s)
	connect(t, h, plain)
	connect(t, h, relay)
	through := "/p2p/" + relay.ID().String() + "/p2p-circuit"
	eventually(t, 10*time.Second, "an address through the relay", func() bool {
		for _, a := range h.Addrs() {
			if strings.HasSuffix(a.String(), through) {
				return true
			}
		}
		return false
	})
	st := s.Status(nil)
	if len(st.Relays) != 1 || st.Relays[0].ID != relay.ID().String() {
		t.Errorf("status relays %+v, want just %s", st.Relays, relay.ID())
	}
	if st.Reachability != "unknown" || !strings.Contains(st.DecidedBy, "no public address") {
		t.Errorf("status reachability %q (%s), want unknown for lack of a public address", st.Reachability, st.DecidedBy)
	}
	if st.Relaying {
		t.Errorf("a node with the relay service in auto and no public address says it relays")
	}
}

// A node declared public neither reserves nor announces relayed
// addresses, and (relay service auto) serves as a relay.
func TestPublicNodeRelaysAndReservesNothing(t *testing.T) {
	relay := newHost(t, service(t, func(c *Config) { c.RelayService = RelayOn }))
	s := service(t, func(c *Config) { c.Reachability = Public })
	h := newHost(t, s)
	connect(t, h, relay)
	eventually(t, 5*time.Second, "the relay service running", func() bool { return s.Status(nil).Relaying })
	if st := s.Status(nil); st.Reachability != "public" || len(st.Relays) != 0 {
		t.Errorf("public node: %+v", st)
	}
	for _, a := range h.Addrs() {
		if isCircuit(a) {
			t.Errorf("a public node announces %s", a)
		}
	}
}

func TestRelayRefusesBannedPeers(t *testing.T) {
	bad, good := peer.ID("bad"), peer.ID("good")
	acl := relayACL{func(p peer.ID) bool { return p == bad }}
	if acl.AllowReserve(bad, nil) || !acl.AllowReserve(good, nil) {
		t.Error("reservations: a banned peer may reserve, or another may not")
	}
	if acl.AllowConnect(bad, nil, good) || acl.AllowConnect(good, nil, bad) || !acl.AllowConnect(good, nil, good) {
		t.Error("relayed connections: a banned peer is a source or destination")
	}
}

func TestCircuitAddrsKeepPrivateAddressesOfTheRelay(t *testing.T) {
	relay := newHost(t, nil)
	h := newHost(t, nil)
	connect(t, h, relay)
	h.Peerstore().AddAddrs(relay.ID(), []ma.Multiaddr{
		ma.StringCast("/ip4/10.1.2.3/tcp/4001"),
		ma.StringCast("/ip4/192.168.1.9/udp/4001/quic-v1"),
		ma.StringCast("/ip6/fe80::1/tcp/4001"),
		ma.StringCast("/ip4/0.0.0.0/tcp/4001"),
	}, time.Hour)
	got := map[string]bool{}
	for _, a := range circuitAddrs(h, relay.ID()) {
		got[a.String()] = true
	}
	suffix := "/p2p/" + relay.ID().String() + "/p2p-circuit"
	for _, want := range []string{"/ip4/10.1.2.3/tcp/4001", "/ip4/192.168.1.9/udp/4001/quic-v1", relay.Addrs()[0].String()} {
		if !got[want+suffix] {
			t.Errorf("circuit addresses %v lack %s", got, want+suffix)
		}
	}
	for a := range got {
		if strings.Contains(a, "fe80") || strings.Contains(a, "0.0.0.0") {
			t.Errorf("circuit address %s: link-local and unspecified addresses are of no use", a)
		}
	}
}

// netAddr is h's first listen address that is a network address (not the
// relay transport's /p2p-circuit).
func netAddr(h host.Host) net.Addr {
	for _, l := range h.Network().ListenAddresses() {
		if addr, err := manet.ToNetAddr(l); err == nil {
			return addr
		}
	}
	return nil
}

// cabledHosts connects a to b through a cable, b announcing nothing else.
func cabledHosts(t *testing.T) (a, b host.Host, link *cable.Cable) {
	t.Helper()
	b = newHost(t, nil)
	link, err := cable.New(netAddr(b).String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	a = newHost(t, nil)
	via, _ := manet.FromNetAddr(link.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: []ma.Multiaddr{via}}); err != nil {
		t.Fatal(err)
	}
	return a, b, link
}

func TestLivenessClosesASilentConnection(t *testing.T) {
	a, b, link := cabledHosts(t)
	lost := make(chan Lost, 1)
	l := NewLiveness(a, 50*time.Millisecond, 300*time.Millisecond, func(x Lost) { lost <- x })
	defer l.Close()
	release := l.Hold(b.ID())
	defer release()
	eventually(t, 5*time.Second, "pings answered", func() bool { return l.Stats().Pings >= 3 })
	if a.Peerstore().LatencyEWMA(b.ID()) == 0 {
		t.Errorf("no latency recorded from the pings")
	}
	if l.Stats().Losses != 0 {
		t.Fatalf("a healthy link lost: %+v", l.Stats())
	}
	link.Freeze()
	select {
	case x := <-lost:
		if x.Peer != b.ID() || x.Conn == nil || x.Silent < 300*time.Millisecond {
			t.Errorf("loss %+v", x)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a frozen link not declared lost within 10s")
	}
	if a.Network().Connectedness(b.ID()) != network.NotConnected {
		t.Errorf("the silent connection is still open")
	}
	if _, ok := l.LostRecently(b.ID(), time.Second); !ok {
		t.Errorf("LostRecently does not remember the loss")
	}
}

func TestLivenessHoldsAreCounted(t *testing.T) {
	a := newHost(t, nil)
	b := newHost(t, nil)
	connect(t, a, b)
	l := NewLiveness(a, 20*time.Millisecond, time.Second, nil)
	defer l.Close()
	r1, r2 := l.Hold(b.ID()), l.Hold(b.ID())
	r1()
	r1() // twice: no effect
	if l.Stats().Watched != 1 {
		t.Fatalf("watched %d after one of two releases, want 1", l.Stats().Watched)
	}
	eventually(t, 5*time.Second, "pings while held", func() bool { return l.Stats().Pings > 0 })
	r2()
	if s := l.Stats(); s.Watched != 0 {
		t.Fatalf("still watching after the last release: %+v", s)
	}
	if r := l.Hold(a.ID()); l.Stats().Watched != 0 {
		t.Errorf("a host watches itself")
	} else {
		r()
	}
}

func TestMovesClosesIdleSessionsAtOnceAndBusyOnesWhenDone(t *testing.T) {
	closed := map[string]int{}
	m := NewMoves(func(s string) { closed[s]++ })
	p, q := peer.ID("p"), peer.ID("q")
	retired := map[string]int{}
	for _, s := range []string{"idle", "busy", "other"} {
		owner := p
		if s == "other" {
			owner = q
		}
		m.Relayed(owner, s, func() { retired[s]++ })
	}
	end := m.Begin("busy")
	m.Direct(p)
	if retired["idle"] != 1 || retired["busy"] != 1 || retired["other"] != 0 {
		t.Errorf("retired %v, want idle and busy (p's) only", retired)
	}
	if closed["idle"] != 1 || closed["busy"] != 0 {
		t.Errorf("closed %v, want idle at once, busy not yet", closed)
	}
	end()
	end()
	if closed["busy"] != 1 {
		t.Errorf("busy closed %d times once its call ended, want 1", closed["busy"])
	}
	m.Direct(p)
	if retired["idle"] != 1 || closed["idle"] != 1 {
		t.Errorf("a second direct connection retired or closed again: %v %v", retired, closed)
	}
	m.Ended("idle")
	m.Ended("busy")
	m.Ended("other")
	if m.tracked.Load() != 0 {
		t.Errorf("%d sessions still tracked after they ended", m.tracked.Load())
	}
	if n := testing.AllocsPerRun(100, func() { m.Begin("untracked")() }); n != 0 {
		t.Errorf("a call on an untracked session allocates %v times", n)
	}
}

// A reservation taken or lost is told at once (the host itself tells of a
// relay with private addresses only at its next 5 s tick), so the node's
// card follows the reservation.
func TestReservationChangesAreToldAtOnce(t *testing.T) {
	s := service(t, nil)
	changed := 0
	s.hooks.Store(&Hooks{AddrsChanged: func() { changed++ }})
	w := finderWatch{autorelay.NewMetricsTracer(autorelay.WithRegisterer(prometheus.NewRegistry())), s}
	w.ReservationRequestFinished(false, nil) // a new reservation
	w.ReservationRequestFinished(true, nil)  // a refresh: nothing new
	w.ReservationRequestFinished(false, errors.New("refused"))
	w.ReservationEnded(1)
	if changed != 2 {
		t.Errorf("addresses said changed %d times, want 2 (one reservation taken, one lost)", changed)
	}
}

// A connection whose ping answer is late but that gives other signs of
// life (bytes from the peer on its streams: Signs) is not lost while they
// come; once they stop, the timeout runs from the last of them.
func TestLivenessWaitsWhileThePeerGivesSignsOfLife(t *testing.T) {
	const timeout = 500 * time.Millisecond
	b, link, l, conn, lost := watchedLink(t, timeout)
	signs := l.Signs(conn)
	if l.Signs(conn) != signs {
		t.Fatal("two records of one connection's signs")
	}
	release := l.Hold(b.ID())
	defer release()
	eventually(t, 5*time.Second, "pings answered", func() bool { return l.Stats().Pings >= 2 })

	// The link freezes, but signs keep coming for 4 timeouts (as bytes of
	// a large message would, ahead of the ping's answer).
	link.Freeze()
	t0 := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Since(t0) < 4*timeout {
		select {
		case x := <-lost:
			t.Fatalf("lost %v after the freeze while signs of life came every 20ms: %+v", time.Since(t0), x)
		case <-tick.C:
			signs.Alive()
		}
	}
	if l.Stats().Pings < 3 {
		t.Errorf("%d pings in all: the checker stopped pinging while it waited", l.Stats().Pings)
	}
	stopped := time.Now()
	select {
	case x := <-lost:
		if x.At.Before(stopped.Add(timeout)) {
			t.Errorf("lost %v after the last sign, before the timeout (%v)", x.At.Sub(stopped), timeout)
		}
		t.Logf("lost %v after the last sign", x.At.Sub(stopped).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("not lost within 10s of the last sign")
	}
}

// otherConn is another connection to the same peer: the same peer, another
// ID in the host.
type otherConn struct {
	network.Conn
	id string
}

func (c otherConn) ID() string { return c.id }

// Signs of life are a connection's: bytes coming on another connection to
// the same peer (a new one it calls this node on, say) do not keep a
// silent one open, or calls opened on it would hang.
func TestLivenessSignsOnAnotherConnectionDoNotCount(t *testing.T) {
	b, link, l, conn, lost := watchedLink(t, 300*time.Millisecond)
	other := l.Signs(otherConn{conn, conn.ID() + "-other"})
	if other == l.Signs(conn) {
		t.Fatal("two connections share one record of signs")
	}
	release := l.Hold(b.ID())
	defer release()
	eventually(t, 5*time.Second, "pings answered", func() bool { return l.Stats().Pings >= 2 })

	link.Freeze()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case x := <-lost:
			if x.Conn != conn {
				t.Errorf("lost %v, want the silent connection %v", x.Conn, conn)
			}
			return
		case <-tick.C:
			other.Alive()
		case <-deadline:
			t.Fatal("a silent connection not declared lost within 10s while another connection to its peer gave signs of life")
		}
	}
}

// watchedLink returns a checker of host a's liveness pings every 50 ms,
// with timeout, the connection through link to b, and the losses it tells.
func watchedLink(t *testing.T, timeout time.Duration) (b host.Host, link *cable.Cable, l *Liveness, conn network.Conn, lost chan Lost) {
	a, b, link := cabledHosts(t)
	lost = make(chan Lost, 1)
	l = NewLiveness(a, 50*time.Millisecond, timeout, func(x Lost) { lost <- x })
	t.Cleanup(l.Close)
	return b, link, l, a.Network().ConnsToPeer(b.ID())[0], lost
}
