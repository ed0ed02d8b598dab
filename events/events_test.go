package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func appendN(l *Log, name string, n int) []Event {
	var out []Event
	for i := range n {
		out = append(out, l.Append(Event{Name: name, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}))
	}
	return out
}

func ids(evs []Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, string(e.Data))
	}
	return strings.Join(s, " ")
}

// A subscriber that resumes from a cursor gets exactly what came after it;
// one from before what the log keeps, or of another log, starts at the
// oldest kept with truncated set; a cursor from the future is refused.
func TestLogCursors(t *testing.T) {
	l, _ := OpenLog(LogConfig{MaxEvents: 5})
	evs := appendN(l, "x", 3)
	pos, trunc, err := l.Position("", 0)
	if err != nil || pos != 3 || trunc {
		t.Fatalf("Position(now) = %d %v %v; want 3", pos, trunc, err)
	}
	got, _, _ := l.Read(0, 10)
	if ids(got) != `{"i":0} {"i":1} {"i":2}` || got[0].ID != l.Epoch()+"-1" {
		t.Fatalf("Read(0) = %s (first ID %s)", ids(got), got[0].ID)
	}
	pos, trunc, _ = l.Position(got[0].Cursor, 0)
	if next, _, _ := l.Read(pos, 10); pos != 1 || trunc || ids(next) != `{"i":1} {"i":2}` {
		t.Fatalf("resume after the first event: pos %d, %s", pos, ids(next))
	}
	appendN(l, "x", 5) // 8 in all: 1..3 dropped
	pos, trunc, _ = l.Position(evs[0].Cursor, 0)
	if !trunc || pos != 3 {
		t.Errorf("a cursor older than the log: pos %d truncated %v; want 3, true", pos, trunc)
	}
	pos, trunc, _ = l.Position("0123456789abcdef.2", 0)
	if !trunc || pos != 3 {
		t.Errorf("another log's cursor: pos %d truncated %v; want 3, true", pos, trunc)
	}
	if _, _, err := l.Position(l.Cursor(99), 0); !errors.Is(err, ErrCursor) {
		t.Errorf("a cursor ahead of the log: %v", err)
	}
	for _, bad := range []string{"x", "abc.", "abc.-1", strings.Repeat("a", 100) + ".1"} {
		if _, _, err := l.Position(bad, 0); !errors.Is(err, ErrCursor) {
			t.Errorf("cursor %q: %v", bad, err)
		}
	}
	if _, _, gap := l.Read(1, 10); !gap {
		t.Error("Read from a dropped position did not report the gap")
	}
}

// Bounds by size and age, and maxAgeMs on resuming.
func TestLogBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	l, _ := OpenLog(LogConfig{MaxBytes: 1000, MaxAge: time.Minute})
	l.now = func() time.Time { return now }
	big := json.RawMessage(`{"s":"` + strings.Repeat("a", 300) + `"}`)
	for range 10 {
		l.Append(Event{Name: "x", Data: big})
	}
	n, size := l.Len()
	if n != 2 || size > 1000 {
		t.Errorf("kept %d events, %d bytes; want 2 within 1000", n, size)
	}
	now = now.Add(30 * time.Second)
	mid := l.Append(Event{Name: "x", Data: json.RawMessage(`{}`)})
	now = now.Add(40 * time.Second) // the first two are past the minute
	if n, _ := l.Len(); n != 1 {
		l.Read(0, 1) // reading trims too
	}
	got, _, _ := l.Read(0, 10)
	if len(got) != 1 || got[0].ID != mid.ID {
		t.Errorf("after a minute: %v", got)
	}
	late := l.Append(Event{Name: "x", Data: json.RawMessage(`{"late":1}`)})
	pos, trunc, _ := l.Position(l.Cursor(10), 20*time.Second)
	if !trunc || pos != 11 {
		t.Errorf("maxAge past the cursor: pos %d truncated %v; want 11, true", pos, trunc)
	}
	if got, _, _ := l.Read(pos, 10); len(got) != 1 || got[0].ID != late.ID {
		t.Errorf("after the maxAge floor: %v", got)
	}
}

// A log with a folder outlives a restart: same epoch, same cursors, the
// events it kept.
func TestLogFileSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLog(LogConfig{Dir: dir, MaxEvents: 4})
	if err != nil {
		t.Fatal(err)
	}
	evs := appendN(l, "x", 5)
	evs = append(evs, l.Append(Event{ID: `up"stream\1`, Name: "x", Data: json.RawMessage(`{"i":5}`), Meta: &Meta{Depth: 2}}))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := OpenLog(LogConfig{Dir: dir, MaxEvents: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if l2.Epoch() != l.Epoch() {
		t.Fatal("the epoch changed across a restart")
	}
	pos, trunc, err := l2.Position(evs[3].Cursor, 0)
	if err != nil || trunc || pos != 4 {
		t.Fatalf("resume from before the restart: pos %d truncated %v err %v", pos, trunc, err)
	}
	got, _, _ := l2.Read(pos, 10)
	if ids(got) != `{"i":4} {"i":5}` || got[0].ID != evs[4].ID || got[1].ID != `up"stream\1` || got[1].Depth() != 2 {
		t.Fatalf("after the restart: %s (IDs %s, %s)", ids(got), got[0].ID, got[1].ID)
	}
	next := l2.Append(Event{Name: "x", Data: json.RawMessage(`{}`)})
	if next.ID != l.Epoch()+"-7" {
		t.Errorf("the next event is %s; numbering must go on", next.ID)
	}
	// Compaction keeps the file bounded.
	appendN(l2, "x", 50)
	st, _ := os.Stat(filepath.Join(dir, LogFile))
	if st.Size() > 2000 {
		t.Errorf("the file holds %d bytes for 4 small events kept", st.Size())
	}
}

func TestFilter(t *testing.T) {
	data := json.RawMessage(`{"uri":"file:///reports/q3.pdf","server":"files","n":3,"ok":true,"tags":["a","b"],"task":{"state":"failed"},"none":null}`)
	for where, want := range map[string]bool{
		``:                                      true,
		`{}`:                                    true,
		`{"uri":"file:///reports/*"}`:           true,
		`{"uri":"file:///other/*"}`:             false,
		`{"uri":"*q3*","server":"files"}`:       true,
		`{"uri":"*q3*","server":"docs"}`:        false,
		`{"n":3}`:                               true,
		`{"n":3.0}`:                             true,
		`{"n":"3"}`:                             false,
		`{"ok":true}`:                           true,
		`{"ok":false}`:                          false,
		`{"none":null}`:                         true,
		`{"missing":null}`:                      false,
		`{"tags.1":"b"}`:                        true,
		`{"task.state":["cancelled","failed"]}`: true,
		`{"task.state":["completed"]}`:          false,
		`{"task":"*"}`:                          false, // an object is not a string
	} {
		f, err := ParseFilter(json.RawMessage(where))
		if err != nil {
			t.Errorf("ParseFilter(%s): %v", where, err)
			continue
		}
		if got := f.Match(data); got != want {
			t.Errorf("filter %s: %v, want %v", where, got, want)
		}
	}
	if f, _ := ParseFilter(json.RawMessage(`{"a":1}`)); f.Match(json.RawMessage(`not json`)) {
		t.Error("a filter matched data that is not JSON")
	}
	many := map[string]int{}
	for i := range 17 {
		many[fmt.Sprint("k", i)] = i
	}
	tooMany, _ := json.Marshal(many)
	for _, bad := range []string{`[1]`, `{"a":{"b":1}}`, `{"":1}`, `{"a..b":1}`, `{"a":[]}`, string(tooMany),
		`{"a":"` + strings.Repeat("x", 300) + `"}`, `{"a.b.c.d.e.f.g.h.i":1}`} {
		if _, err := ParseFilter(json.RawMessage(bad)); err == nil {
			t.Errorf("ParseFilter(%.60s) accepted", bad)
		}
	}
}

func TestSourceEmitChecks(t *testing.T) {
	l, _ := OpenLog(LogConfig{})
	s := NewSource(l, 100)
	changed := 0
	s.OnChange(func() { changed++ })
	if err := s.Declare(Type{Name: "mcp.fake"}); err == nil {
		t.Error("a reserved name was declared")
	}
	if err := s.Declare(Type{Name: "job.done", Description: "A job ended."}); err != nil || changed != 1 {
		t.Fatalf("Declare: %v (changed %d)", err, changed)
	}
	if tp, _ := s.Declared("job.done"); len(tp.Delivery) != 2 || tp.Meta == nil || !tp.Meta.Replay || len(tp.InputSchema) == 0 {
		t.Errorf("declared type: %+v", tp)
	}
	for name, o := range map[string]Occurrence{
		"undeclared":  {Name: "job.other"},
		"not object":  {Name: "job.done", Data: []int{1}},
		"too big":     {Name: "job.done", Data: map[string]string{"s": strings.Repeat("a", 200)}},
		"bad ID":      {Name: "job.done", ID: "has space"},
		"raw garbage": {Name: "job.done", Data: json.RawMessage(`{"a":`)},
	} {
		if _, err := s.Emit(o); err == nil {
			t.Errorf("%s: emitted", name)
		}
	}
	e, err := s.Emit(Occurrence{Name: "job.done", ID: "stripe:evt_1", Data: map[string]int{"n": 1}, Depth: 2})
	if err != nil || e.ID != "stripe:evt_1" || e.Depth() != 2 || string(e.Data) != `{"n":1}` {
		t.Errorf("Emit = %+v, %v", e, err)
	}
	for _, bad := range []string{"", ".x", "a b", strings.Repeat("a", 129), "é"} {
		if CheckName(bad) == nil {
			t.Errorf("CheckName(%q) accepted", bad)
		}
	}
}

func TestSeen(t *testing.T) {
	s := NewSeen(3)
	for _, id := range []string{"a", "b", "c"} {
		if !s.Add(id) {
			t.Fatalf("%s not new", id)
		}
	}
	if s.Add("b") {
		t.Error("b added twice")
	}
	s.Add("d") // a goes
	if s.Has("a") || !s.Has("d") {
		t.Error("the oldest was not dropped")
	}
	s2 := NewSeen(3)
	s2.AddAll(s.IDs())
	if strings.Join(s2.IDs(), ",") != "b,c,d" {
		t.Errorf("IDs round trip: %v", s2.IDs())
	}
}

// Emitting is on hot paths (every root task that ends is an event): its
// allocations are budgeted.
func TestEmitAllocs(t *testing.T) {
	l, _ := OpenLog(LogConfig{MaxEvents: 100})
	s := NewSource(l, 0)
	s.DeclareBuiltin(Type{Name: "x"})
	data := json.RawMessage(`{"server":"files","uri":"file:///a"}`)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := s.Emit(Occurrence{Name: "x", Data: data}); err != nil {
			t.Fatal(err)
		}
	})
	// The ID, the cursor, the data check's scan; the log's slots are reused.
	if allocs > 6 {
		t.Errorf("Emit allocates %.1f times; the budget is 6", allocs)
	}
	f, _ := ParseFilter(json.RawMessage(`{"uri":"file:///*"}`))
	allocs = testing.AllocsPerRun(1000, func() {
		if !f.Match(data) {
			t.Fatal("no match")
		}
	})
	t.Logf("Emit %.1f, Filter.Match %.1f allocations", testing.AllocsPerRun(1000, func() { s.Emit(Occurrence{Name: "x", Data: data}) }), allocs)
	if allocs > 20 {
		t.Errorf("Filter.Match allocates %.1f times; the budget is 20", allocs)
	}
}

// BenchmarkEmit is the cost of logging one event like the one every root
// task's end makes (a struct of a dozen fields, encoded), in memory and in
// a file.
func BenchmarkEmit(b *testing.B) {
	type hop struct{ Task, Peer, Server, Tool string }
	data := struct {
		ID, Role, State, Server, Tool, Target, Caller, Error string
		DurationMs                                           int64
		Children                                             []hop
	}{"5d0c3f2a9e1b47c8a6d2e0f1b3c4d5e6", "call", "completed", "node", "plan", "12D3KooWA1b2C3d4E5f6G7h8J9k1L2m3N4p5Q6r7S8t9U1v2W3x4", "", "", 41,
		[]hop{{"9a1e3f2a9e1b47c8a6d2e0f1b3c4d5e6", "12D3KooWB1b2C3d4E5f6G7h8J9k1L2m3N4p5Q6r7S8t9U1v2W3x4", "node", "plan"}}}
	for _, dir := range []string{"", b.TempDir()} {
		name := "memory"
		if dir != "" {
			name = "file"
		}
		b.Run(name, func(b *testing.B) {
			l, _ := OpenLog(LogConfig{Dir: dir})
			defer l.Close()
			s := NewSource(l, 0)
			s.DeclareBuiltin(Type{Name: TaskEnded})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Emit(Occurrence{Name: TaskEnded, Data: data}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A log whose node stopped abruptly (no closing line) starts a new epoch:
// new events do not take the positions and IDs of those lost in the crash,
// and a cursor of before resumes from the oldest kept, told of the gap.
func TestLogAfterACrash(t *testing.T) {
	dir := t.TempDir()
	l, _ := OpenLog(LogConfig{Dir: dir})
	evs := appendN(l, "x", 3)
	l.abandon()
	f, _ := os.OpenFile(filepath.Join(dir, LogFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":4,"eventId":"torn","na`) // a write cut short
	f.Close()
	l2, err := OpenLog(LogConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if l2.Epoch() == l.Epoch() {
		t.Fatal("the epoch survived a crash")
	}
	next := l2.Append(Event{Name: "x", Data: json.RawMessage(`{}`)})
	if next.ID == evs[2].ID || strings.HasPrefix(next.ID, l.Epoch()) {
		t.Errorf("a new event took an ID of before the crash: %s", next.ID)
	}
	pos, trunc, err := l2.Position(evs[2].Cursor, 0)
	if err != nil || !trunc || pos != 0 {
		t.Fatalf("a cursor of before the crash: pos %d truncated %v err %v; want the oldest kept, truncated", pos, trunc, err)
	}
	if got, _, _ := l2.Read(pos, 10); len(got) != 4 || got[0].ID != evs[0].ID {
		t.Errorf("after the crash: %v", got)
	}
}
