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
			lab := newLab(t)
			lan := lab.LAN("lan", "10.1.0.0/24")
			hc, ha := lab.Host("c", lan), lab.Host("a", lan)
			share, _ := withTool(t, hc)
			c := hc.StartAt(fastLiveness(t), append(Listen(tr), share...)...)
			a := ha.StartAt(fastLiveness(t), append(Listen(tr), "--peer", c.Addr(lan, tr))...)
			if r := cli(a, "call", c.ID(), "tool/hello"); !r.OK() {
				t.Fatalf("call before shaping: %v", r)
			}
			hc.Link(lan).Shape("2mbit", time.Second)
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
