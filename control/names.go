package control

import (
	"context"
	"sync"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// Peers' names for people: the name on each peer's card (self-chosen, so
// always shown beside its ID, never instead of it where it decides
// anything).
const (
	nameTTL    = time.Minute             // how long a name (or its absence) is remembered
	nameWait   = 1500 * time.Millisecond // how long one answer waits for cards
	maxNames   = 1000                    // names remembered at most
	nameLookup = 32                      // card lookups one answer starts at most
)

type nameEntry struct {
	name string
	at   time.Time
}

// names caches peers' card names.
type names struct {
	mu sync.Mutex
	m  map[lpeer.ID]nameEntry
}

// namesOf returns the card names of ids that it knows or finds within
// nameWait: remembered ones, then the DHT's cards.
func (s *Server) namesOf(ctx context.Context, ids []lpeer.ID) map[lpeer.ID]string {
	out := make(map[lpeer.ID]string, len(ids))
	now := time.Now()
	var missing []lpeer.ID
	s.names.mu.Lock()
	for _, id := range ids {
		if e, ok := s.names.m[id]; ok && now.Sub(e.at) < nameTTL {
			if e.name != "" {
				out[id] = e.name
			}
			continue
		}
		if len(missing) < nameLookup {
			missing = append(missing, id)
		}
	}
	s.names.mu.Unlock()
	disc := s.node.Discovery()
	if len(missing) == 0 || disc == nil {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, nameWait)
	defer cancel()
	found := make([]string, len(missing))
	var wg sync.WaitGroup
	for i, id := range missing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := disc.Card(ctx, id); err == nil {
				found[i] = c.Name
			}
		}()
	}
	wg.Wait()
	s.names.mu.Lock()
	defer s.names.mu.Unlock()
	if s.names.m == nil || len(s.names.m)+len(missing) > maxNames {
		s.names.m = make(map[lpeer.ID]nameEntry)
	}
	for i, id := range missing {
		if found[i] != "" {
			out[id] = found[i]
		}
		if ctx.Err() == nil || found[i] != "" { // a lookup cut short proves nothing
			s.names.m[id] = nameEntry{name: found[i], at: now}
		}
	}
	return out
}
