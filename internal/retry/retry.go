// Package retry is how mcpmesh waits before trying again (a peer to reach,
// a program to restart, a pin to resolve): libp2p's exponential backoff
// with full jitter, so that many nodes that failed together do not retry
// together.
package retry

import (
	"context"
	"math/rand"
	"time"

	"github.com/libp2p/go-libp2p/p2p/discovery/backoff"
)

// Backoff returns delays that start at min and double after each call to
// Delay, up to max, each drawn at random between min and that bound. Reset
// starts over. With max not above min, every delay is min. A Backoff is not
// safe for concurrent use.
func Backoff(min, max time.Duration) backoff.BackoffStrategy {
	if max <= min {
		// libp2p's jitter draws from [min, max): empty here (Int63n(0) panics).
		return backoff.NewFixedBackoff(min)()
	}
	b := backoff.NewExponentialBackoff(min, max, backoff.FullJitter, min, 2, 0, rand.NewSource(time.Now().UnixNano()))()
	full := 0 // the calls after which the bound has reached max
	for d := min; d < max; d *= 2 {
		full++
	}
	return &saturating{BackoffStrategy: b, full: full}
}

// saturating keeps an exponential backoff at its longest delays once it has
// reached them. libp2p's computes 2^calls × min, which overflows after some
// 35 calls from 500 ms and then gives min every time: a program that never
// starts would be restarted twice a second from then on.
type saturating struct {
	backoff.BackoffStrategy
	calls, full int
}

func (s *saturating) Delay() time.Duration {
	if s.calls > s.full {
		// Start over at the first call whose bound is max.
		s.BackoffStrategy.Reset()
		for range s.full {
			s.BackoffStrategy.Delay()
		}
		s.calls = s.full
	}
	s.calls++
	return s.BackoffStrategy.Delay()
}

func (s *saturating) Reset() {
	s.calls = 0
	s.BackoffStrategy.Reset()
}

// Sleep waits for d, or until ctx ends; it reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
