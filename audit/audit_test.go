package audit_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/audit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
	)
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func rec(i int) audit.Record {
	return audit.Record{
		Time:     t0.Add(time.Duration(i) * time.Second),
		Caller:   fmt.Sprintf("peer%d", i%3),
		Server:   "node",
		Method:   "tools/call",
		Name:     fmt.Sprintf("tool%d", i%2),
		Outcome:  audit.OK,
		Duration: time.Duration(i) * time.Millisecond,
	}
}

func TestRecordJSONHasDurationMsAndNoGoDuration(t *testing.T) {
	r := audit.Record{Time: t0, Caller: "A", For: "B", Chain: "B → A", Server: "s", Method: "tools/call",
		Name: "echo", Task: "t1", Outcome: audit.Refused, Reason: "policy", Duration: 3200 * time.Microsecond}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m["durationMs"] != 3.2 || m["Duration"] != nil || m["for"] != "B" || m["outcome"] != "refused" {
		t.Fatalf("encoded as %s", data)
	}
	var back audit.Record
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back != r {
		t.Fatalf("round trip: got %+v, want %+v", back, r)
	}
	// Omitted when empty.
	data, _ = json.Marshal(audit.Record{Time: t0, Outcome: audit.OK})
	for _, k := range []string{`"for"`, `"chain"`, `"task"`, `"reason"`} {
		if bytes.Contains(data, []byte(k)) {
			t.Errorf("empty %s not omitted: %s", k, data)
		}
	}
}

func TestConcurrentAdd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit", "audit.jsonl")
	l, err := audit.Open(path, audit.Options{Keep: 10000})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r := rec(i)
				r.Caller = fmt.Sprintf("w%d", w)
				l.Add(r)
				if i%50 == 0 {
					l.Recent(audit.Filter{Peer: r.Caller, Limit: 5}) // reads race with writes
				}
			}
		})
	}
	wg.Wait()
	if got := len(l.Recent(audit.Filter{})); got != writers*each {
		t.Fatalf("Recent: %d records, want %d", got, writers*each)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	all, err := audit.ReadFile(path, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != writers*each {
		t.Fatalf("file holds %d records, want %d", len(all), writers*each)
	}
	perWriter := map[string]int{}
	for _, r := range all {
		perWriter[r.Caller]++
	}
	for w := range writers {
		if n := perWriter[fmt.Sprintf("w%d", w)]; n != each {
			t.Errorf("writer %d: %d records in the file, want %d", w, n, each)
		}
	}
}

func TestFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub")
	path := filepath.Join(dir, "audit.jsonl")
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
}

func TestRotationAndReadFileAcrossIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	line, _ := json.Marshal(rec(0))
	maxBytes := int64(len(line)+1) * 10 // about ten records a file
	l, err := audit.Open(path, audit.Options{MaxBytes: maxBytes, Keep: 5})
	if err != nil {
		t.Fatal(err)
	}
	const total = 25
	for i := range total {
		l.Add(rec(i))
		if i%4 == 0 {
			waitFlushed(t, path, i) // rotate across several flushes, not only one
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > maxBytes || st.Size() == 0 {
			t.Errorf("%s: %d bytes, want 1..%d", p, st.Size(), maxBytes)
		}
		if _, err := os.Stat(path + ".2"); err == nil {
			t.Errorf("a second old file exists")
		}
	}
	got, err := audit.ReadFile(path, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	// The newest file holds the last (total mod 10) or 10 records, the old one 10 before them.
	if len(got) < 11 || len(got) > 20 {
		t.Fatalf("ReadFile: %d records, want 11..20", len(got))
	}
	for i, r := range got {
		want := total - len(got) + i
		if r.Time != rec(want).Time {
			t.Fatalf("record %d is record %v, want %d (oldest first, in order across rotation)", i, r.Time.Sub(t0), want)
		}
	}
	// Memory keeps the last Keep.
	if recent := l.Recent(audit.Filter{}); len(recent) != 5 || recent[4].Time != rec(total-1).Time {
		t.Fatalf("Recent: %d records, last %v", len(recent), recent)
	}
}

// waitFlushed waits until record i is in the file (the flusher runs every 200 ms).
func waitFlushed(t *testing.T, path string, i int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if got, err := audit.ReadFile(path, audit.Filter{Since: rec(i).Time}); err == nil && len(got) > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("record %d never reached the file", i)
}

func TestAddIsWrittenWithoutClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Add(rec(7))
	waitFlushed(t, path, 7)
}

func TestCloseFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		l.Add(rec(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	got, err := audit.ReadFile(path, audit.Filter{})
	if err != nil || len(got) != 100 {
		t.Fatalf("after Close: %d records, %v", len(got), err)
	}
	l.Add(rec(100)) // after Close: memory only, no panic
	if n := len(l.Recent(audit.Filter{})); n != 101 {
		t.Fatalf("Recent after Close: %d", n)
	}

	// Reopening appends.
	l, err = audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Add(rec(200))
	l.Close()
	if got, _ := audit.ReadFile(path, audit.Filter{}); len(got) != 101 {
		t.Fatalf("after reopening: %d records, want 101", len(got))
	}
}

func TestFilter(t *testing.T) {
	l, err := audit.Open("", audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 12 {
		r := rec(i)
		if i%4 == 0 {
			r.Outcome, r.Reason = audit.Refused, "rate"
		}
		if i == 5 {
			r.Caller, r.For = "relay", "peer1"
		}
		l.Add(r)
	}
	count := func(f audit.Filter) int { return len(l.Recent(f)) }
	cases := []struct {
		name string
		f    audit.Filter
		want int
	}{
		{"all", audit.Filter{}, 12},
		{"since", audit.Filter{Since: t0.Add(10 * time.Second)}, 2},
		{"peer as caller or for", audit.Filter{Peer: "peer1"}, 5}, // caller of 1, 4, 7, 10; "for" of 5
		{"tool by name", audit.Filter{Tool: "tool1"}, 6},
		{"tool by server/name", audit.Filter{Tool: "node/tool1"}, 6},
		{"outcome", audit.Filter{Outcome: audit.Refused}, 3},
		{"combined", audit.Filter{Tool: "tool0", Outcome: audit.Refused}, 3},
		{"none", audit.Filter{Tool: "other/tool0"}, 0},
		{"limit", audit.Filter{Limit: 3}, 3},
	}
	for _, c := range cases {
		if got := count(c.f); got != c.want {
			t.Errorf("%s: %d records, want %d", c.name, got, c.want)
		}
	}
	last := l.Recent(audit.Filter{Limit: 3})
	if last[0].Time != rec(9).Time || last[2].Time != rec(11).Time {
		t.Errorf("Limit keeps the newest, newest last: got %v .. %v", last[0].Time.Sub(t0), last[2].Time.Sub(t0))
	}
}

func TestReasonIsCut(t *testing.T) {
	l, _ := audit.Open("", audit.Options{})
	r := rec(0)
	r.Outcome, r.Reason = audit.Error, strings.Repeat("é", 500)
	l.Add(r)
	got := l.Recent(audit.Filter{})[0].Reason
	if len(got) > 200 || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "éé") {
		t.Fatalf("reason of %d bytes: %q", len(got), got)
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	if _, err := audit.ReadFile(path, audit.Filter{}); !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("missing file: %v", err)
	}
	var buf bytes.Buffer
	for i := range 4 {
		data, _ := json.Marshal(rec(i))
		buf.Write(data)
		buf.WriteByte('\n')
	}
	buf.WriteString(`{"time":"2026-05-01T12:00:09Z","caller":"pe`) // cut short by a crash
	os.WriteFile(path, buf.Bytes(), 0o600)
	got, err := audit.ReadFile(path, audit.Filter{Limit: 3})
	if err != nil || len(got) != 3 || got[2].Time != rec(3).Time {
		t.Fatalf("ReadFile: %v, %v", got, err)
	}
	got, err = audit.ReadFile(path, audit.Filter{Peer: "peer0"})
	if err != nil || len(got) != 2 {
		t.Fatalf("ReadFile peer0: %d records, %v", len(got), err)
	}

	os.WriteFile(path, []byte("not json\n{}\n"), 0o600)
	if _, err := audit.ReadFile(path, audit.Filter{}); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("garbage: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func BenchmarkAdd(b *testing.B) {
	l, err := audit.Open(filepath.Join(b.TempDir(), "audit.jsonl"), audit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	r := rec(1)
	r.Caller = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Add(r)
		}
	})
}

func TestDiskFailureKeepsRecordsInMemory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	path := filepath.Join(dir, "audit.jsonl")
	l, err := audit.Open(path, audit.Options{MaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil { // rotation and reopening now fail
		t.Fatal(err)
	}
	for i := range 5 {
		l.Add(rec(i))
	}
	if err := l.Close(); err == nil || !strings.Contains(err.Error(), "writes failed") {
		t.Fatalf("Close after failed writes: %v", err)
	}
	if n := len(l.Recent(audit.Filter{})); n != 5 {
		t.Fatalf("Recent: %d records, want 5", n)
	}
}

// A live view follows the trail with Since: each record once, in order,
// across the ring's wrap, and a view that fell behind gets the newest.
func TestSinceFollowsTheTrail(t *testing.T) {
	l, err := audit.Open("", audit.Options{Keep: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	names := func(rs []audit.Record) string {
		var b strings.Builder
		for _, r := range rs {
			b.WriteString(r.Name[len("tool"):])
		}
		return b.String()
	}
	add := func(from, to int) {
		for i := from; i < to; i++ {
			r := rec(i)
			r.Name = fmt.Sprintf("tool%d", i)
			l.Add(r)
		}
	}
	got, cur := l.Since(0, 0)
	if len(got) != 0 || cur != 0 {
		t.Fatalf("empty log: %d records, cursor %d", len(got), cur)
	}
	add(0, 3)
	got, cur = l.Since(cur, 0)
	if names(got) != "012" || cur != 3 {
		t.Fatalf("after 3: %q, cursor %d", names(got), cur)
	}
	add(3, 5) // the ring (4) wraps
	if got, cur = l.Since(cur, 0); names(got) != "34" {
		t.Fatalf("after wrap: %q", names(got))
	}
	add(5, 12) // more than the ring holds since the last look
	if got, cur = l.Since(cur, 0); names(got) != "891011" || cur != 12 {
		t.Fatalf("fell behind: %q, cursor %d", names(got), cur)
	}
	if got, _ = l.Since(0, 2); names(got) != "1011" {
		t.Fatalf("max 2 from the start: %q", names(got))
	}
	if got, cur = l.Since(cur, 0); len(got) != 0 || cur != 12 {
		t.Fatalf("nothing new: %q, cursor %d", names(got), cur)
	}
	if got, _ = l.Since(99, 0); names(got) != "891011" {
		t.Fatalf("a cursor past the end counts as 0: %q", names(got))
	}
}
