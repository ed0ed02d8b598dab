package trust

import (
	"errors"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// admitCall admits a call that caller asks the node to serve (tools/call,
// resources/read, prompts/get, or a tools/call it relays), for principal
// ("" or caller for its own call), or refuses it when the caller or the
// principal is over its limits; a refusal for the caller's own limits is a
// strike. The caller must call release when the call ends.
func (g *Guard) admitCall(caller, principal lpeer.ID) (release func(), r *refusal) {
	if g.cfg.Limits == nil {
		return func() {}, nil
	}
	release, err := g.cfg.Limits.AdmitFor(caller, principal)
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
			g.cfg.Limits.Strike(caller, lr.Reason)
		}
	}
	trustLog.Debugw("call refused", "peer", caller, "error", err)
	return nil, r
}

// BadFrame records a strike against p, whose stream was reset because it
// broke the framing (a frame that does not decode, or is too large).
func (g *Guard) BadFrame(p lpeer.ID, err error) {
	if g.cfg.Limits == nil {
		return
	}
	why := "bad frame"
	if errors.Is(err, transport.ErrFrameTooLarge) {
		why = "oversized frame"
	}
	trustLog.Debugw("broken frame", "peer", p, "error", err)
	g.cfg.Limits.Strike(p, why)
}
