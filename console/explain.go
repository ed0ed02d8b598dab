package console

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/mcpmesh/mcpmesh/audit"
)

// Refusal reasons as the node audits them (node/trust.go, node/limits.go),
// in words for the audit view.
var refusalWords = map[string]string{
	"delegation":            "the delegation chain it presented was refused: expired, made for another peer, presented by another peer, wider than the link before it, or tampered with",
	"rate":                  "it called faster than its rate limit allows (per peer, a token bucket)",
	"concurrency":           "it had too many calls in flight here already",
	"principal-rate":        "calls made for its principal went over the principal's rate limit (the carrying peer is not at fault: no strike)",
	"principal-concurrency": "its principal had too many calls in flight here already (the carrying peer is not at fault: no strike)",
	"banned":                "it is banned for a while, after repeated refusals or broken frames",
}

// explainRefusal says why the node refused r. For a policy refusal it also
// returns a grant that would have allowed the call, as the configuration
// file writes it: the grant that was missing.
func explainRefusal(r *audit.Record, name func(peer string) string) (explain, grant string) {
	who := name(r.Caller)
	if r.For != "" {
		who += " acting for " + name(r.For)
	}
	what := r.Target()
	if r.Reason != "policy" {
		words, ok := refusalWords[r.Reason]
		if !ok {
			return fmt.Sprintf("Refused %s of %s: %s.", r.Method, what, r.Reason), ""
		}
		return fmt.Sprintf("Refused %s of %s from %s: %s.", r.Method, what, who, words), ""
	}
	kind, field := "capability", ""
	switch {
	case r.Method == "tools/call":
		kind, field = "tool", "tools"
	case strings.HasPrefix(r.Method, "resources/"):
		kind, field = "resource", "resources"
	case r.Method == "prompts/get":
		kind, field = "prompt", "prompts"
	}
	explain = fmt.Sprintf("No grant of the policy lets %s use the %s %s here.", who, kind, what)
	if field == "" {
		return explain, ""
	}
	g := map[string]any{"peers": []string{r.Caller}, "server": r.Server, field: []string{r.Name}}
	if r.For != "" {
		g["for"] = []string{r.For}
	}
	b, err := json.Marshal(g)
	if err != nil {
		return explain, ""
	}
	return explain + " This grant would allow it:", string(b)
}

// peerName names a peer for a sentence: its card name and the end of its
// ID, or its whole ID when no card is kept.
func (s *Server) peerName(id string) string {
	card, _ := s.cards.get(id)
	if card == nil || card.Name == "" {
		return id
	}
	short := id
	if len(id) > 8 {
		short = "…" + id[len(id)-8:]
	}
	return card.Name + " (" + short + ")"
}

// sayDecision puts the policy's answer to a in words.
func sayDecision(a Access, d Decision, name func(peer string) string) string {
	who := name(a.Peer)
	if a.For != "" {
		who += " acting for " + name(a.For)
	}
	what := fmt.Sprintf("the %s %s/%s", a.Kind, a.Server, a.Name)
	switch {
	case d.Allowed && d.Listed:
		return fmt.Sprintf("Allowed: %s may use %s, and it is listed to it.", who, what)
	case d.Allowed:
		return fmt.Sprintf("Allowed: %s may use %s, though it is not listed to it (a hidden grant).", who, what)
	default:
		return fmt.Sprintf("Refused: no grant lets %s use %s.", who, what)
	}
}
