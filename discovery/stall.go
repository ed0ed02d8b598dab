package discovery

import (
	"context"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
)

const (
	// minStall is the least silence after which a lookup counts as
	// stalled; stallFactor times the slowest answer it got is the usual.
	minStall    = time.Second
	stallFactor = 4
	stallTick   = 100 * time.Millisecond
)

// watchLookup ends a lookup (stop) whose only outstanding requests have
// gone unanswered for much longer than any answer took: stallFactor times
// the slowest, at least minStall. A peer whose process died while its
// connection still looks alive (killed over QUIC, the connection lingers
// until QUIC's idle timeout) would otherwise hold every lookup that asks
// it for kad-dht's 10 s read timeout. Dials in progress are left to their
// own timeouts, and nothing is cut before the first answer. It reads the
// lookup's query events until they end, passing them on to whoever
// listens on parent.
func watchLookup(parent context.Context, events <-chan *routing.QueryEvent, stop func()) {
	var (
		sent     = map[lpeer.ID]time.Time{}
		dialing  = map[lpeer.ID]bool{}
		slowest  time.Duration
		answered bool
		last     = time.Now()
		forward  = routing.SubscribesToQueryEvents(parent)
	)
	tick := time.NewTicker(stallTick)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			if forward {
				routing.PublishQueryEvent(parent, ev)
			}
			now := time.Now()
			last = now
			switch ev.Type {
			case routing.DialingPeer:
				dialing[ev.ID] = true
			case routing.SendingQuery:
				delete(dialing, ev.ID)
				sent[ev.ID] = now
			case routing.PeerResponse:
				if at, ok := sent[ev.ID]; ok {
					slowest = max(slowest, now.Sub(at))
					delete(sent, ev.ID)
				}
				answered = true
			case routing.QueryError:
				delete(dialing, ev.ID)
				delete(sent, ev.ID)
			}
		case <-tick.C:
			if !answered || len(dialing) > 0 || len(sent) == 0 {
				continue
			}
			if silence := time.Since(last); silence > max(minStall, stallFactor*slowest) {
				log.Debugw("lookup stalled on unanswered requests; ending it", "peers", len(sent), "silence", silence, "slowest answer", slowest)
				stop()
				// Drain what the lookup still publishes until it ends.
				for ev := range events {
					if forward {
						routing.PublishQueryEvent(parent, ev)
					}
				}
				return
			}
		}
	}
}
