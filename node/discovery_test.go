package node_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/node/iface"
	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

// fastDiscovery makes cards short-lived so that leaving shows within a test.
// A card outlives its republish by CardTTL-RepublishEvery: at 2 s that was
// 1.5 s, and a republish (a DHT walk, then the puts) under -race on a loaded
// 2-core machine took longer, so that no node held the card for a moment
// (TestFindAcrossAChainAndCall: "no card for C" just after finding C).
var fastDiscovery = discovery.Config{CardTTL: 6 * time.Second, RepublishEvery: 500 * time.Millisecond, Debounce: 20 * time.Millisecond}

type transIn struct {
	Text string `json:"text"`
}

// chain starts A, B, C with discovery, A and C connected only to B; C
// offers "translate".
func chain(t *testing.T) (a, b, c *node.Node) {
	t.Helper()
	a = newNode(t, node.WithDiscovery(fastDiscovery), node.WithName("A"))
	b = newNode(t, node.WithDiscovery(fastDiscovery), node.WithName("B"))
	c = newNode(t, node.WithDiscovery(fastDiscovery), node.WithName("C"), node.WithTags("lang"))
	node.AddTool(c, &sdkmcp.Tool{Name: "translate", Description: "Translates text. Very well.", Meta: sdkmcp.Meta{discovery.TagsMetaKey: []string{"i18n"}}},
		func(context.Context, *sdkmcp.CallToolRequest, transIn) (*sdkmcp.CallToolResult, any, error) {
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "bonjour"}}}, nil, nil
		})
	connect(t, a, b)
	connect(t, c, b)
	return a, b, c
}

// findAll runs a lookup to the end and returns the peers found.
func findAll(t *testing.T, n *node.Node, query string) map[lpeer.ID]discovery.Found {
	t.Helper()
	// Short, so that an eventually around it tries several times on a
	// loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out := map[lpeer.ID]discovery.Found{}
	if err := n.Find(ctx, query, func(f discovery.Found) { out[f.Card.Peer] = f }); err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
	return out
}

// eventually retries f until it returns true or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestFindAcrossAChainAndCall(t *testing.T) {
	a, _, c := chain(t)
	ctx := context.Background()

	eventually(t, 15*time.Second, "A finds C's translate", func() bool {
		f, ok := findAll(t, a, "translate")[c.ID()]
		return ok && f.Card.Name == "C" && len(f.Matches) == 1 && f.Matches[0].Tool.Description == "Translates text."
	})
	for _, q := range []string{"tag:i18n", "tag:lang"} {
		if _, ok := findAll(t, a, q)[c.ID()]; !ok {
			t.Errorf("%s does not find C", q)
		}
	}
	card, err := a.Card(ctx, c.ID())
	if err != nil {
		t.Fatal(err)
	}
	if card.Peer != c.ID() || len(card.Multiaddrs()) == 0 || len(card.Servers) != 1 || len(card.Servers[0].ToolsHash) != 32 {
		t.Fatalf("card = %v", card)
	}

	res, err := a.CallAny(ctx, "translate", transIn{Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Peer != c.ID() || res.Result.Content[0].(*sdkmcp.TextContent).Text != "bonjour" {
		t.Fatalf("CallAny = %+v", res)
	}
}

func TestNewToolFindableWithinSeconds(t *testing.T) {
	a, _, c := chain(t)
	start := time.Now()
	node.AddTool(c, &sdkmcp.Tool{Name: "summarize"}, func(context.Context, *sdkmcp.CallToolRequest, transIn) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{}}, nil, nil
	})
	eventually(t, 15*time.Second, "summarize findable", func() bool {
		_, ok := findAll(t, a, "summarize")[c.ID()]
		return ok
	})
	t.Logf("new tool findable after %v", time.Since(start).Round(time.Millisecond))
}

func TestToolNoLongerSharedDisappears(t *testing.T) {
	a, _, c := chain(t)
	eventually(t, 15*time.Second, "translate findable", func() bool {
		_, ok := findAll(t, a, "translate")[c.ID()]
		return ok
	})
	c.Server().RemoveTools("translate")
	eventually(t, 15*time.Second, "translate gone", func() bool {
		_, ok := findAll(t, a, "translate")[c.ID()]
		return !ok
	})
}

func TestLeavingNodeDisappears(t *testing.T) {
	a, b, _ := chain(t)
	d := newNode(t, node.WithDiscovery(fastDiscovery))
	node.AddTool(d, &sdkmcp.Tool{Name: "translate"}, func(context.Context, *sdkmcp.CallToolRequest, transIn) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{}}, nil, nil
	})
	connect(t, d, b)
	eventually(t, 15*time.Second, "D findable", func() bool {
		_, ok := findAll(t, a, "translate")[d.ID()]
		return ok
	})
	left := time.Now()
	d.Close()
	eventually(t, fastDiscovery.CardTTL+3*time.Second, "D gone after leaving", func() bool {
		_, ok := findAll(t, a, "translate")[d.ID()]
		return !ok
	})
	t.Logf("a node that left dropped out after %v (card TTL %v)", time.Since(left).Round(time.Millisecond), fastDiscovery.CardTTL)
}

// addTranslator starts D, offering translate too, connected to B and A.
func addTranslator(t *testing.T, a, b *node.Node) *node.Node {
	t.Helper()
	d := newNode(t, node.WithDiscovery(fastDiscovery), node.WithName("D"))
	node.AddTool(d, &sdkmcp.Tool{Name: "translate"}, func(context.Context, *sdkmcp.CallToolRequest, transIn) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "from D"}}}, nil, nil
	})
	connect(t, d, b)
	connect(t, a, d)
	return d
}

// bothFindable waits until A's lookups return C and D.
func bothFindable(t *testing.T, a, c, d *node.Node) {
	eventually(t, 15*time.Second, "both providers findable", func() bool {
		f := findAll(t, a, "translate")
		_, okc := f[c.ID()]
		_, okd := f[d.ID()]
		return okc && okd
	})
}

func TestCallAnyPrefersAConnectedPeer(t *testing.T) {
	a, b, c := chain(t)
	d := addTranslator(t, a, b)
	bothFindable(t, a, c, d)
	for range 3 {
		res, err := callAnyFindingD(t, a, c)
		if err != nil || res.Peer != d.ID() {
			t.Fatalf("answered by %v (%v), want the connected D", res.Peer, err)
		}
	}
}

// callAnyFindingD calls as callAnyWithCDisconnected does, again (for up to
// 5 s) while C answered with no provider tried before it: CallAny chooses
// among the providers its lookup verified within findWindow (300 ms) of the
// first, and under -race on a loaded machine D's card sometimes came later;
// found, D (connected) would have been tried before C. A CallAny that ranks
// C first with D found still fails: every call is answered by C.
func callAnyFindingD(t *testing.T, a, c *node.Node) (iface.AnyResult, error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := callAnyWithCDisconnected(t, a, c)
		if err != nil || res.Peer != c.ID() || len(res.Tried) > 0 || time.Now().After(deadline) {
			return res, err
		}
	}
}

// callAnyWithCDisconnected closes A's connections to C and at once calls
// translate through CallAny, which ranks the peers connected when it starts
// first. A live mesh reconnects A and C on its own (their republishes, the
// DHT's refreshes: within 10–500 ms in this mesh, often sooner), so a call
// that started after such a reconnect would test nothing: it is made again.
func callAnyWithCDisconnected(t *testing.T, a, c *node.Node) (iface.AnyResult, error) {
	t.Helper()
	var reconnected atomic.Int64 // when A connected to C since the last close (unix ns)
	watch := &network.NotifyBundle{ConnectedF: func(_ network.Network, conn network.Conn) {
		if conn.RemotePeer() == c.ID() {
			reconnected.CompareAndSwap(0, time.Now().UnixNano())
		}
	}}
	net := a.Host().Network()
	net.Notify(watch)
	defer net.StopNotify(watch)
	for range 50 {
		reconnected.Store(0)
		net.ClosePeer(c.ID())
		if net.Connectedness(c.ID()) == network.Connected {
			continue
		}
		start := time.Now().UnixNano()
		res, err := a.CallAny(context.Background(), "translate", transIn{Text: "hi"})
		if at := reconnected.Load(); at != 0 && at <= start {
			continue // C was connected again before the call began
		}
		return res, err
	}
	t.Fatal("A reconnected to C before each of 50 calls could begin")
	return iface.AnyResult{}, nil
}

func TestCallAnyTriesTheNextProvider(t *testing.T) {
	a, b, c := chain(t)
	d := addTranslator(t, a, b)
	bothFindable(t, a, c, d)
	// D's card still lists translate, but D refuses MCP streams: A's first
	// choice (connected) fails before answering.
	d.Host().RemoveStreamHandler(transport.ProtocolID(transport.DefaultServer))
	// A lookup on this small mesh may now and then miss C's provider record
	// (it is stored on the few peers closest to the key); the fallback is
	// what is tested, so look again until C is among the candidates.
	var res iface.AnyResult
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		// C unconnected, so that D (connected) is the first choice.
		if res, err = callAnyFindingD(t, a, c); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Peer != c.ID() || len(res.Tried) != 1 || !strings.Contains(res.Tried[0].Error(), d.ID().String()) {
		t.Fatalf("answered by %s after %v; want C after D failed", res.Peer, res.Tried)
	}
}

// A malicious node stores forged, replayed and expired cards for C through
// a DHT that accepts anything; every honest node refuses them, and lookups
// keep returning C's real card.
func TestBadCardsRejectedByEveryNode(t *testing.T) {
	a, b, c := chain(t)
	ctx := context.Background()
	eventually(t, 15*time.Second, "C's card published", func() bool {
		_, err := a.Card(ctx, c.ID())
		return err == nil
	})
	real, err := a.Card(ctx, c.ID())
	if err != nil {
		t.Fatal(err)
	}

	evil := newNode(t)
	connect(t, evil, b)
	connect(t, evil, a)
	connect(t, evil, c)
	evilDHT, err := dht.New(evil.Host(), dht.Mode(dht.ModeServer), dht.ProtocolPrefix("/mcpmesh"),
		dht.NamespacedValidator(discovery.CardNamespace, acceptAll{}), dht.BootstrapPeers())
	if err != nil {
		t.Fatal(err)
	}
	defer evilDHT.Close()
	eventually(t, 15*time.Second, "evil DHT has peers", func() bool { return evilDHT.RoutingTable().Size() >= 3 })

	forgerKey, _, _ := crypto.GenerateEd25519Key(nil)
	forged, err := discovery.SealCard(&cardpb.Card{Seq: real.Seq + 1000, Name: "FORGED", ExpiresAtMs: time.Now().Add(time.Hour).UnixMilli()}, forgerKey)
	if err != nil {
		t.Fatal(err)
	}
	olderCard := &cardpb.Card{Seq: 1, Name: "REPLAYED", ExpiresAtMs: time.Now().Add(time.Hour).UnixMilli()}
	// A genuine but old card needs C's key: take it from C's host.
	cKey := c.Host().Peerstore().PrivKey(c.ID())
	older, err := discovery.SealCard(olderCard, cKey)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := discovery.SealCard(&cardpb.Card{Seq: real.Seq + 2000, Name: "EXPIRED", ExpiresAtMs: time.Now().Add(-time.Minute).UnixMilli()}, cKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{"forged": forged, "replayed": older, "expired": expired} {
		// The evil DHT's own put reaches the honest nodes; they must refuse.
		evilDHT.PutValue(ctx, discovery.CardKey(c.ID()), bad)
		for _, n := range []*node.Node{a, b, c} {
			got, err := n.Card(ctx, c.ID())
			if err != nil {
				t.Fatalf("%s: node %s lost C's card: %v", name, n.Name(), err)
			}
			if got.Name != "C" {
				t.Fatalf("%s: node %s returns card %q", name, n.Name(), got.Name)
			}
		}
	}
}

type acceptAll struct{}

func (acceptAll) Validate(string, []byte) error        { return nil }
func (acceptAll) Select(string, [][]byte) (int, error) { return 0, nil }

func TestMDNSFindsPeersWithoutAddresses(t *testing.T) {
	cfg := fastDiscovery
	cfg.MDNS = true
	cfg.MDNSService = "mcpmesh-test-" + strings.ReplaceAll(t.Name(), "/", "-") + time.Now().Format("150405.000000")
	x := newNode(t, node.WithDiscovery(cfg), node.WithListenAddrs("/ip4/0.0.0.0/tcp/0"))
	y := newNode(t, node.WithDiscovery(cfg), node.WithListenAddrs("/ip4/0.0.0.0/tcp/0"))
	deadline := time.Now().Add(10 * time.Second)
	for len(x.Host().Network().ConnsToPeer(y.ID())) == 0 {
		if time.Now().After(deadline) {
			addrs := slices.Collect(func(yield func(string) bool) {
				for _, a := range x.Host().Addrs() {
					if !yield(a.String()) {
						return
					}
				}
			})
			// CI's machine carries multicast (the test passes there in
			// well under a second): there, finding nothing is a failure.
			if os.Getenv("CI") != "" {
				t.Fatalf("mDNS found nothing in 10s (interfaces: %v)", addrs)
			}
			t.Skipf("mDNS found nothing in 10s: this machine may not carry multicast (interfaces: %v)", addrs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A provider whose tool of that name takes other arguments is skipped, not
// called: A's first choice (the connected D) does not fit {"text": …}.
func TestCallAnySkipsAProviderWhoseSchemaDoesNotFit(t *testing.T) {
	a, b, c := chain(t)
	d := newNode(t, node.WithDiscovery(fastDiscovery), node.WithName("D"))
	called := make(chan struct{}, 1)
	type langIn struct {
		Lang string `json:"lang"`
	}
	node.AddTool(d, &sdkmcp.Tool{Name: "translate"}, func(context.Context, *sdkmcp.CallToolRequest, langIn) (*sdkmcp.CallToolResult, any, error) {
		called <- struct{}{}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "from D"}}}, nil, nil
	})
	connect(t, d, b)
	connect(t, a, d)
	bothFindable(t, a, c, d)
	var res iface.AnyResult
	var err error
	// As above: a lookup may miss a record now and then; look again.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		a.Host().Network().ClosePeer(c.ID()) // D, connected, comes first
		res, err = a.CallAny(context.Background(), "translate", transIn{Text: "hi"})
		if (err == nil && res.Peer == c.ID() && len(res.Tried) == 1) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || res.Peer != c.ID() {
		t.Fatalf("answered by %s (%v) after %v; want C, D skipped", res.Peer, err, res.Tried)
	}
	if len(res.Tried) != 1 || !strings.Contains(res.Tried[0].Error(), "do not fit its input schema") {
		t.Fatalf("tried %v; want D, its schema named", res.Tried)
	}
	select {
	case <-called:
		t.Fatal("D's tool was called with arguments its schema refuses")
	default:
	}
}
