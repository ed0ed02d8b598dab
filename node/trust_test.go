package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/proto"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/metrics"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/peer/trust"
	"github.com/mcpmesh/mcpmesh/proto/delegationpb"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// mustPolicy parses a policy written with %s for peer IDs.
func mustPolicy(t *testing.T, format string, ids ...any) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf(format, ids...)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sideEffect is a tool that counts its runs: a refused call must never run.
func sideEffect(n *node.Node, name string) *atomic.Int32 {
	var runs atomic.Int32
	node.AddTool(n, &sdkmcp.Tool{Name: name, Description: "does something that matters"},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, struct{}, error) {
			runs.Add(1)
			return nil, struct{}{}, nil
		})
	return &runs
}

// sideEffectAnnounced adds a side-effect tool to n and waits until n's SDK
// server has told its sessions (one from from, opened for it) of the new
// tool. The SDK tells them 10 ms later, every session open by then: a test
// that counts list_changed notices on sessions it opens next must not see
// this one.
func sideEffectAnnounced(t *testing.T, from, n *node.Node, name string) *atomic.Int32 {
	t.Helper()
	_, told := listerSession(t, from, n, transport.DefaultServer)
	runs := sideEffect(n, name)
	if !toldListChangedWithin(5*time.Second, told) {
		t.Fatalf("%s did not announce its new tool %s", n.ID(), name)
	}
	return runs
}

func notPermitted(t *testing.T, err error, res *sdkmcp.CallToolResult) {
	t.Helper()
	if err == nil {
		t.Fatalf("call went through: %+v", res)
	}
	if !strings.Contains(err.Error(), "not permitted") {
		t.Fatalf("want a not-permitted error, got: %v", err)
	}
	var je *jsonrpc.Error
	if !errorsAs(err, &je) || je.Code != trust.CodeNotPermitted {
		t.Fatalf("want JSON-RPC code %d, got %v", trust.CodeNotPermitted, err)
	}
}

func toolNames(t *testing.T, a *node.Node, p lpeer.ID) []string {
	t.Helper()
	tools, err := a.ListTools(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools {
		names = append(names, tl.Name)
	}
	return names
}

// lastAudit returns the newest audit record of n for tool name.
func lastAudit(t *testing.T, n *node.Node, name string) audit.Record {
	t.Helper()
	var rec audit.Record
	waitUntil(t, "audit record of "+name, 3*time.Second, func() bool {
		recs := n.Audit().Recent(audit.Filter{Tool: name})
		if len(recs) == 0 {
			return false
		}
		rec = recs[len(recs)-1]
		return true
	})
	return rec
}

func TestClosedByDefault(t *testing.T) {
	b := newNode(t, node.WithPolicy(nil)) // no grants: closed
	runs := sideEffect(b, "pay")
	a := newNode(t)
	connect(t, a, b)

	if names := toolNames(t, a, b.ID()); len(names) != 0 {
		t.Fatalf("a closed node listed %v to a stranger", names)
	}
	res, err := a.CallTool(context.Background(), b.ID(), "node/pay", nil)
	notPermitted(t, err, res)
	if runs.Load() != 0 {
		t.Fatal("the refused call ran")
	}
	rec := lastAudit(t, b, "pay")
	if rec.Outcome != audit.Refused || rec.Reason != "policy" || rec.Caller != a.ID().String() {
		t.Fatalf("audit: %+v", rec)
	}
	// The owner still calls its own node.
	if _, err := b.CallTool(context.Background(), b.ID(), "node/pay", nil); err != nil {
		t.Fatalf("own call: %v", err)
	}
}

func TestPolicyGrantsPerToolAndGroup(t *testing.T) {
	a, c := newNode(t), newNode(t)
	b := newNode(t)
	runs := sideEffect(b, "pay")
	b.SetPolicy(mustPolicy(t, `{"groups":{"friends":["%s"]},"grants":[{"peers":["friends"],"server":"node","tools":["echo"]}]}`, a.ID()))
	connect(t, a, b)
	connect(t, c, b)

	if names := toolNames(t, a, b.ID()); len(names) != 1 || names[0] != "echo" {
		t.Fatalf("a (a friend) sees %v, want [echo]", names)
	}
	if _, err := a.CallTool(context.Background(), b.ID(), "echo", echoIn{Text: "hi"}); err != nil {
		t.Fatalf("granted call: %v", err)
	}
	res, err := a.CallTool(context.Background(), b.ID(), "node/pay", nil)
	notPermitted(t, err, res)
	if names := toolNames(t, c, b.ID()); len(names) != 0 {
		t.Fatalf("c (no grant) sees %v", names)
	}

	// A new policy applies at once, without restart.
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"tools":["*"]}]}`, c.ID()))
	if _, err := c.CallTool(context.Background(), b.ID(), "node/pay", nil); err != nil {
		t.Fatalf("after reload: %v", err)
	}
	res, err = a.CallTool(context.Background(), b.ID(), "node/echo", echoIn{Text: "hi"})
	notPermitted(t, err, res)
	// a is told its list changed (asynchronously): a bare name is then no
	// longer found in it.
	for deadline := time.Now().Add(3 * time.Second); ; {
		_, err := a.CallTool(context.Background(), b.ID(), "echo", echoIn{Text: "hi"})
		// b now lists a no tool at all: the error says so, and why.
		if err != nil && (strings.Contains(err.Error(), `no tool named "echo"`) || strings.Contains(err.Error(), `none named "echo"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bare name after the change: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if runs.Load() != 1 {
		t.Fatalf("pay ran %d times, want 1", runs.Load())
	}
}

func TestPolicyResourcesAndPrompts(t *testing.T) {
	b, a := newNode(t), newNode(t)
	docs := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "docs"}, nil)
	for _, uri := range []string{"file:///pub/a.txt", "file:///secret/b.txt"} {
		docs.AddResource(&sdkmcp.Resource{URI: uri, Name: uri},
			func(ctx context.Context, req *sdkmcp.ReadResourceRequest) (*sdkmcp.ReadResourceResult, error) {
				return &sdkmcp.ReadResourceResult{Contents: []*sdkmcp.ResourceContents{{URI: req.Params.URI, Text: "x"}}}, nil
			})
	}
	for _, name := range []string{"greet", "admin"} {
		docs.AddPrompt(&sdkmcp.Prompt{Name: name}, func(context.Context, *sdkmcp.GetPromptRequest) (*sdkmcp.GetPromptResult, error) {
			return &sdkmcp.GetPromptResult{Messages: []*sdkmcp.PromptMessage{{Role: "user", Content: &sdkmcp.TextContent{Text: "hi"}}}}, nil
		})
	}
	if err := b.Share("docs", docs); err != nil {
		t.Fatal(err)
	}
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"server":"docs","resources":["file:///pub/*"],"prompts":["greet"]}]}`, a.ID()))
	connect(t, a, b)
	ctx := context.Background()
	cs, err := a.Session(ctx, b.ID(), "docs")
	if err != nil {
		t.Fatal(err)
	}
	rl, err := cs.ListResources(ctx, nil)
	if err != nil || len(rl.Resources) != 1 || rl.Resources[0].URI != "file:///pub/a.txt" {
		t.Fatalf("resources: %v %+v", err, rl)
	}
	if _, err := cs.ReadResource(ctx, &sdkmcp.ReadResourceParams{URI: "file:///pub/a.txt"}); err != nil {
		t.Fatal(err)
	}
	_, err = cs.ReadResource(ctx, &sdkmcp.ReadResourceParams{URI: "file:///secret/b.txt"})
	if err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Fatalf("secret resource: %v", err)
	}
	pl, err := cs.ListPrompts(ctx, nil)
	if err != nil || len(pl.Prompts) != 1 || pl.Prompts[0].Name != "greet" {
		t.Fatalf("prompts: %v %+v", err, pl)
	}
	if _, err := cs.GetPrompt(ctx, &sdkmcp.GetPromptParams{Name: "admin"}); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Fatalf("admin prompt: %v", err)
	}
}

// delegationChain starts A → B → C: B's tool "relay" calls C's "pay" while
// serving A's call. It returns the nodes and pay's run counter.
func delegationChain(t *testing.T, aOpts ...node.Option) (a, b, c *node.Node, runs *atomic.Int32) {
	a, b, c = newNode(t, aOpts...), newNode(t), newNode(t)
	runs = sideEffect(c, "pay")
	cID := c.ID()
	node.AddTool(b, &sdkmcp.Tool{Name: "relay"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, struct{}, error) {
		_, err := b.CallTool(ctx, cID, "node/pay", nil)
		return nil, struct{}{}, err
	})
	connect(t, a, b)
	connect(t, b, c)
	return a, b, c, runs
}

func TestDelegationActingForDiffersFromAlone(t *testing.T) {
	a, b, c, runs := delegationChain(t)
	var seenFor atomic.Value
	node.AddTool(c, &sdkmcp.Tool{Name: "whofor"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, struct{}, error) {
		p, _ := node.OnBehalfOf(ctx)
		seenFor.Store(p)
		return nil, struct{}{}, nil
	})
	// C lets B pay only when B acts for A; B alone may call whofor only.
	c.SetPolicy(mustPolicy(t, `{"grants":[
		{"peers":["%s"],"for":["%s"],"tools":["pay"]},
		{"peers":["%s"],"tools":["whofor"]}]}`, b.ID(), a.ID(), b.ID()))
	ctx := context.Background()
	// B sees pay listed: it may call it, acting for A.
	if names := toolNames(t, b, c.ID()); !slices.Contains(names, "pay") || slices.Contains(names, "echo") {
		t.Fatalf("B sees %v on C, want pay and whofor", names)
	}

	if _, err := a.CallTool(ctx, b.ID(), "relay", nil); err != nil {
		t.Fatalf("A → B → C acting for A: %v", err)
	}
	if runs.Load() != 1 {
		t.Fatalf("pay ran %d times", runs.Load())
	}
	rec := lastAudit(t, c, "pay")
	if rec.Outcome != audit.OK || rec.Caller != b.ID().String() || rec.For != a.ID().String() || rec.Chain == "" {
		t.Fatalf("C's audit of the delegated call: %+v", rec)
	}
	res, err := b.CallTool(ctx, c.ID(), "node/pay", nil)
	notPermitted(t, err, res)
	if runs.Load() != 1 {
		t.Fatal("B alone got pay to run")
	}
	if _, err := b.CallTool(ctx, c.ID(), "whofor", nil); err != nil {
		t.Fatal(err)
	}
	if p := seenFor.Load().(lpeer.ID); p != "" {
		t.Fatalf("B's own call seen as acting for %s", p)
	}
}

func TestDelegationCannotBeWidened(t *testing.T) {
	// A delegates only "echo": B may not call pay on A's behalf. B refuses
	// to send such a call; C would refuse it anyway.
	scope := delegation.Scope{Tools: []string{"echo"}, Peers: []string{"*"}}
	a, b, c, runs := delegationChain(t, node.WithDelegation(scope, time.Minute))
	c.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"for":["*"],"tools":["*"]}]}`, b.ID()))
	_, err := a.CallTool(context.Background(), b.ID(), "relay", nil)
	if err == nil || !strings.Contains(err.Error(), "does not cover") {
		t.Fatalf("widened call: %v", err)
	}
	if runs.Load() != 0 {
		t.Fatal("pay ran")
	}
}

// presentChain calls tool on to from from with a delegation it builds.
func presentChain(t *testing.T, from, to *node.Node, tool string, wire []string) (*sdkmcp.CallToolResult, error) {
	t.Helper()
	ctx := context.Background()
	cs, err := from.Session(ctx, to.ID(), "node")
	if err != nil {
		t.Fatal(err)
	}
	return cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: tool, Meta: sdkmcp.Meta{delegation.MetaKey: wire}})
}

func TestDelegationReplayExpiryForgeryRefusedAndAudited(t *testing.T) {
	a, b, c, d := newNode(t), newNode(t), newNode(t), newNode(t)
	runsC, runsD := sideEffect(c, "pay"), sideEffect(d, "pay")
	for _, n := range []*node.Node{c, d} {
		n.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s", "%s"],"for":["%s"],"tools":["pay"]}]}`, b.ID(), a.ID(), a.ID()))
		connect(t, b, n)
	}
	connect(t, a, c)
	privA, privB := a.Host().Peerstore().PrivKey(a.ID()), b.Host().Peerstore().PrivKey(b.ID())
	chain := func(ttl time.Duration) []string {
		ab, err := delegation.Delegate(privA, b.ID(), delegation.FullScope(), time.Now().Add(ttl))
		if err != nil {
			t.Fatal(err)
		}
		bc, err := ab.Extend(privB, c.ID(), delegation.Scope{}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return bc.Encode()
	}
	good := chain(time.Minute)
	if _, err := presentChain(t, b, c, "pay", good); err != nil {
		t.Fatalf("valid chain: %v", err)
	}
	if runsC.Load() != 1 {
		t.Fatalf("pay ran %d times at C", runsC.Load())
	}

	res, err := presentChain(t, b, d, "pay", good) // replayed to another peer
	notPermitted(t, err, res)
	res, err = presentChain(t, a, c, "pay", good) // presented by someone it was not given to
	notPermitted(t, err, res)

	short := chain(200 * time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	res, err = presentChain(t, b, c, "pay", short) // expired
	notPermitted(t, err, res)

	forged := append([]string(nil), good...)
	raw, err := base64.StdEncoding.DecodeString(forged[0])
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 1 // the signature of A's link
	forged[0] = base64.StdEncoding.EncodeToString(raw)
	res, err = presentChain(t, b, c, "pay", forged)
	notPermitted(t, err, res)

	// A forged task path: B claims the call comes from A.
	m := tasks.Root(tasks.NewID(), a.ID().String(), 0, 0)
	meta := sdkmcp.Meta{delegation.MetaKey: good} // with a valid delegation: only the path is wrong
	m.Encode(meta)
	cs, err := b.Session(context.Background(), c.ID(), "node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(context.Background(), &sdkmcp.CallToolParams{Name: "pay", Meta: meta}); err == nil {
		t.Fatal("forged path accepted")
	}

	if runsC.Load() != 1 || runsD.Load() != 0 {
		t.Fatalf("refused calls ran: C %d, D %d", runsC.Load(), runsD.Load())
	}
	refused := c.Audit().Recent(audit.Filter{Tool: "pay", Outcome: audit.Refused})
	if len(refused) != 3 {
		t.Fatalf("C audited %d refusals, want 3 (other peer, expired, forged): %+v", len(refused), refused)
	}
	for _, r := range refused {
		if r.Reason != "delegation" {
			t.Fatalf("refusal reason %q", r.Reason)
		}
	}
	if recs := d.Audit().Recent(audit.Filter{Tool: "pay", Outcome: audit.Refused}); len(recs) != 1 {
		t.Fatalf("D audited %d refusals of the replay, want 1", len(recs))
	}
	if recs := c.Audit().Recent(audit.Filter{Tool: "pay", Outcome: audit.Error}); len(recs) != 1 {
		t.Fatalf("C audited %d failed calls (the forged path), want 1: %+v", len(recs), recs)
	}
}

func errorsAs(err error, target **jsonrpc.Error) bool {
	for err != nil {
		if je, ok := err.(*jsonrpc.Error); ok {
			*target = je
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestURLElicitationReachesTheRootsUser(t *testing.T) {
	var asked atomic.Value
	done := make(chan string, 1)
	a := newNode(t, node.WithElicitationHandler(func(_ context.Context, r *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
		asked.Store(r.Params)
		return &sdkmcp.ElicitResult{Action: "accept"}, nil
	}), node.WithElicitationCompleteHandler(func(_ context.Context, r *sdkmcp.ElicitationCompleteNotificationRequest) {
		done <- r.Params.ElicitationID
	}))
	b, c := newNode(t), newNode(t)
	node.AddTool(c, &sdkmcp.Tool{Name: "pay"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, struct{}, error) {
		res, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{Mode: "url", ElicitationID: "consent-1",
			URL: "https://bank.example/consent?payment=42", Message: "Approve the payment of 42 EUR"})
		if err != nil {
			return nil, struct{}{}, err
		}
		if res.Action != "accept" {
			return nil, struct{}{}, fmt.Errorf("consent: %s", res.Action)
		}
		// The user finished on the bank's page: say so, up the same path.
		if err := req.Session.NotifyElicitationComplete(ctx, &sdkmcp.ElicitationCompleteParams{ElicitationID: "consent-1"}); err != nil {
			return nil, struct{}{}, err
		}
		return nil, struct{}{}, nil
	})
	cID := c.ID()
	node.AddTool(b, &sdkmcp.Tool{Name: "relay"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, struct{}, error) {
		res, err := b.CallTool(ctx, cID, "node/pay", nil)
		if err == nil && res.IsError {
			err = res.GetError()
		}
		return nil, struct{}{}, err
	})
	connect(t, a, b)
	connect(t, b, c)
	res, err := a.CallTool(context.Background(), b.ID(), "node/relay", nil)
	if err != nil || res.IsError {
		t.Fatalf("call: %v %+v", err, res)
	}
	p, _ := asked.Load().(*sdkmcp.ElicitParams)
	if p == nil || p.Mode != "url" || p.URL != "https://bank.example/consent?payment=42" || p.ElicitationID != "consent-1" {
		t.Fatalf("A's user was asked %+v", p)
	}
	select {
	case id := <-done:
		if id != "consent-1" {
			t.Fatalf("completion of %q", id)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the completion of the URL question did not reach A's user")
	}
}

func TestMetricsCountCallsRefusalsAndLibp2p(t *testing.T) {
	m := metrics.New()
	b := newNode(t, node.WithMetrics(m), node.WithPolicy(nil))
	a := newNode(t)
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"tools":["echo"]}]}`, a.ID()))
	sideEffect(b, "pay")
	connect(t, a, b)
	ctx := context.Background()
	for range 3 {
		if _, err := a.CallTool(ctx, b.ID(), "node/echo", echoIn{Text: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.CallTool(ctx, b.ID(), "node/pay", nil); err == nil {
		t.Fatal("pay allowed")
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(body)
	for _, want := range []string{
		`mcpmesh_calls_total{outcome="ok",peer="` + a.ID().String() + `",server="node",tool="echo"} 3`,
		`mcpmesh_refusals_total{reason="policy"} 1`,
		`mcpmesh_call_duration_seconds_count{peer="` + a.ID().String() + `",server="node",tool="echo"} 3`,
		`libp2p_swarm_`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// widenedRecord seals a delegation link as a malicious delegate would: by
// hand, wider than what it was given.
type widenedRecord struct{ link *delegationpb.Link }

func (r *widenedRecord) Domain() string { return delegation.Domain }
func (r *widenedRecord) Codec() []byte  { return []byte("/mcpmesh/delegation/1") }
func (r *widenedRecord) MarshalRecord() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(r.link)
}
func (r *widenedRecord) UnmarshalRecord(data []byte) error {
	r.link = new(delegationpb.Link)
	return proto.Unmarshal(data, r.link)
}

func TestWidenedDelegationRefusedAtTheCallee(t *testing.T) {
	a, b, c := newNode(t), newNode(t), newNode(t)
	runs := sideEffect(c, "pay")
	c.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"for":["%s"],"tools":["*"]}]}`, b.ID(), a.ID()))
	connect(t, b, c)
	privA, privB := a.Host().Peerstore().PrivKey(a.ID()), b.Host().Peerstore().PrivKey(b.ID())

	// A lets B read only; B claims "*" for C.
	ab, err := delegation.Delegate(privA, b.ID(), delegation.Scope{Tools: []string{"read_*"}, Peers: []string{"*"}}, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ab.Extend(privB, c.ID(), delegation.Scope{Tools: []string{"*"}, Peers: []string{"*"}}, time.Time{}); !errors.Is(err, delegation.ErrWidened) {
		t.Fatalf("Extend widened: %v", err)
	}
	abWire := ab.Encode()
	abRaw, err := base64.StdEncoding.DecodeString(abWire[0])
	if err != nil {
		t.Fatal(err)
	}
	parent := sha256.Sum256(abRaw)
	now := time.Now()
	env, err := record.Seal(&widenedRecord{link: &delegationpb.Link{
		Issuer: []byte(b.ID()), Audience: []byte(c.ID()), Tools: []string{"*"}, Peers: []string{"*"},
		IssuedAtMs: now.UnixMilli(), ExpiresAtMs: now.Add(time.Minute).UnixMilli(), Parent: parent[:],
	}}, privB)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	res, err := presentChain(t, b, c, "pay", append(abWire, base64.StdEncoding.EncodeToString(raw)))
	notPermitted(t, err, res)
	if !strings.Contains(err.Error(), "widens") {
		t.Fatalf("refused for another reason: %v", err)
	}
	if runs.Load() != 0 {
		t.Fatal("pay ran on a widened delegation")
	}
	if rec := lastAudit(t, c, "pay"); rec.Outcome != audit.Refused || rec.Reason != "delegation" {
		t.Fatalf("audit: %+v", rec)
	}
}

func TestPolicyOnAReSharedServer(t *testing.T) {
	a, b, c := newNode(t), newNode(t), newNode(t)
	pay := sideEffect(c, "pay")
	connect(t, a, b)
	connect(t, b, c)
	if err := b.SharePeer("far", c.ID(), "node"); err != nil {
		t.Fatal(err)
	}
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"server":"far","tools":["echo"]}]}`, a.ID()))
	ctx := context.Background()
	cs, err := a.Session(ctx, b.ID(), "far")
	if err != nil {
		t.Fatal(err)
	}
	lt, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(lt.Tools) != 1 || lt.Tools[0].Name != "echo" {
		var names []string
		for _, tl := range lt.Tools {
			names = append(names, tl.Name)
		}
		t.Fatalf("A sees %v on the re-shared server, want [echo]", names)
	}
	if _, err := a.CallTool(ctx, b.ID(), "far/echo", echoIn{Text: "hi"}); err != nil {
		t.Fatalf("granted relayed call: %v", err)
	}
	res, err := a.CallTool(ctx, b.ID(), "far/pay", nil)
	notPermitted(t, err, res)
	if pay.Load() != 0 {
		t.Fatal("a refused relayed call ran")
	}

	// A peer with no grant on the server cannot open a session on it.
	d := newNode(t)
	connect(t, d, b)
	if _, err := d.CallTool(ctx, b.ID(), "far/echo", echoIn{Text: "hi"}); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Fatalf("a peer with no grant on the re-shared server: %v, want a refusal saying so", err)
	}
}

// TestPolicyChangeTellsPeersWhoseListsChange: a peer that listed a server is
// sent tools/list_changed when a new policy shows it more or less, and only
// then; its next list shows the new grants.
func TestPolicyChangeTellsPeersWhoseListsChange(t *testing.T) {
	b := newNode(t)
	a, c := newNode(t), newNode(t)
	connect(t, a, b)
	connect(t, c, b)
	sideEffectAnnounced(t, a, b, "pay")
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s","%s"],"tools":["echo"]}]}`, a.ID(), c.ID()))

	session := func(from *node.Node) (*sdkmcp.ClientSession, chan struct{}) {
		return listerSession(t, from, b, transport.DefaultServer)
	}
	names := func(cs *sdkmcp.ClientSession) []string { return sessionToolNames(t, cs) }
	aSession, aChanged := session(a)
	cSession, cChanged := session(c)
	if got := names(aSession); !slices.Equal(got, []string{"echo"}) {
		t.Fatalf("a sees %v, want [echo]", got)
	}
	names(cSession)
	_, dChanged := session(newNodeConnectedTo(t, b)) // never lists: nothing to refresh

	// a gains pay; c's view is the same.
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"tools":["*"]},{"peers":["%s"],"tools":["echo"]}]}`, a.ID(), c.ID()))
	if !toldListChangedWithin(5*time.Second, aChanged) {
		t.Fatal("a was not told its tool list changed")
	}
	if got := names(aSession); !slices.Equal(got, []string{"echo", "pay"}) {
		t.Fatalf("after the change a sees %v, want [echo pay]", got)
	}
	if toldListChangedWithin(500*time.Millisecond, cChanged) || toldListChangedWithin(500*time.Millisecond, dChanged) {
		t.Fatal("a peer whose list did not change was told it did")
	}

	// c loses everything.
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"tools":["*"]}]}`, a.ID()))
	if !toldListChangedWithin(5*time.Second, cChanged) {
		t.Fatal("c was not told its tool list changed")
	}
	if got := names(cSession); len(got) != 0 {
		t.Fatalf("c still sees %v", got)
	}
	if toldListChangedWithin(500*time.Millisecond, aChanged) {
		t.Fatal("a was told of a change that left its list alone")
	}
}

func newNodeConnectedTo(t *testing.T, to *node.Node) *node.Node {
	t.Helper()
	n := newNode(t)
	connect(t, n, to)
	return n
}

// listerSession opens a session of a plain SDK client (as any MCP host
// would hold) from from's host to server on to; the channel gets a value for
// each tools/list_changed notification.
func listerSession(t *testing.T, from, to *node.Node, server string) (*sdkmcp.ClientSession, chan struct{}) {
	t.Helper()
	changed := make(chan struct{}, 8)
	client := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "lister"}, &sdkmcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *sdkmcp.ToolListChangedRequest) { changed <- struct{}{} },
	})
	s, err := from.Host().NewStream(ctxFor(t, 3*time.Second), to.ID(), transport.ProtocolID(server))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := client.Connect(ctxFor(t, 3*time.Second), &transport.StreamTransport{Stream: s}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs, changed
}

func sessionToolNames(t *testing.T, cs *sdkmcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(ctxFor(t, 3*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tl := range res.Tools {
		out = append(out, tl.Name)
	}
	slices.Sort(out)
	return out
}

// toldListChangedWithin reports whether a list_changed came within d: long
// when one must come (a loaded machine is slow), short when none may.
func toldListChangedWithin(d time.Duration, ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// TestPolicyChangeTellsPeersOfAReSharedServer: the same, through a
// --share-peer relay: the relay filters the lists, so it is the relay that
// tells its callers when its policy changes what they see.
func TestPolicyChangeTellsPeersOfAReSharedServer(t *testing.T) {
	a, b, c := newNode(t), newNode(t), newNode(t)
	connect(t, a, b)
	connect(t, b, c)
	// c's SDK server tells its sessions of the new tool 10 ms later, every
	// session open by then: wait for it, so that it cannot reach a through
	// the relay below and pass for a notice of b's policy.
	sideEffectAnnounced(t, b, c, "pay")
	if err := b.SharePeer("far", c.ID(), "node"); err != nil {
		t.Fatal(err)
	}
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"server":"far","tools":["echo"]}]}`, a.ID()))
	cs, changed := listerSession(t, a, b, "far")
	if got := sessionToolNames(t, cs); !slices.Equal(got, []string{"echo"}) {
		t.Fatalf("a sees %v through the relay, want [echo]", got)
	}
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"server":"far","tools":["*"]}]}`, a.ID()))
	if !toldListChangedWithin(5*time.Second, changed) {
		t.Fatal("a was not told its list of the re-shared server changed")
	}
	if got := sessionToolNames(t, cs); !slices.Equal(got, []string{"echo", "pay"}) {
		t.Fatalf("after the change a sees %v, want [echo pay]", got)
	}
	// A grant on another server changes nothing a sees here.
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"server":"far","tools":["*"]},{"peers":["%s"],"server":"node","tools":["*"]}]}`, a.ID(), a.ID()))
	if toldListChangedWithin(500*time.Millisecond, changed) {
		t.Fatal("a was told of a change that left its list alone")
	}
	// Open, then closed again: both change a's view... open shows the same
	// two tools, so only the closing tells.
	b.SetPolicy(policy.Open())
	if toldListChangedWithin(500*time.Millisecond, changed) {
		t.Fatal("opening the node changed nothing a sees, yet a was told")
	}
	b.SetPolicy(nil)
	if !toldListChangedWithin(5*time.Second, changed) {
		t.Fatal("a was not told when the node closed")
	}
}
