package transport

import (
	"testing"
	"time"
)

// The SDK may answer a request it was serving after the conn closed (a
// handler that ends late): the answer is taken, not a second close of the
// waiters' channel (it panicked the node: "close of closed channel").
func TestFlightAnswerAfterClose(t *testing.T) {
	var f flight
	f.init(time.Now())
	id, _, ok := f.admit([]byte(`"a"`), 10, time.Now())
	if !ok {
		t.Fatal("admit refused a fresh id")
	}
	if held := f.close(); held != 10 {
		t.Fatalf("close returned %d held, want 10", held)
	}
	raw, _, _, ok := f.answer(id, time.Now())
	if !ok || string(raw) != `"a"` {
		t.Fatalf("answer after close: %q %v", raw, ok)
	}
	if f.wait(1) {
		t.Fatal("wait on a closed flight reported none in flight instead of closed")
	}
}
