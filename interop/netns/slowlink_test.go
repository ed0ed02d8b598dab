package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A large result over a slow link, with liveness checks on: the ping's
// answer waits behind the result on the same connection (over TCP, yamux
// is one byte stream and the sender's buffers hold a second or more of a
// 2 Mbit/s link), longer than the checker's timeout. The connection still
// carries the result, so it must not be closed as lost. The daemons check
// with a timeout of 500 ms (every 250 ms) so that the link need not be
// slower, nor the result larger, than a quick test allows: the waits it
// shows are those of a 3 s timeout on a link six times slower.
func TestLargeResultOverSlowLink(t *testing.T) {
	for _, tr := range []Transport{TCP, QUIC} {
		t.Run(tr.String(), func(t *testing.T) {
			a, c, link := slowPair(t, tr, fastLiveness(t), fastLiveness(t))
			link.Shape("2mbit", time.Second)
			const size = 1_000_000 // about 4 s at 2 Mbit/s
			for i := range 2 {
				start := time.Now()
				r := cli(a, "call", c.ID(), "tool/big", fmt.Sprintf(`{"bytes":%d}`, size))
				took := time.Since(start)
				if !r.OK() {
					t.Fatalf("call %d of a %d-byte result over %s at 2 Mbit/s failed after %v: %s", i, size, tr, took.Round(10*time.Millisecond), strings.TrimSpace(r.Stderr))
				}
				if got := len(strings.TrimSpace(r.Stdout)); got != size {
					t.Fatalf("call %d: %d bytes of result, want %d", i, got, size)
				}
				t.Logf("over %s at 2 Mbit/s: %d bytes in %v", tr, size, took.Round(10*time.Millisecond))
			}
		})
	}
}

// slowPair is A and C on one LAN, over tr only, with homes homeA and homeC
// ("" for fresh ones): C shares the lab's tool, A has called it once. The
// link returned is C's, to shape.
func slowPair(t *testing.T, tr Transport, homeA, homeC string) (a, c *Daemon, link *Link) {
	t.Helper()
	lab := newLab(t)
	lan := lab.LAN("lan", "10.1.0.0/24")
	hc := lab.Host("c", lan)
	share, _ := withTool(t, hc)
	c = hc.StartAt(homeC, append(Listen(tr), share...)...)
	a = lab.Host("a", lan).StartAt(homeA, append(Listen(tr), "--peer", c.Addr(lan, tr))...)
	if r := cli(a, "call", c.ID(), "tool/hello"); !r.OK() {
		t.Fatalf("call before shaping: %v", r)
	}
	return a, c, hc.Link(lan)
}

// fastLiveness is a daemon home whose configuration pings every 250 ms
// and closes a connection silent for 500 ms.
func fastLiveness(t *testing.T) string {
	home := t.TempDir()
	cfg := `{"network": {"livenessInterval": "250ms", "livenessTimeout": "500ms"}}`
	if err := os.WriteFile(filepath.Join(home, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

// The figure behind TestLargeResultOverSlowLink, with the daemons'
// default liveness (a ping every 1 s, 3 s timeout): a 1.5 MB result over a
// 1 Mbit/s link (a tbf queue of 2 s), -netns.attempts calls per transport;
// it prints how many were cut as lost. Behind -netns.figures (minutes):
//
//	go test ./interop/netns -run TestFigureLargeResultSlowLink -netns.figures -netns.attempts 5 -v [-netns.build DIR]
func TestFigureLargeResultSlowLink(t *testing.T) {
	if !*figures {
		t.Skip("figures run with -netns.figures")
	}
	for _, tr := range []Transport{TCP, QUIC} {
		t.Run(tr.String(), func(t *testing.T) {
			a, c, link := slowPair(t, tr, "", "")
			link.Shape("1mbit", 2*time.Second)
			const size = 1_500_000
			cut := 0
			var times []time.Duration
			for range *attempts {
				start := time.Now()
				r := cli(a, "call", c.ID(), "tool/big", fmt.Sprintf(`{"bytes":%d}`, size))
				if !r.OK() {
					cut++
					t.Logf("failed after %v: %s", time.Since(start).Round(10*time.Millisecond), strings.TrimSpace(r.Stderr))
					// The next call redials at once (the backoff is cleared).
					continue
				}
				times = append(times, time.Since(start))
			}
			t.Logf("figure: %d-byte result over %s at 1 Mbit/s, default liveness: %d of %d calls cut as lost; completed in %v", size, tr, cut, *attempts, roundAll(times))
		})
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Millisecond)
	}
	return out
}
