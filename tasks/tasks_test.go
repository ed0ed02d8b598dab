package tasks

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestMetaWireRoundTrip(t *testing.T) {
	root := Root(NewID(), "A", 3, 2*time.Second)
	child := root.Child("B", 0, time.Second)
	meta := map[string]any{}
	child.Encode(meta)
	got, err := Decode(map[string]any{MetaKey: meta[MetaKey].(string)})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != child.ID || got.Root != root.Root || got.Parent != root.ID || strings.Join(got.Path, ",") != "A,B" || got.Budget != 2 {
		t.Errorf("got %+v, want %+v", got, child)
	}
	if got.TimeoutMs >= 1000 || got.TimeoutMs < 800 {
		t.Errorf("timeout %d ms, want a margin off 1000", got.TimeoutMs)
	}
	if tp := meta[TraceparentKey]; tp != "00-"+root.Root+"-"+child.ID[:16]+"-01" {
		t.Errorf("traceparent %v", tp)
	}
	for _, bad := range []string{"", "x y", strings.Repeat("a", 32) + " r - 1 0 0 A", child.String() + " extra"} {
		if _, err := Decode(map[string]any{MetaKey: bad}); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
	if m, err := Decode(map[string]any{}); m != nil || err != nil {
		t.Errorf("no context: %v %v", m, err)
	}
}

// The time a caller spent before sending a call (opening a session to the
// callee) comes off the callee's time left, and nothing else changes.
func TestSpend(t *testing.T) {
	child := Root(NewID(), "A", 3, 2*time.Second).Child("B", 0, time.Second)
	meta := map[string]any{}
	child.Encode(meta)
	Spend(meta, 300*time.Millisecond)
	got, err := Decode(meta)
	if err != nil {
		t.Fatal(err)
	}
	if want := child.TimeoutMs - 300; got.TimeoutMs != want {
		t.Errorf("timeout %d ms after 300 ms spent, want %d", got.TimeoutMs, want)
	}
	if got.ID != child.ID || got.Root != child.Root || got.Parent != child.Parent || got.Budget != child.Budget || strings.Join(got.Path, ",") != "A,B" {
		t.Errorf("got %+v, want %+v with less time", got, child)
	}
	Spend(meta, time.Hour)
	if got, _ := Decode(meta); got.TimeoutMs != 1 {
		t.Errorf("timeout %d ms after more than all of it was spent, want 1 (0 is none)", got.TimeoutMs)
	}
	Spend(meta, 900*time.Microsecond) // under the wire's millisecond: nothing
	for _, m := range []map[string]any{nil, {}, {MetaKey: Root(NewID(), "A", 3, 0).String()}} {
		before := fmt.Sprint(m)
		Spend(m, time.Second)
		if after := fmt.Sprint(m); after != before {
			t.Errorf("a context without a deadline changed: %s -> %s", before, after)
		}
	}
}

func TestCheck(t *testing.T) {
	m := &Meta{ID: NewID(), Root: NewID(), Path: []string{"A", "B"}, Budget: 1}
	for _, tc := range []struct {
		self, caller string
		budget       int
		want         error
	}{
		{"C", "B", 1, nil},
		{"C", "A", 1, ErrCaller},
		{"A", "B", 1, ErrLoop},
		{"B", "B", 1, nil}, // B calling its own server
		{"C", "B", 0, ErrBudget},
	} {
		m.Budget = tc.budget
		if err := Check(m, tc.self, tc.caller); !errors.Is(err, tc.want) {
			t.Errorf("Check(self %s, caller %s, budget %d) = %v, want %v", tc.self, tc.caller, tc.budget, err, tc.want)
		}
	}
}

func TestRegistryRetention(t *testing.T) {
	r := NewRegistry("A", Retention{TTL: time.Hour, Max: 10})
	for range 100 {
		e, err := r.Begin(Task{ID: NewID()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.Finish(Completed, "ok", nil, nil)
	}
	if n := len(r.List()); n != 10 {
		t.Errorf("kept %d ended tasks, want 10", n)
	}
	live, _ := r.Begin(Task{ID: "live-task-0123456789"}, nil)
	if _, err := r.Begin(Task{ID: live.ID()}, nil); err == nil {
		t.Error("a task ID was used twice")
	}
	live.Park()
	if _, ok := r.Resume(live.ID(), "someone else", nil); ok {
		t.Error("another caller resumed a parked task")
	}
	r2 := NewRegistry("A", Retention{TTL: time.Millisecond, Max: 10})
	e, _ := r2.Begin(Task{ID: NewID()}, nil)
	e.Finish(Failed, nil, errors.New("boom"), nil)
	time.Sleep(5 * time.Millisecond)
	if _, ok := r2.Get(e.ID()); ok {
		t.Error("an ended task outlived its TTL")
	}
}

// The hop budget a call arrives with is what its caller claims: it can only
// lower what this node allows, which is its own default less the hops the
// path says were made. Check clamps a claim above it (issue 14: a raw
// caller claiming 1000 got a 12-node chain).
func TestCheckClampsAClaimedBudget(t *testing.T) {
	path := func(n int) []string {
		var p []string
		for i := range n {
			p = append(p, string(rune('A'+i)))
		}
		return p
	}
	for _, tc := range []struct {
		path, claimed, want int
		err                 error
	}{
		{1, 1000, DefaultBudget, nil},
		{3, 1000, DefaultBudget - 2, nil},
		{3, 2, 2, nil}, // a lower claim stands
		{DefaultBudget, 1000, 1, nil},
		{DefaultBudget + 1, 5, 0, ErrBudget},
		{40, 1 << 30, 0, ErrBudget},
	} {
		p := path(tc.path)
		m := &Meta{ID: NewID(), Root: NewID(), Path: p, Budget: tc.claimed}
		err := Check(m, "self", p[len(p)-1])
		if !errors.Is(err, tc.err) || m.Budget != tc.want {
			t.Errorf("path of %d, budget %d claimed: budget %d, %v; want %d, %v", tc.path, tc.claimed, m.Budget, err, tc.want, tc.err)
		}
	}
	// An honest chain is never clamped: each hop passes on one less.
	m := Root(NewID(), "A", 0, 0)
	for i, self := range path(DefaultBudget)[1:] {
		before := m.Budget
		if err := Check(m, self, m.Path[len(m.Path)-1]); err != nil || m.Budget != before {
			t.Fatalf("hop %d: budget %d → %d, %v", i+1, before, m.Budget, err)
		}
		m = m.Child(self, 0, 0)
	}
}

// OnEnd hears of roots that end, once each, with their cause; not of tasks
// with a parent, nor of parked ones.
func TestRegistryOnEndRootsOnly(t *testing.T) {
	r := NewRegistry("A", Retention{})
	var ended []Task
	r.OnEnd(func(t Task) { ended = append(ended, t) })
	cause := &Cause{Event: "mcp.resource.updated", ID: "e-1", Source: "B", Trigger: "t"}
	root, _ := r.Begin(Task{ID: "root", Root: "root", Cause: cause}, nil)
	child, _ := r.Begin(Task{ID: "child", Root: "root", Parent: "root"}, nil)
	parked, _ := r.Begin(Task{ID: "parked", Root: "parked"}, nil)
	parked.Park()
	child.Finish(Completed, nil, nil, nil)
	root.Finish(Failed, nil, errors.New("boom"), nil)
	root.Finish(Completed, nil, nil, nil) // only the first Finish counts
	if len(ended) != 1 || ended[0].ID != "root" || ended[0].State != Failed || ended[0].Cause == nil || *ended[0].Cause != *cause {
		t.Fatalf("OnEnd saw %+v; want the root once, failed, with its cause", ended)
	}
	ended[0].Cause.Trigger = "changed"
	if got, _ := r.Get("root"); got.Cause.Trigger != "t" {
		t.Error("a snapshot's cause is shared with the registry")
	}
}

// A task's progress increases on its caller's token whatever its handler
// reports: a value not above the last one goes a hair above it (and a
// total it passes becomes unknown); values that increase pass as they are.
func TestAdvanceKeepsProgressIncreasing(t *testing.T) {
	r := NewRegistry("A", Retention{})
	e, err := r.Begin(Task{ID: NewID()}, func() {})
	if err != nil {
		t.Fatal(err)
	}
	type pt struct{ progress, total float64 }
	var got []pt
	for _, in := range []pt{{1, 3}, {2, 3}, {3, 3}, {1, 3}, {2, 3}, {5, 10}} { // run again from 1
		p, total := e.Advance(in.progress, in.total, "m")
		got = append(got, pt{p, total})
	}
	for i := 1; i < len(got); i++ {
		if got[i].progress <= got[i-1].progress {
			t.Fatalf("progress went from %v to %v: %v", got[i-1], got[i], got)
		}
	}
	if got[0] != (pt{1, 3}) || got[2] != (pt{3, 3}) || got[3].total != 0 || got[5] != (pt{5, 10}) {
		t.Errorf("got %v; want the increasing values as they are, the nudged ones without their total", got)
	}
	if p := e.Snapshot(false).Progress; p == nil || p.Progress != 5 || p.Total != 10 || p.Message != "m" {
		t.Errorf("recorded %+v, want the last sent", p)
	}
}

// A task whose handler reports no progress of its own passes its calls'
// progress up, added up: one call's as it is, calls one after another
// counting on, calls at the same time summed; a value that would not
// increase is not passed (nor nudged); once the handler reports its own,
// nothing of its calls is passed, and nothing once the task ended, was
// parked, or a call did; run again, it adds up anew. What is passed is
// recorded on the task.
func TestPassUpAddsUpTheCallsProgress(t *testing.T) {
	r := NewRegistry("A", Retention{})
	e, err := r.Begin(Task{ID: NewID()}, func() {})
	if err != nil {
		t.Fatal(err)
	}
	type sent struct {
		progress, total float64
		ok              bool
	}
	pass := func(c *CallProgress, progress, total float64, msg string) sent {
		p, tot, ok := c.PassUp(progress, total, msg)
		return sent{p, tot, ok}
	}
	check := func(what string, got, want sent) {
		t.Helper()
		if got != want {
			t.Errorf("%s: passed %+v, want %+v", what, got, want)
		}
	}

	first := e.PassCall()
	check("the first call's 0", pass(first, 0, 3, "starting"), sent{0, 3, true})
	check("the first call's 1/3", pass(first, 1, 3, "c1 1"), sent{1, 3, true})
	check("the first call counting back", pass(first, 0.5, 3, "c1 back"), sent{})
	check("the first call's 3/3", pass(first, 3, 3, "c1 3"), sent{3, 3, true})
	first.End()
	check("the first call after it ended", pass(first, 4, 4, "late"), sent{})

	second := e.PassCall()
	check("the second call's 0: not above 3", pass(second, 0, 2, "c2 0"), sent{})
	check("the second call's 1/2 counts on", pass(second, 1, 2, "c2 1"), sent{4, 5, true})
	third := e.PassCall() // at the same time as the second
	check("the third call's 1/4 adds up", pass(third, 1, 4, "c3 1"), sent{5, 9, true})
	check("the second call's 2/2", pass(second, 2, 2, "c2 2"), sent{6, 9, true})
	check("a total unknown", pass(third, 2, 0, "c3 2"), sent{7, 0, true})
	second.End()
	check("beyond float64", pass(third, math.Inf(1), 0, "inf"), sent{})
	if p := e.Snapshot(false).Progress; p == nil || p.Progress != 7 || p.Total != 0 || p.Message != "c3 2" {
		t.Errorf("recorded %+v, want the last passed", p)
	}

	// The handler's own: from then on, nothing of its calls.
	if p, total := e.Advance(1, 2, "own"); p <= 7 || total != 0 {
		t.Errorf("the handler's own 1/2 after 7 passed went out as %v/%v, want above 7, total unknown", p, total)
	}
	check("a call after the handler's own", pass(third, 100, 100, "c3 100"), sent{})
	fourth := e.PassCall()
	check("a new call after the handler's own", pass(fourth, 100, 100, "c4 100"), sent{})
	if p := e.Snapshot(false).Progress; p == nil || p.Message != "own" {
		t.Errorf("recorded %+v, want the handler's own", p)
	}

	// An ended task passes nothing.
	done, _ := r.Begin(Task{ID: NewID()}, func() {})
	c := done.PassCall()
	done.Finish(Completed, nil, nil, nil)
	check("a call of an ended task", pass(c, 1, 1, "late"), sent{})

	// A parked task passes nothing; run again, it adds up its calls anew
	// (they repeat the first run's work), passing once above the last.
	rerun, _ := r.Begin(Task{ID: NewID(), Caller: "B"}, func() {})
	before := rerun.PassCall()
	check("the first run's call", pass(before, 3, 3, "run 1"), sent{3, 3, true})
	rerun.Park()
	check("a call of a parked task", pass(before, 4, 4, "parked"), sent{})
	if _, ok := r.Resume(rerun.ID(), "B", func() {}); !ok {
		t.Fatal("not resumed")
	}
	again := rerun.PassCall()
	check("the run again's 2/3: not above 3", pass(again, 2, 3, "run 2"), sent{})
	check("a call of the run before", pass(before, 5, 5, "stale"), sent{})
	before.End() // adds nothing to the run again's sum
	check("the run again's 3.5/4", pass(again, 3.5, 4, "run 2"), sent{3.5, 4, true})

	// A sum beyond float64 is not passed.
	huge, _ := r.Begin(Task{ID: NewID()}, func() {})
	h1, h2 := huge.PassCall(), huge.PassCall()
	check("the largest float64", pass(h1, math.MaxFloat64, 0, "max"), sent{math.MaxFloat64, 0, true})
	check("a sum beyond float64", pass(h2, math.MaxFloat64, 0, "max"), sent{})
}
