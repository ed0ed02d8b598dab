package node_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

// addGateTool gives n a tool "gate" that signals started and waits until
// open is closed (or its call ends).
func addGateTool(n *node.Node) (started chan struct{}, open chan struct{}) {
	started, open = make(chan struct{}, 64), make(chan struct{})
	node.AddTool(n, &sdkmcp.Tool{Name: "gate"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, echoOut, error) {
		started <- struct{}{}
		select {
		case <-open:
			return nil, echoOut{Text: "through"}, nil
		case <-ctx.Done():
			return nil, echoOut{}, ctx.Err()
		}
	})
	return started, open
}

// openGate lets the calls held at the gate through, waits for them, and
// checks that each succeeded.
func openGate(t *testing.T, open chan struct{}, wg *sync.WaitGroup, held chan string) {
	t.Helper()
	close(open)
	wg.Wait()
	close(held)
	for msg := range held {
		if msg != "" {
			t.Errorf("a call within the limits failed: %s", msg)
		}
	}
}

func TestCallsOverTheConcurrencyLimitAreRefusedWhileOtherPeersAreServed(t *testing.T) {
	const max = 4
	b := newNode(t, node.WithLimits(limits.Config{MaxConcurrentPerPeer: max, Rate: -1, Strikes: -1}))
	started, open := addGateTool(b)
	a, c := newNode(t), newNode(t)
	connect(t, a, b)
	connect(t, c, b)

	var wg sync.WaitGroup
	held := make(chan string, max+1)
	for range max {
		wg.Go(func() {
			held <- failure(a.CallTool(ctxFor(t, 10*time.Second), b.ID(), "gate", nil))
		})
	}
	for range max {
		waitFor(t, started, "a held call")
	}
	for i := range 3 {
		msg := failure(a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "gate", nil))
		if !strings.Contains(msg, "too many concurrent calls from "+a.ID().String()) {
			t.Errorf("call %d over the limit: got %q, want a refusal for too many concurrent calls", i, msg)
		}
	}
	// Another peer is served all the while, even on the same tool.
	mustEcho(t, c, b, "meanwhile")
	wg.Go(func() { held <- failure(c.CallTool(ctxFor(t, 10*time.Second), b.ID(), "gate", nil)) })
	waitFor(t, started, "c's call")

	openGate(t, open, &wg, held)
	mustEcho(t, a, b, "after the held calls ended")
}

// TestPrincipalLimitsHoldOneUserOfAnIntermediary: A and D call C through
// B's tool, each call carrying its principal's delegation. C holds A's calls
// to A's own limit; D's calls through the same B, and B's own, go on; B
// gets no strike for it (one strike would ban it here).
func TestPrincipalLimitsHoldOneUserOfAnIntermediary(t *testing.T) {
	c := newNode(t, node.WithLimits(limits.Config{MaxConcurrentPerPrincipal: 2, PrincipalRate: -1, Strikes: 1}))
	started, open := addGateTool(c)
	b := newNode(t)
	cID := c.ID()
	node.AddTool(b, &sdkmcp.Tool{Name: "forward"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, struct{}, error) {
		res, err := b.CallTool(ctx, cID, "node/gate", nil)
		if msg := failure(res, err); msg != "" {
			return nil, struct{}{}, errors.New(msg)
		}
		return nil, struct{}{}, nil
	})
	a, d := newNode(t), newNode(t)
	connect(t, a, b)
	connect(t, d, b)
	connect(t, b, c)

	var wg sync.WaitGroup
	held := make(chan string, 3)
	for range 2 {
		wg.Go(func() { held <- failure(a.CallTool(ctxFor(t, 10*time.Second), b.ID(), "forward", nil)) })
	}
	waitFor(t, started, "A's first call")
	waitFor(t, started, "A's second call")

	msg := failure(a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "forward", nil))
	if !strings.Contains(msg, "too many concurrent calls for "+a.ID().String()+" (through "+b.ID().String()+")") {
		t.Fatalf("A's third call: got %q, want a refusal for A's limit", msg)
	}
	wg.Go(func() { held <- failure(d.CallTool(ctxFor(t, 10*time.Second), b.ID(), "forward", nil)) })
	waitFor(t, started, "D's call through the same B")
	mustEcho(t, b, c, "B on its own")
	if _, banned := c.Limits().Banned(b.ID()); banned {
		t.Fatal("B was struck for A's limit")
	}
	rec := lastAudit(t, c, "gate")
	if rec.Outcome != "refused" || rec.Reason != "principal-"+limits.ReasonConcurrency || rec.For != a.ID().String() {
		t.Errorf("C's audit of the refusal: %+v", rec)
	}

	openGate(t, open, &wg, held)
}

// TestRelayedCallsCountAgainstTheCallersLimits: a --share-peer relay holds
// a caller's relayed calls to its limits as it does its own served calls,
// and frees a call's place when its answer passes or it is cancelled.
func TestRelayedCallsCountAgainstTheCallersLimits(t *testing.T) {
	const max = 2
	c := newNode(t)
	started, open := addGateTool(c)
	b := newNode(t, node.WithLimits(limits.Config{MaxConcurrentPerPeer: max, Rate: -1, Strikes: -1}))
	a, d := newNode(t), newNode(t)
	connect(t, a, b)
	connect(t, d, b)
	connect(t, b, c)
	if err := b.SharePeer("far", c.ID(), "node"); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	held := make(chan string, max+1)
	for range max - 1 {
		wg.Go(func() { held <- failure(a.CallTool(ctxFor(t, 10*time.Second), b.ID(), "far/gate", nil)) })
	}
	cancelled, cancel := context.WithCancel(ctxFor(t, 10*time.Second))
	cancelDone := make(chan string, 1)
	go func() { cancelDone <- failure(a.CallTool(cancelled, b.ID(), "far/gate", nil)) }()
	for range max {
		waitFor(t, started, "a held relayed call")
	}
	msg := failure(a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "far/gate", nil))
	if !strings.Contains(msg, "too many concurrent calls from "+a.ID().String()) {
		t.Fatalf("relayed call over the limit: got %q, want a refusal for too many concurrent calls", msg)
	}
	// Another peer's relayed calls go on.
	wg.Go(func() { held <- failure(d.CallTool(ctxFor(t, 10*time.Second), b.ID(), "far/gate", nil)) })
	waitFor(t, started, "d's relayed call")

	// A cancelled call frees its place at once, answered or not.
	cancel()
	if msg := <-cancelDone; msg == "" {
		t.Fatal("the cancelled call succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, stop := context.WithTimeout(context.Background(), 300*time.Millisecond)
		msg := failure(a.CallTool(ctx, b.ID(), "far/echo", echoIn{Text: "x"}))
		stop()
		if msg == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a cancelled relayed call kept its place: %s", msg)
		}
		time.Sleep(20 * time.Millisecond)
	}

	openGate(t, open, &wg, held)
	// Every answer freed its place: a can fill its limit again.
	for range max + 2 {
		mustEchoVia(t, a, b, "far/echo")
	}
	// The relay audited each relayed call as it ended: a's held call and d's
	// ok, the cancelled one, the refusal.
	outcomes := map[audit.Outcome]int{}
	for _, rec := range b.Audit().Recent(audit.Filter{Tool: "gate"}) {
		outcomes[rec.Outcome]++
		if rec.Server != "far" || rec.Outcome == audit.Refused && rec.Reason != limits.ReasonConcurrency {
			t.Errorf("the relay's audit: %+v", rec)
		}
	}
	if outcomes[audit.OK] != 2 || outcomes[audit.Cancelled]+outcomes[audit.Error] != 1 || outcomes[audit.Refused] != 1 {
		t.Errorf("the relay's audit of gate: %v, want 2 ok, 1 cancelled (or an error), 1 refused", outcomes)
	}
}

func mustEchoVia(t *testing.T, from, to *node.Node, ref string) {
	t.Helper()
	if msg := failure(from.CallTool(ctxFor(t, 5*time.Second), to.ID(), ref, echoIn{Text: "x"})); msg != "" {
		t.Fatal(msg)
	}
}

func TestPeerPersistingOverItsRateIsDisconnectedUntilItsBanEnds(t *testing.T) {
	const banFor = 1500 * time.Millisecond
	b := newNode(t, node.WithLimits(limits.Config{Rate: 5, Burst: 5, Strikes: 5, BanFor: banFor}))
	a, c := newNode(t), newNode(t)
	connect(t, a, b)
	connect(t, c, b)

	var refused, rateRefused int
	for i := 0; ; i++ {
		if _, banned := b.Limits().Banned(a.ID()); banned {
			break
		}
		if i == 100 {
			t.Fatalf("not banned after %d calls (%d refused)", i, refused)
		}
		msg := failure(a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "echo", map[string]any{"text": "again"}))
		if msg != "" {
			refused++
			if strings.Contains(msg, "rate limit: 5 calls/s for "+a.ID().String()) {
				rateRefused++
			}
		}
	}
	bannedAt := time.Now()
	if rateRefused < 4 {
		t.Errorf("%d calls refused for the rate before the ban (of %d refused), want at least 4", rateRefused, refused)
	}
	eventually(t, 5*time.Second, "b closes its connections to a", func() bool {
		return b.Host().Network().Connectedness(a.ID()) != network.Connected
	})
	// While banned, a can neither connect nor call.
	ctx := network.WithForceDirectDial(ctxFor(t, 5*time.Second), "test")
	if err := a.ConnectAddr(ctx, lpeer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err == nil {
		// a's side of the handshake may finish before b refuses: the
		// connection must not stay, and no call may pass.
		if msg := failure(a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "echo", map[string]any{"text": "banned"})); msg == "" && time.Since(bannedAt) < banFor {
			t.Fatal("a banned peer's call went through")
		}
	}
	// The other peer keeps its service.
	mustEcho(t, c, b, "during a's ban")

	time.Sleep(time.Until(bannedAt.Add(banFor)))
	eventually(t, 5*time.Second, "a reconnects after its ban", func() bool {
		return a.ConnectAddr(network.WithForceDirectDial(ctxFor(t, 5*time.Second), "ban over"), lpeer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}) == nil &&
			callEcho(t, a, b, "echo", "after the ban") == nil
	})
	mustEcho(t, c, b, "after a's ban")
}

func TestPeerSendingBrokenFramesIsBanned(t *testing.T) {
	b := newNode(t, node.WithMaxMessageSize(4096), node.WithLimits(limits.Config{Strikes: 4, BanFor: time.Minute}))
	a, c := newNode(t), newNode(t)
	connect(t, a, b)
	connect(t, c, b)
	mustEcho(t, a, b, "before")

	oversize := []byte(`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("a", 8192) + `"}}` + "\n")
	frames := [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), oversize, []byte("{not json}\n"), oversize}
	for i, data := range frames {
		if _, banned := b.Limits().Banned(a.ID()); banned {
			t.Fatalf("banned after %d broken frames, want %d", i, len(frames))
		}
		s, err := a.Host().NewStream(ctxFor(t, 3*time.Second), b.ID(), transport.ProtocolID(transport.DefaultServer))
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		s.Write(data)
		switch {
		case i == len(frames)-1: // the strike that bans: the connection closes
			readUntilFail(t, s)
		case bytes.Equal(data, oversize): // answered, and a strike all the same
			answeredTooLarge(t, s, 4096)
		default:
			if err := readUntilFail(t, s); !errors.Is(err, network.ErrReset) {
				t.Errorf("frame %d: the stream ended with %v, want a reset", i, err)
			}
		}
		s.Reset()
	}
	eventually(t, 5*time.Second, "a banned", func() bool {
		_, banned := b.Limits().Banned(a.ID())
		return banned
	})
	eventually(t, 5*time.Second, "b closes its connections to a", func() bool {
		return b.Host().Network().Connectedness(a.ID()) != network.Connected
	})
	if msg := failure(a.CallTool(ctxFor(t, 5*time.Second), b.ID(), "echo", map[string]any{"text": "banned"})); msg == "" {
		t.Error("a banned peer's call went through")
	}
	mustEcho(t, c, b, "c is still served")
}

// A newcomer gets in, however many streams identities that cost nothing to
// make hold open without a word (or with a handshake and nothing after):
// the node makes room by evicting theirs before its resource manager would
// refuse a stream on the server's protocol (issue 14: 2,047 idle streams
// kept a new peer out).
func TestNewcomerGetsInPastIdleStreams(t *testing.T) {
	const perProtocol = 32
	b := newNode(t, node.WithLimits(limits.Config{MaxStreamsPerProtocol: perProtocol}))
	flood := func(identities, streams int, handshake bool) {
		for range identities {
			h := newNode(t).Host() // an identity that sends raw bytes only
			if err := h.Connect(ctxFor(t, 3*time.Second), lpeer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
				t.Fatal(err)
			}
			for j := range streams {
				s, err := h.NewStream(ctxFor(t, 3*time.Second), b.ID(), transport.ProtocolID(transport.DefaultServer))
				if err != nil {
					continue // refused: a newcomer may find the same
				}
				if handshake {
					s.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"idle","version":"1"}}}` + "\n"))
				} else if j%2 == 0 {
					s.Write([]byte("\n"))
				}
			}
		}
	}
	flood(6, 12, false)
	a := newNode(t)
	connect(t, a, b)
	mustEcho(t, a, b, "past silent streams")

	flood(6, 12, true)
	c := newNode(t)
	connect(t, c, b)
	mustEcho(t, c, b, "past idle sessions")
	mustEcho(t, a, b, "the first newcomer still served")
}

// A session the node relays (here, a re-shared server) is bounded as one it
// serves: a frame over the node's own decoded-size bounds is answered with
// the error that names the bound and goes no further, and the session goes
// on. C, beyond, would take the frame (its bounds are the defaults).
func TestRelayedSessionIsGuardedAsAServedOne(t *testing.T) {
	b, c := newNode(t, node.WithLimits(limits.Config{MaxMessageValues: 1000})), newNode(t)
	connect(t, b, c)
	if err := b.SharePeer("far", c.ID(), transport.DefaultServer); err != nil {
		t.Fatal(err)
	}
	h := newNode(t).Host()
	if err := h.Connect(ctxFor(t, 3*time.Second), lpeer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctxFor(t, 3*time.Second), b.ID(), transport.ProtocolID("far"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	r := bufio.NewReader(s)
	read := func() string {
		t.Helper()
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return line
	}
	keys := make([]string, 5000)
	for i := range keys {
		keys[i] = fmt.Sprintf(`"k%d":0`, i)
	}
	s.Write([]byte(`{"jsonrpc":"2.0","id":7,"method":"ping","params":{` + strings.Join(keys, ",") + "}}\n"))
	if got := read(); !strings.Contains(got, `"id":7`) || !strings.Contains(got, "too complex") {
		t.Fatalf("a frame over the relay's bounds: %s, want an error for id 7 naming the bound", got)
	}
	s.Write([]byte(`{"jsonrpc":"2.0","id":8,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n"))
	if got := read(); !strings.Contains(got, `"id":8`) || !strings.Contains(got, `"result"`) {
		t.Fatalf("the session after the refused frame: %s, want initialize's result", got)
	}
}

// A relayed session outlives the handshake timeout that bounds how long its
// stream may stay silent at first: the relay does not follow its requests,
// so no timeout of the served sessions' may end a call that takes longer.
func TestRelayedSessionOutlivesTheHandshakeTimeout(t *testing.T) {
	b, c := newNode(t, node.WithLimits(limits.Config{HandshakeTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})), newNode(t)
	started, open := addGateTool(c)
	connect(t, b, c)
	if err := b.SharePeer("far", c.ID(), transport.DefaultServer); err != nil {
		t.Fatal(err)
	}
	a := newNode(t)
	connect(t, a, b)
	done := make(chan error, 1)
	go func() {
		res, err := a.CallTool(ctxFor(t, 10*time.Second), b.ID(), "far/gate", nil)
		if err == nil && res.IsError {
			err = fmt.Errorf("tool error: %v", res.Content)
		}
		done <- err
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the call never reached c")
	}
	// The call is held past both timeouts, the client silent meanwhile.
	time.Sleep(time.Second)
	close(open)
	if err := <-done; err != nil {
		t.Fatalf("a relayed call longer than the handshake timeout: %v", err)
	}
}
