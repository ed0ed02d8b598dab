package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoffStaysWithinItsBoundsAndStartsOver(t *testing.T) {
	const min, max = 10 * time.Millisecond, 80 * time.Millisecond
	b := Backoff(min, max)
	bound := min
	for i := range 20 {
		d := b.Delay()
		if d < min || d > bound {
			t.Fatalf("delay %d = %v, want within [%v, %v]", i, d, min, bound)
		}
		bound = mini(2*bound, max)
	}
	b.Reset()
	if d := b.Delay(); d != min {
		t.Fatalf("first delay after Reset = %v, want %v", d, min)
	}
}

// A bound not above the start gives a fixed delay (libp2p's jitter panics
// on an empty range: found when discovery's republish interval was 1s).
func TestBackoffWithNoRoomToGrowIsFixed(t *testing.T) {
	for _, max := range []time.Duration{time.Second, time.Millisecond} {
		b := Backoff(time.Second, max)
		for range 5 {
			if d := b.Delay(); d != time.Second {
				t.Fatalf("Backoff(1s, %v).Delay() = %v, want 1s", max, d)
			}
		}
	}
}

func mini(a, b time.Duration) time.Duration { return min(a, b) }

func TestSleepEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep reported an hour passed on a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep of 1ms did not pass")
	}
}

// Past the point where the delays reach max they stay there, however long
// it goes on (libp2p's alone fall back to min after some 35 calls from
// 500 ms, its 2^calls overflowing).
func TestBackoffStaysAtItsLongestDelays(t *testing.T) {
	const min, max = 500 * time.Millisecond, 30 * time.Second
	b := Backoff(min, max)
	var short int
	for i := range 1000 {
		if d := b.Delay(); i > 10 && d < 2*min {
			short++ // a draw between min and max: about 3 in 100
		}
	}
	if short > 100 {
		t.Fatalf("%d of 990 delays under %v once the bound was %v", short, 2*min, max)
	}
}
