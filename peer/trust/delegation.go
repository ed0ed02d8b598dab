package trust

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

// Delegation: a served call's verified chain (and its cache), and the
// delegation the node sends with each call it makes. See delegation.Chain.

type delegationKey struct{}

// delegated is the verified delegation a served call came with.
type delegated struct {
	chain         *delegation.Chain
	principal     lpeer.ID
	text          string // chain.String()
	principalText string // principal.String()
}

func delegationFrom(ctx context.Context) *delegated {
	d, _ := ctx.Value(delegationKey{}).(*delegated)
	return d
}

// OnBehalfOf returns the peer a served call acts for, from the verified
// delegation it came with: the root of the delegation chain, when it is not
// the caller itself.
func OnBehalfOf(ctx context.Context) (lpeer.ID, bool) {
	d := delegationFrom(ctx)
	if d == nil {
		return "", false
	}
	caller, _ := identity.Remote(ctx)
	if d.principal == caller {
		return "", false
	}
	return d.principal, true
}

// verifyDelegation decodes and verifies the delegation chain a call came
// with. Decoding checks the signatures, which costs; a chain seen before is
// taken from the cache, and only its time, audience, caller and scope are
// checked again.
func (g *Guard) verifyDelegation(v any, caller lpeer.ID, server, tool string) (*delegated, error) {
	dc, err := g.decodeChain(v)
	if err != nil {
		return nil, err
	}
	return g.verifyDecoded(dc, caller, server, tool)
}

// verifyDelegationJSON is verifyDelegation of a chain as a relayed call
// carries it: raw, its JSON. A chain seen before in the same spelling is
// taken from the cache without being decoded at all.
func (g *Guard) verifyDelegationJSON(raw []byte, caller lpeer.ID, server, tool string) (*delegated, error) {
	dc := g.chains.getJSON(raw)
	if dc == nil {
		var wire []string
		if err := json.Unmarshal(raw, &wire); err != nil {
			return nil, err
		}
		var err error
		if dc, err = g.decodeChain(wire); err != nil {
			return nil, err
		}
		g.chains.putJSON(raw, dc)
	}
	return g.verifyDecoded(dc, caller, server, tool)
}

// decodeChain returns the chain v (its wire form, see
// delegation.DecodeChain), from the cache if it was decoded before.
func (g *Guard) decodeChain(v any) (*decodedChain, error) {
	dc, h, ok := g.chains.get(v)
	if dc != nil {
		return dc, nil
	}
	c, err := delegation.DecodeChain(v)
	if err != nil {
		return nil, err
	}
	dc = &decodedChain{chain: c, text: c.String(), principal: c.Principal().String(), wire: wireOf(v)}
	if ok {
		g.chains.put(h, dc)
	}
	return dc, nil
}

func (g *Guard) verifyDecoded(dc *decodedChain, caller lpeer.ID, server, tool string) (*delegated, error) {
	principal, err := dc.chain.Verify(caller, g.cfg.Self, server, tool, time.Now())
	if err != nil {
		return nil, err
	}
	return &delegated{chain: dc.chain, principal: principal, text: dc.text, principalText: dc.principal}, nil
}

// decodedChain is a chain whose signatures were checked, with its text
// forms for audit records (base58 peer IDs cost microseconds to make) and
// its wire form (the cache's key).
type decodedChain struct {
	chain     *delegation.Chain
	text      string
	principal string
	wire      []string
}

// wireOf copies a chain's wire form (a list of strings, see is).
func wireOf(v any) []string {
	switch l := v.(type) {
	case []string:
		return slices.Clone(l)
	case []any:
		w := make([]string, len(l))
		for i, e := range l {
			w[i], _ = e.(string)
		}
		return w
	}
	return nil
}

// is reports whether v, a chain's wire form as the JSON decoder gave it
// ([]any for served calls, []string for relayed ones), is dc's.
func (dc *decodedChain) is(v any) bool {
	switch l := v.(type) {
	case []string:
		return slices.Equal(l, dc.wire)
	case []any:
		if len(l) != len(dc.wire) {
			return false
		}
		for i, e := range l {
			if s, ok := e.(string); !ok || s != dc.wire[i] {
				return false
			}
		}
		return true
	}
	return false
}

// --- the calling side ---

// DelegationFor returns the delegation the node sends with a call to p for
// server/tool (under delegation.MetaKey; nil for none): its own, for a call
// it starts; the one it was given, extended to p, for a call it makes while
// serving (ctx is then its handler's). It refuses a call the delegation it
// was given does not cover.
func (g *Guard) DelegationFor(ctx context.Context, p lpeer.ID, server, tool string) ([]string, error) {
	if g.cfg.NoDelegate || p == g.cfg.Self {
		return nil, nil
	}
	now := time.Now()
	if d := delegationFrom(ctx); d != nil {
		return g.extendDelegation(d, p, server, tool)
	}
	key := issuedKey{to: p}
	if enc, ok := g.issued.get(key, now); ok {
		return enc, nil
	}
	c, err := delegation.Delegate(g.cfg.Key, p, g.cfg.Scope, now.Add(g.cfg.TTL))
	if err != nil {
		return nil, fmt.Errorf("delegate to %s: %w", identity.Short(p), err)
	}
	enc := c.Encode()
	g.issued.put(key, enc, now.Add(g.cfg.TTL))
	return enc, nil
}

// extendDelegation passes on the delegation d a served call came with, to
// p for server/tool, after checking that it covers the call.
func (g *Guard) extendDelegation(d *delegated, p lpeer.ID, server, tool string) ([]string, error) {
	now := time.Now()
	if err := d.chain.Covers(p, server, tool, now); err != nil {
		return nil, fmt.Errorf("call %s/%s on %s for %s: %w", server, tool, identity.Short(p), identity.Short(d.principal), err)
	}
	// Chains come from the decoded-chain cache: the same pointer for the
	// same chain, so no need to encode it again to know it.
	key := issuedKey{from: d.chain, to: p}
	if enc, ok := g.issued.get(key, now); ok {
		return enc, nil
	}
	c, err := d.chain.Extend(g.cfg.Key, p, delegation.Scope{}, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("delegate to %s: %w", identity.Short(p), err)
	}
	enc := c.Encode()
	g.issued.put(key, enc, c.Links()[c.Len()-1].Expires)
	return enc, nil
}

// extendDelegationJSON is extendDelegation for a relayed call: the
// delegation passed on as its JSON (shared: not to be changed).
func (g *Guard) extendDelegationJSON(d *delegated, p lpeer.ID, server, tool string) (json.RawMessage, error) {
	key := issuedKey{from: d.chain, to: p}
	if e, ok := g.issued.entry(key, time.Now()); ok {
		if err := d.chain.Covers(p, server, tool, time.Now()); err != nil {
			return nil, fmt.Errorf("call %s/%s on %s for %s: %w", server, tool, identity.Short(p), identity.Short(d.principal), err)
		}
		return e.json, nil
	}
	enc, err := g.extendDelegation(d, p, server, tool)
	if err != nil {
		return nil, err
	}
	return json.Marshal(enc)
}

// chainCache keeps chains already decoded (signatures checked), by a hash
// of their wire form (an entry is taken only if its wire form is the same)
// and, for relayed calls, by their JSON as it came (up to maxJSONKey
// bytes). Bounded: each map starts over when full.
type chainCache struct {
	mu     sync.Mutex
	seed   maphash.Seed
	seeded bool
	m      map[uint64]*decodedChain
	byJSON map[string]*decodedChain
}

// maxJSONKey bounds the JSON of a chain kept as a key of the cache: a
// longer one is decoded each time (a chain of a few links is about 1 KB).
const maxJSONKey = 8 << 10

// get returns the chain whose wire form is v, if kept, and v's hash (ok is
// false if v is no list of strings).
func (c *chainCache) get(v any) (dc *decodedChain, h uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.seeded {
		c.seed, c.seeded = maphash.MakeSeed(), true
	}
	var mh maphash.Hash
	mh.SetSeed(c.seed)
	switch l := v.(type) {
	case []string:
		for _, s := range l {
			mh.WriteString(s)
			mh.WriteByte(0)
		}
	case []any:
		for _, e := range l {
			s, ok := e.(string)
			if !ok {
				return nil, 0, false
			}
			mh.WriteString(s)
			mh.WriteByte(0)
		}
	default:
		return nil, 0, false
	}
	h = mh.Sum64()
	if dc = c.m[h]; dc != nil && !dc.is(v) {
		dc = nil
	}
	return dc, h, true
}

func (c *chainCache) put(h uint64, v *decodedChain) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= chainCacheSize {
		c.m = make(map[uint64]*decodedChain)
	}
	c.m[h] = v
}

const chainCacheSize = 4096

func (c *chainCache) getJSON(raw []byte) *decodedChain {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byJSON[string(raw)]
}

func (c *chainCache) putJSON(raw []byte, v *decodedChain) {
	if len(raw) > maxJSONKey {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byJSON == nil || len(c.byJSON) >= chainCacheSize {
		c.byJSON = make(map[string]*decodedChain)
	}
	c.byJSON[string(raw)] = v
}

// issuedCache keeps the delegations the node signed, for reuse until half
// their life is gone (a call never goes out with one about to expire).
type issuedCache struct {
	mu sync.Mutex
	m  map[issuedKey]issuedEntry
}

// issuedKey names a signed delegation: to a peer, from the node's own
// authority (from nil) or extending a chain it was given.
type issuedKey struct {
	from *delegation.Chain
	to   lpeer.ID
}

type issuedEntry struct {
	enc     []string
	json    json.RawMessage // enc's JSON, as a relayed call carries it
	renewAt time.Time
}

func (c *issuedCache) get(k issuedKey, now time.Time) ([]string, bool) {
	e, ok := c.entry(k, now)
	return e.enc, ok
}

func (c *issuedCache) entry(k issuedKey, now time.Time) (issuedEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || now.After(e.renewAt) {
		return issuedEntry{}, false
	}
	return e, true
}

func (c *issuedCache) put(k issuedKey, enc []string, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= chainCacheSize {
		c.m = make(map[issuedKey]issuedEntry)
	}
	now := time.Now()
	b, _ := json.Marshal(enc) // a []string encodes
	c.m[k] = issuedEntry{enc: enc, json: b, renewAt: now.Add(expires.Sub(now) / 2)}
}
