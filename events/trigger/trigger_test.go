package trigger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/events/feed"
	"github.com/mcpmesh/mcpmesh/events/trigger"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/tasks"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// fast makes subscriptions reconnect quickly in tests.
var fast = trigger.Options{Subscription: feed.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Liveness: 2 * time.Second}}

func newNode(t *testing.T, opts ...node.Option) *node.Node {
	t.Helper()
	n, err := node.New(append([]node.Option{node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func connect(t *testing.T, a, b *node.Node) {
	t.Helper()
	if _, err := a.Connect(context.Background(), b.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
}

// recorder is a tool that records the calls triggers make to it.
type recorder struct {
	mu      sync.Mutex
	calls   map[string]int // by argument "id"
	order   []string
	running int
	most    int
	hold    time.Duration
	causes  []*tasks.Cause
	ch      chan string
}

type recIn struct {
	ID   string `json:"id"`
	Kind string `json:"kind,omitempty"`
	N    int    `json:"n,omitempty"`
}

func addRecorder(n *node.Node, hold time.Duration) *recorder {
	r := &recorder{calls: map[string]int{}, hold: hold, ch: make(chan string, 10000)}
	node.AddTool(n, &sdkmcp.Tool{Name: "record"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, in recIn) (*sdkmcp.CallToolResult, any, error) {
		r.mu.Lock()
		r.calls[in.ID]++
		r.order = append(r.order, in.ID)
		r.running++
		r.most = max(r.most, r.running)
		r.mu.Unlock()
		if r.hold > 0 {
			time.Sleep(r.hold)
		}
		r.mu.Lock()
		r.running--
		r.mu.Unlock()
		r.ch <- in.ID
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "ok " + in.ID}}}, nil, nil
	})
	return r
}

func (r *recorder) wait(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	deadline := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case id := <-r.ch:
			out = append(out, id)
		case <-deadline:
			t.Fatalf("%d calls of %d", len(out), n)
		}
	}
	return out
}

func (r *recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case id := <-r.ch:
		t.Fatalf("an unexpected call for %s", id)
	case <-time.After(d):
	}
}

func (r *recorder) twice(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.calls {
		if n > 1 {
			t.Errorf("event %s ran %d times", id, n)
		}
	}
}

func declareJobs(t *testing.T, n *node.Node) {
	t.Helper()
	if err := n.DeclareEvent(events.Type{Name: "job.done", Description: "A job ended."}); err != nil {
		t.Fatal(err)
	}
}

func emit(t *testing.T, n *node.Node, from, count int, kind string) {
	t.Helper()
	for i := from; i < from+count; i++ {
		if _, err := n.Emit(context.Background(), events.Occurrence{Name: "job.done", Data: map[string]any{"id": fmt.Sprint("j", i), "kind": kind, "n": i}}); err != nil {
			t.Fatal(err)
		}
	}
}

func rule(name string, src *node.Node, call string) trigger.Rule {
	return trigger.Rule{Name: name, Event: "job.done", From: []string{src.ID().String()}, Call: call,
		Arguments: map[string]any{"id": "{{event.data.id}}", "n": "{{event.data.n}}"}, Rate: 1000, Burst: 1000}
}

func waitConnected(t *testing.T, e *trigger.Engine) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, s := range e.List() {
			for _, sub := range s.Subscriptions {
				ok = ok && sub.Connected
			}
			ok = ok && len(s.Subscriptions) > 0
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("trigger subscriptions: %+v", e.List())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Each firing is a root task caused by the event, that reaches another
// node (whose policy and audit see it), with arguments from the payload;
// the firing is audited on the trigger's node.
func TestFiringIsARootTaskCausedByTheEvent(t *testing.T) {
	src, sub, tool := newNode(t), newNode(t), newNode(t)
	connect(t, sub, src)
	connect(t, sub, tool)
	declareJobs(t, src)
	rec := addRecorder(tool, 0)
	e := trigger.New(sub, fast)
	defer e.Close()
	if err := e.Add(rule("jobs", src, tool.ID().String()+"/node/record")); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, e)
	emit(t, src, 1, 1, "x")
	if got := rec.wait(t, 1); got[0] != "j1" {
		t.Fatalf("called with %v", got)
	}
	var root tasks.Task
	deadline := time.Now().Add(5 * time.Second)
	for root.ID == "" || !root.State.Terminal() {
		for _, tk := range sub.Tasks() {
			if tk.Cause != nil {
				root = tk
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ended root task with a cause: %+v", sub.Tasks())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if root.Role != tasks.Call || root.Cause.Event != "job.done" || root.Cause.Source != src.ID().String() || root.Cause.Trigger != "jobs" || root.State != tasks.Completed {
		t.Errorf("root task: %+v cause %+v", root, root.Cause)
	}
	tree, err := sub.TaskTree(context.Background(), root.ID)
	if err != nil || len(tree.Children) != 1 || tree.Children[0].Peer != tool.ID().String() || tree.Cause == nil {
		t.Errorf("tree: %+v, %v", tree, err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		recs := sub.Audit().Recent(audit.Filter{Limit: 10})
		var found *audit.Record
		for i := range recs {
			if recs[i].Server == trigger.AuditServer {
				found = &recs[i]
			}
		}
		if found != nil {
			if found.Name != "jobs" || found.Caller != src.ID().String() || found.Task != root.ID || found.Outcome != audit.OK {
				t.Errorf("audit of the firing: %+v (root %s)", found, root.ID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit record of the firing: %+v", recs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if recs := tool.Audit().Recent(audit.Filter{Tool: "record"}); len(recs) != 1 || recs[0].Caller != sub.ID().String() {
		t.Errorf("the called node's audit: %+v", recs)
	}
}

// The subscriber restarts: it resumes from its cursor, so that every event
// the source kept runs once, none twice. The restart is hard on purpose:
// its state file is put back to what it was after the first firing (as if
// it died right then), so the events after that are delivered again and
// must be recognised.
func TestResumeAfterSubscriberRestart(t *testing.T) {
	src := newNode(t)
	declareJobs(t, src)
	home := t.TempDir()
	key, _, _ := crypto.GenerateEd25519Key(nil)
	stateDir := filepath.Join(home, "triggers")

	start := func() (*node.Node, *trigger.Engine, *recorder) {
		n, err := node.New(node.WithIdentity(key), node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen(), node.WithHome(home))
		if err != nil {
			t.Fatal(err)
		}
		rec := addRecorder(n, 0)
		connect(t, n, src)
		opts := fast
		opts.StateDir = stateDir
		e := trigger.New(n, opts)
		if err := e.Add(rule("jobs", src, "self/node/record")); err != nil {
			t.Fatal(err)
		}
		waitConnected(t, e)
		return n, e, rec
	}
	n, e, rec := start()
	emit(t, src, 0, 1, "x")
	rec.wait(t, 1)
	early, err := os.ReadFile(filepath.Join(stateDir, "jobs.json"))
	if err != nil {
		t.Fatal(err)
	}
	emit(t, src, 1, 4, "x")
	rec.wait(t, 4)
	e.Close()
	n.Close()
	if err := os.WriteFile(filepath.Join(stateDir, "jobs.json"), early, 0o600); err != nil {
		t.Fatal(err)
	}
	// Its state now says: j0 fired, cursor after j0. j1..j4 fired too, but
	// the state forgot; the source still has them. Put back the fired ones
	// the way a crash between firing and writing cannot lose them: the
	// seen set is written before each firing, so only the cursor lags.
	var st struct {
		Event   string            `json:"event"`
		Cursors map[string]string `json:"cursors"`
		Seen    []string          `json:"seen"`
	}
	json.Unmarshal(early, &st)
	for i := 1; i < 5; i++ {
		evs, _, _ := src.Events().Log().Read(0, 100)
		for _, ev := range evs {
			if strings.Contains(string(ev.Data), fmt.Sprintf(`"j%d"`, i)) {
				st.Seen = append(st.Seen, src.ID().String()+"/"+ev.ID)
			}
		}
	}
	lagged, _ := json.Marshal(st)
	os.WriteFile(filepath.Join(stateDir, "jobs.json"), lagged, 0o600)

	emit(t, src, 5, 3, "x") // while the subscriber is down
	n2, e2, rec2 := start()
	defer n2.Close()
	defer e2.Close()
	got := rec2.wait(t, 3)
	slices.Sort(got) // firings run concurrently
	if strings.Join(got, ",") != "j5,j6,j7" {
		t.Fatalf("after the restart: %v; want j5, j6, j7 (j1..j4 ran before it)", got)
	}
	rec2.none(t, 200*time.Millisecond)
	rec.twice(t)
	rec2.twice(t)
	if s := e2.List()[0]; s.Counts.Duplicate != 4 || s.Counts.Fired != 3 {
		t.Errorf("counts after the restart: %+v; want 4 duplicates dropped, 3 fired", s.Counts)
	}
}

// The source restarts (with its home: its event log is a file): the
// trigger's subscription reconnects and resumes, firing what was emitted
// while it was cut off (before the restart and after), and nothing twice.
func TestSourceRestartResumes(t *testing.T) {
	home := t.TempDir()
	key, _, _ := crypto.GenerateEd25519Key(nil)
	startSource := func(addr string) *node.Node {
		n, err := node.New(node.WithIdentity(key), node.WithListenAddrs(addr), node.WithOpen(), node.WithHome(home))
		if err != nil {
			t.Fatal(err)
		}
		declareJobs(t, n)
		return n
	}
	src := startSource("/ip4/127.0.0.1/tcp/0")
	addr := src.Host().Addrs()[0].String()
	sub := newNode(t)
	rec := addRecorder(sub, 0)
	connect(t, sub, src)
	e := trigger.New(sub, fast)
	defer e.Close()
	if err := e.Add(rule("jobs", src, "self/node/record")); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, e)
	emit(t, src, 0, 2, "x")
	rec.wait(t, 2)
	// The source cuts the subscriber off (its grant goes), logs j2 that
	// the subscriber does not get, and restarts (open again).
	src.SetPolicy(policy.Closed())
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.List()[0].Subscriptions[0].LastError, "not permitted") {
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber was not cut off: %+v", e.List())
		}
		time.Sleep(10 * time.Millisecond)
	}
	emit(t, src, 2, 1, "x")
	src.Close()
	src = startSource(addr)
	defer src.Close()
	emit(t, src, 3, 1, "x")
	sub.Host().Peerstore().AddAddrs(src.ID(), src.Host().Addrs(), time.Hour)
	got := rec.wait(t, 2)
	slices.Sort(got)
	if strings.Join(got, ",") != "j2,j3" {
		t.Fatalf("after the source's restart: %v", got)
	}
	rec.none(t, 200*time.Millisecond)
	rec.twice(t)
}

// A peer without a grant cannot subscribe: its trigger says why and runs
// nothing; the source audits the refusal.
func TestTriggerWithoutGrant(t *testing.T) {
	src, sub := newNode(t), newNode(t)
	connect(t, sub, src)
	declareJobs(t, src)
	p, _ := policy.Parse(fmt.Appendf(nil, `{"grants": [{"peers": [%q], "tools": ["*"]}]}`, sub.ID()))
	src.SetPolicy(p) // tools, but no events
	rec := addRecorder(sub, 0)
	e := trigger.New(sub, fast)
	defer e.Close()
	if err := e.Add(rule("jobs", src, "self/node/record")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := e.List()[0]
		if len(s.Subscriptions) == 1 && strings.Contains(s.Subscriptions[0].LastError, "not permitted") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trigger status: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	emit(t, src, 0, 3, "x")
	rec.none(t, 300*time.Millisecond)
	if recs := src.Audit().Recent(audit.Filter{Outcome: audit.Refused}); len(recs) == 0 || recs[0].Method != events.MethodStream || recs[0].Reason != "policy" {
		t.Errorf("the source's audit: %+v", recs)
	}
}

// A storm of events is held by the trigger's limits: never more firings
// at once than maxConcurrent, never more started than the rate allows,
// and none lost while the source keeps them.
func TestTriggerStormHeldByLimits(t *testing.T) {
	src, sub := newNode(t), newNode(t)
	connect(t, sub, src)
	declareJobs(t, src)
	rec := addRecorder(sub, 5*time.Millisecond)
	e := trigger.New(sub, fast)
	defer e.Close()
	r := rule("storm", src, "self/node/record")
	r.Rate, r.Burst, r.MaxConcurrent = 40, 4, 2
	if err := e.Add(r); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, e)
	const storm = 60
	emit(t, src, 0, storm, "x")
	first := rec.wait(t, 1)
	t0 := time.Now()
	got := append(first, rec.wait(t, storm-1)...)
	elapsed := time.Since(t0)
	// The limiter allows burst + rate × time: more would be a leak (the
	// machine being slow only makes it fewer).
	if most := float64(r.Burst) + r.Rate*elapsed.Seconds() + 1; float64(storm) > most {
		t.Errorf("%d firings in %v; the limits allow %.0f", storm, elapsed, most)
	}
	rec.mu.Lock()
	most := rec.most
	rec.mu.Unlock()
	if most > r.MaxConcurrent {
		t.Errorf("%d firings ran at once; maxConcurrent is %d", most, r.MaxConcurrent)
	}
	if len(got) != storm {
		t.Fatalf("%d of %d fired", len(got), storm)
	}
	rec.twice(t)
	deadline := time.Now().Add(5 * time.Second)
	for c := e.List()[0].Counts; c.Held == 0 || c.Fired != storm; c = e.List()[0].Counts {
		if time.Now().After(deadline) {
			t.Fatalf("counts: %+v; want events held, all fired", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A filter that matches nothing runs nothing: the source drops what does
// not match, and the one event that matches, sent last, fires alone.
func TestFilterMatchingNothingRunsNothing(t *testing.T) {
	src, sub := newNode(t), newNode(t)
	connect(t, sub, src)
	declareJobs(t, src)
	rec := addRecorder(sub, 0)
	e := trigger.New(sub, fast)
	defer e.Close()
	r := rule("picky", src, "self/node/record")
	r.Where = json.RawMessage(`{"kind":"wanted"}`)
	if err := e.Add(r); err != nil {
		t.Fatal(err)
	}
	nothing := rule("nothing", src, "self/node/record")
	nothing.Where = json.RawMessage(`{"kind":"never"}`)
	if err := e.Add(nothing); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, e)
	emit(t, src, 0, 50, "other")
	emit(t, src, 50, 1, "wanted")
	if got := rec.wait(t, 1); got[0] != "j50" {
		t.Fatalf("fired for %v", got)
	}
	rec.none(t, 300*time.Millisecond)
	for _, s := range e.List() {
		if s.Counts.Received > map[string]int{"picky": 1, "nothing": 0}[s.Rule.Name] {
			t.Errorf("%s received %d events: the source should have filtered them", s.Rule.Name, s.Counts.Received)
		}
	}
}

// A trigger that fires on the end of the tasks it starts stops at the
// depth bound instead of looping.
func TestTriggerLoopStops(t *testing.T) {
	n := newNode(t)
	rec := addRecorder(n, 0)
	e := trigger.New(n, fast)
	defer e.Close()
	if err := e.Add(trigger.Rule{Name: "loop", Event: events.TaskEnded, From: []string{"self"}, Where: json.RawMessage(`{"tool":"record"}`),
		Call: "self/node/record", Arguments: map[string]any{"id": "{{event.id}}"}, Rate: 1000, Burst: 1000}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, e)
	if _, err := n.CallServerTool(context.Background(), n.ID(), "node", "record", recIn{ID: "seed"}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 1+trigger.MaxDepth)
	rec.none(t, 300*time.Millisecond)
	if c := e.List()[0].Counts; c.Loop != 1 || c.Fired != trigger.MaxDepth {
		t.Errorf("counts: %+v; want %d firings and one event refused for its depth", c, trigger.MaxDepth)
	}
	if recs := n.Audit().Recent(audit.Filter{Outcome: audit.Refused}); len(recs) != 1 || !strings.Contains(recs[0].Reason, "loop") {
		t.Errorf("audit of the refused event: %+v", recs)
	}
}

func TestRuleChecks(t *testing.T) {
	ok := trigger.Rule{Name: "r", Event: "job.done", Call: "self/node/x"}
	if err := ok.Check(); err != nil || ok.Rate != trigger.DefaultRate || ok.From[0] != trigger.AnyProvider {
		t.Fatalf("Check: %v %+v", err, ok)
	}
	for name, r := range map[string]trigger.Rule{
		"no name":       {Event: "job.done", Call: "self/x"},
		"bad name":      {Name: "a b", Event: "job.done", Call: "self/x"},
		"no target":     {Name: "r", Event: "job.done"},
		"two targets":   {Name: "r", Event: "job.done", Call: "self/x", Agent: "a"},
		"bad call":      {Name: "r", Event: "job.done", Call: "nobody/node/x"},
		"bad from":      {Name: "r", Event: "job.done", Call: "self/x", From: []string{"nobody"}},
		"bad where":     {Name: "r", Event: "job.done", Call: "self/x", Where: json.RawMessage(`[1]`)},
		"bad rate":      {Name: "r", Event: "job.done", Call: "self/x", Rate: 1e6},
		"bad timeout":   {Name: "r", Event: "job.done", Call: "self/x", Timeout: "soon"},
		"task no agent": {Name: "r", Event: "job.done", Call: "self/x", Task: "t"},
		"agent path":    {Name: "r", Event: "job.done", Agent: "x/y"},
	} {
		if err := r.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

var _ trigger.Node = (*node.Node)(nil)
