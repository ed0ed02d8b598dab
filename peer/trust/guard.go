// Package trust enforces, on every request a node serves or relays, who may
// do what: the policy (peer/policy), delegations (peer/delegation) and each
// peer's limits (limits), auditing every call and refusal (audit). It also
// gives the calls a node makes the delegation they carry, and tells the
// peers whose lists a new policy changes to list again (list_changed).
//
// A node has one [Guard]. Its [Guard.Serve] is the outermost layer of every
// server the node shares; [Guard.RelayRewrites] does the same for a session
// relayed frame by frame (a re-shared server).
package trust

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/internal/owner"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/metrics"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// Config is what a Guard enforces, and where it records it.
type Config struct {
	// Self is the node's peer ID; Key its private key, which signs the
	// delegations the node gives.
	Self lpeer.ID
	Key  crypto.PrivKey
	// Policy says who may see and use what; nil is a closed policy.
	Policy *policy.Policy
	// Scope is what the node delegates with the calls it starts (zero:
	// everything, everywhere), for TTL (zero: an hour); with NoDelegate it
	// delegates nothing.
	Scope      delegation.Scope
	TTL        time.Duration
	NoDelegate bool
	// Audit receives a record per served call and refusal. Required.
	Audit *audit.Log
	// Metrics, if not nil, counts calls and refusals; Limits, if not nil,
	// bounds what each peer may ask.
	Metrics *metrics.Metrics
	Limits  *limits.Limiter
	// Hold, if set, watches peer p while a relayed call to or from it is in
	// flight, until release is called: a silent target fails the call and a
	// silent caller ends it within seconds (the node's liveness checker,
	// reach.Liveness). LostWhy, if set, says why the connection to p was
	// just lost ("" if it cannot tell), for the answers to the relayed
	// calls whose target was lost.
	Hold    func(p lpeer.ID) (release func())
	LostWhy func(p lpeer.ID) string
}

// Guard is a node's trust layer. Its methods are safe for concurrent use.
type Guard struct {
	cfg    Config
	policy atomic.Pointer[policy.Policy]
	chains chainCache  // delegation chains verified
	issued issuedCache // delegations signed
	names  identity.Texts

	mu       sync.Mutex
	sessions map[*Session]struct{} // open sessions served or relayed, for list_changed
	group    owner.Group           // list_changed notices being written
}

// New returns the trust layer cfg describes.
func New(cfg Config) *Guard {
	if cfg.TTL <= 0 {
		cfg.TTL = time.Hour
	}
	if len(cfg.Scope.Tools) == 0 {
		cfg.Scope = delegation.FullScope()
	}
	g := &Guard{cfg: cfg, sessions: map[*Session]struct{}{}}
	g.policy.Store(withSelf(cfg.Policy, cfg.Self))
	return g
}

func withSelf(p *policy.Policy, self lpeer.ID) *policy.Policy {
	if p == nil {
		p = policy.Closed()
	}
	return p.WithSelf(self)
}

// hold watches p while a relayed call involves it (see Config.Hold).
func (g *Guard) hold(p lpeer.ID) (release func()) {
	if g.cfg.Hold == nil {
		return func() {}
	}
	return g.cfg.Hold(p)
}

// lostWhy says why the connection to p was just lost (see Config.LostWhy).
func (g *Guard) lostWhy(p lpeer.ID) string {
	if g.cfg.LostWhy == nil {
		return ""
	}
	return g.cfg.LostWhy(p)
}

// Policy returns the policy in force.
func (g *Guard) Policy() *policy.Policy { return g.policy.Load() }

// SetPolicy replaces the policy at once (nil closes the node): requests are
// checked against it from now on, and lists made from now on show what it
// grants. Each open session whose lists it changes is sent the MCP
// list_changed notification of each kind that changed for it.
func (g *Guard) SetPolicy(p *policy.Policy) {
	next := withSelf(p, g.cfg.Self)
	old := g.policy.Swap(next)
	g.notifyListChanges(old, next)
}

// Close waits for the list_changed notices being written; no more are sent.
func (g *Guard) Close() { g.group.Close() }
