package ask

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// nextRun is what the middleware does between two runs of a request: the
// state goes to the caller and comes back, signed.
func nextRun(t *testing.T, in *Inputs, st *inputState) (*inputState, context.Context) {
	t.Helper()
	enc, err := in.encodeState(requestState{Answers: st.answers, Memos: st.memos})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := in.decodeState(enc)
	if err != nil {
		t.Fatal(err)
	}
	next := &inputState{modern: true, answers: rs.Answers, replayed: rs.Memos}
	return next, context.WithValue(context.Background(), inputStateKey{}, next)
}

func TestReplayGivesTheNextRunWhatTheFirstGot(t *testing.T) {
	in := NewInputs()
	st := &inputState{modern: true}
	ctx := context.WithValue(context.Background(), inputStateKey{}, st)
	runs := map[string]int{}
	compute := func(label string, v int, err error) (int, error) {
		return Replay(ctx, label, func() (int, error) { runs[label]++; return v, err })
	}

	// First run: three values, one of them an error.
	if v, _ := compute("a", 1, nil); v != 1 {
		t.Fatal(v)
	}
	if _, err := compute("b", 0, errors.New("b failed")); err == nil {
		t.Fatal("no error")
	}
	if v, _ := compute("c", 3, nil); v != 3 {
		t.Fatal(v)
	}
	// A question: not remembered.
	if _, err := compute("d", 0, ErrInputRequired); !errors.Is(err, ErrInputRequired) {
		t.Fatal(err)
	}

	// Second run: a, b, c replayed (other values offered, not computed); d
	// computed now.
	st, ctx = nextRun(t, in, st)
	if v, _ := compute("a", 100, nil); v != 1 {
		t.Errorf("a replayed as %d, want 1", v)
	}
	if _, err := compute("b", 100, nil); err == nil || err.Error() != "b failed" {
		t.Errorf("b replayed as %v, want its error", err)
	}
	if v, _ := compute("c", 100, nil); v != 3 {
		t.Errorf("c replayed as %d", v)
	}
	if v, _ := compute("d", 4, nil); v != 4 {
		t.Errorf("d = %d", v)
	}
	if runs["a"] != 1 || runs["b"] != 1 || runs["c"] != 1 || runs["d"] != 2 {
		t.Errorf("computed %v, want a, b, c once and d twice", runs)
	}

	// Third run goes another way at the second value: from there on,
	// nothing is replayed, even labels that match later.
	_, ctx = nextRun(t, in, st)
	if v, _ := compute("a", 100, nil); v != 1 {
		t.Errorf("a replayed as %d, want 1", v)
	}
	if v, _ := compute("x", 7, nil); v != 7 {
		t.Errorf("x = %d", v)
	}
	if v, _ := compute("c", 8, nil); v != 8 {
		t.Errorf("c after the run diverged = %d, want it computed (8)", v)
	}
}

func TestReplayOutsideModernSessionsJustComputes(t *testing.T) {
	calls := 0
	f := func() (string, error) { calls++; return "v", nil }
	old := context.WithValue(context.Background(), inputStateKey{}, &inputState{modern: false})
	for _, ctx := range []context.Context{context.Background(), old} {
		if v, err := Replay(ctx, "x", f); v != "v" || err != nil {
			t.Fatal(v, err)
		}
	}
	if calls != 2 {
		t.Fatalf("computed %d times", calls)
	}
}

func TestReplayKeepsItsStateBounded(t *testing.T) {
	st := &inputState{modern: true}
	ctx := context.WithValue(context.Background(), inputStateKey{}, st)
	big := strings.Repeat("x", 100<<10)
	for range 10 {
		Replay(ctx, "big", func() (string, error) { return big, nil })
	}
	if st.memoBytes > maxMemoBytes || len(st.memos) != maxMemoBytes/(len(big)+2+3) {
		t.Fatalf("%d values kept, %d bytes (bound %d)", len(st.memos), st.memoBytes, maxMemoBytes)
	}
}
