package trust

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	lconfig "github.com/libp2p/go-libp2p/config"
	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp"
)

// WithLimits sets what one peer may ask of the node: calls in flight and
// per second, strikes before a ban and how long a ban lasts, and the
// streams and memory libp2p may hold for it. The default is
// limits.DefaultConfig(); zero fields take their default.
func WithLimits(cfg limits.Config) Option {
	return func(c *config) error {
		if cfg.Rate > 0 && cfg.Burst < 0 || cfg.StrikeWindow < 0 || cfg.BanFor < 0 {
			return fmt.Errorf("WithLimits: negative burst, strike window or ban duration")
		}
		c.limits = &cfg
		return nil
	}
}

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
		if !n.goOwned() {
			return
		}
		go func() {
			defer n.wg.Done()
			if err := n.host.Network().ClosePeer(p); err != nil {
				log.Debugw("close connections of a banned peer", "peer", p, "error", err)
			}
		}()
	})
}

// Limits returns the node's limiter: who is banned, and the limits in force.
func (n *Node) Limits() *limits.Limiter { return n.limits }

// admitCall admits a call that caller asks the node to serve (tools/call,
// resources/read, prompts/get, or a tools/call it relays), for principal
// ("" or caller for its own call), or refuses it when the caller or the
// principal is over its limits; a refusal for the caller's own limits is a
// strike. The caller must call release when the call ends.
func (n *Node) admitCall(caller, principal lpeer.ID) (release func(), r *refusal) {
	if n.limits == nil {
		return func() {}, nil
	}
	release, err := n.limits.AdmitFor(caller, principal)
	if err == nil {
		return release, nil
	}
	r = &refusal{reason: "limit", code: CodeLimited, msg: err.Error()}
	var lr *limits.Refusal
	if errors.As(err, &lr) {
		r.reason = lr.Reason
		switch {
		case lr.For != "":
			// A principal over its limits is not the fault of the peer
			// that carries its calls: no strike.
			r.reason = "principal-" + lr.Reason
		case lr.Reason != limits.ReasonBanned:
			n.limits.Strike(caller, lr.Reason)
		}
	}
	log.Debugw("call refused", "peer", caller, "error", err)
	return nil, r
}

// badFrame records a strike against p, whose stream was reset because it
// broke the framing (a frame that does not decode, or is too large).
func (n *Node) badFrame(p lpeer.ID, err error) {
	if n.limits == nil {
		return
	}
	why := "bad frame"
	if errors.Is(err, mcp.ErrFrameTooLarge) {
		why = "oversized frame"
	}
	log.Debugw("broken frame", "peer", p, "error", err)
	n.limits.Strike(p, why)
}
