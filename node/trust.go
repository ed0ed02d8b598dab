package node

import (
	"context"

	"fmt"
	"path/filepath"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	lconfig "github.com/libp2p/go-libp2p/config"
	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/metrics"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/peer/trust"
)

// Wiring of the trust layer (peer/trust): policy, delegation, limits and
// audit.

var trustLog = logging.Logger("mcpmesh/trust")

// initTrust opens the audit log and makes the trust layer; called by New
// once the host exists.
func (n *Node) initTrust() error {
	c := &n.cfg.trust
	p := c.policy
	if c.open {
		p = policy.Open()
		// Info, not Warn: whoever asked for it says so to the user (the
		// CLI's --open does, on stderr and in its banner).
		trustLog.Infof("OPEN node %s: every peer that connects may see and call everything it shares (--open); give it a policy for anything but a lab", n.host.ID())
	}
	path := c.auditPath
	if !c.auditSet && n.cfg.home != "" {
		path = filepath.Join(n.cfg.home, AuditFile)
	}
	a, err := audit.Open(path, audit.Options{})
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	n.audit = a
	ttl := c.ttl
	if ttl <= 0 {
		ttl = DefaultDelegationTTL
	}
	n.trust = trust.New(trust.Config{
		Self: n.host.ID(), Key: n.host.Peerstore().PrivKey(n.host.ID()),
		Policy: p, Scope: c.scope, TTL: ttl, NoDelegate: c.noDelegate,
		Audit: a, Metrics: c.metrics, Limits: n.limits,
		Hold: n.hold, LostWhy: n.lostWhy,
	})
	return nil
}

// SetPolicy replaces the node's policy at once: calls are checked against it
// from now on, and lists made from now on show what it grants. Connected
// peers whose lists it changes are sent the MCP list_changed notification
// of each kind that changed for them. A nil policy closes the node. The
// node's card is republished.
func (n *Node) SetPolicy(p *policy.Policy) {
	n.trust.SetPolicy(p)
	n.changed()
}

// Policy returns the policy the node applies.
func (n *Node) Policy() *policy.Policy { return n.trust.Policy() }

// Audit returns the node's audit log of served calls.
func (n *Node) Audit() *audit.Log { return n.audit }

// Metrics returns what WithMetrics gave, or nil.
func (n *Node) Metrics() *metrics.Metrics { return n.cfg.trust.metrics }

// OnBehalfOf returns the peer a served call acts for, from the verified
// delegation it came with: the root of the delegation chain, when it is not
// the caller itself. ctx is the handler's.
func OnBehalfOf(ctx context.Context) (lpeer.ID, bool) { return trust.OnBehalfOf(ctx) }

// limitOptions makes the node's limiter, for the node whose key is key, and
// the libp2p options that give its host the limits' resource manager and a
// connection gater that keeps banned peers out. New appends them after
// every other libp2p option: a resource manager given with
// WithLibp2pOptions is kept, and a gater given there is asked too.
func (c *config) limitOptions(key crypto.PrivKey) (*limits.Limiter, []libp2p.Option, error) {
	self, err := lpeer.IDFromPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("limits: peer ID of the node's key: %w", err)
	}
	cfg := limits.DefaultConfig()
	if c.limits != nil {
		cfg = *c.limits
	}
	lim := limits.New(cfg, self)
	opt := func(lc *lconfig.Config) error {
		if lc.ResourceManager == nil {
			rm, err := lim.ResourceManager()
			if err != nil {
				return err
			}
			lc.ResourceManager = rm
		}
		lc.ConnectionGater = lim.Gater(lc.ConnectionGater)
		return nil
	}
	return lim, []libp2p.Option{opt}, nil
}

// initLimits makes a ban close every connection to the banned peer (its
// gater keeps it from coming back until the ban ends). New calls it once the
// host exists.
func (n *Node) initLimits() {
	if n.limits == nil {
		return
	}
	n.limits.OnBan(func(p lpeer.ID, until time.Time, why string) {
		log.Warnf("peer %s disconnected for %v: persisted over its limits (%s)", p, time.Until(until).Round(time.Second), why)
		// Not on the goroutine of the strike: it may be serving one of
		// the connections that are closing.
		n.group.Go(func() {
			if err := n.host.Network().ClosePeer(p); err != nil {
				log.Debugw("close connections of a banned peer", "peer", p, "error", err)
			}
		})
	})
}

// Limits returns the node's limiter: who is banned, and the limits in force.
func (n *Node) Limits() *limits.Limiter { return n.limits }
