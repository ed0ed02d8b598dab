package identity

import (
	"sync"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// Short shortens a peer ID for messages: "12D3…" and its last six
// characters.
func Short(p lpeer.ID) string {
	if p == "" {
		return "(none)"
	}
	s := p.String()
	if len(s) <= 12 {
		return s
	}
	return s[:4] + "…" + s[len(s)-6:]
}

// Texts caches the text form of peer IDs, which the task and trust layers
// need on every call and which costs microseconds to make (base58). It is
// bounded: full, it starts over. The zero value is ready to use.
type Texts struct {
	mu sync.RWMutex
	m  map[lpeer.ID]string
}

// maxTexts bounds a Texts.
const maxTexts = 4096

// Of returns p.String().
func (t *Texts) Of(p lpeer.ID) string {
	t.mu.RLock()
	s, ok := t.m[p]
	t.mu.RUnlock()
	if ok {
		return s
	}
	s = p.String()
	t.mu.Lock()
	if t.m == nil || len(t.m) >= maxTexts {
		t.m = make(map[lpeer.ID]string)
	}
	t.m[p] = s
	t.mu.Unlock()
	return s
}
