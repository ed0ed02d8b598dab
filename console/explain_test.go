package console

import (
	"strings"
	"testing"

	libp2ptest "github.com/libp2p/go-libp2p/core/test"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// The grant a policy refusal names is the one that was missing: put in a
// policy, it allows exactly that call.
func TestRefusalNamesTheMissingGrant(t *testing.T) {
	caller, principal := libp2ptest.RandPeerIDFatal(t), libp2ptest.RandPeerIDFatal(t)
	plain := func(id string) string { return id }
	for _, tc := range []struct {
		rec  audit.Record
		want policy.Access
	}{
		{audit.Record{Caller: caller.String(), Server: "node", Method: "tools/call", Name: "pay", Outcome: audit.Refused, Reason: "policy"},
			policy.Access{Caller: caller, Server: "node", Kind: policy.Tool, Name: "pay"}},
		{audit.Record{Caller: caller.String(), For: principal.String(), Server: "files", Method: "resources/read", Name: "file:///a", Outcome: audit.Refused, Reason: "policy"},
			policy.Access{Caller: caller, For: principal, Server: "files", Kind: policy.Resource, Name: "file:///a"}},
		{audit.Record{Caller: caller.String(), Server: "node", Method: "prompts/get", Name: "greet", Outcome: audit.Refused, Reason: "policy"},
			policy.Access{Caller: caller, Server: "node", Kind: policy.Prompt, Name: "greet"}},
	} {
		explain, grant := explainRefusal(&tc.rec, plain)
		if !strings.Contains(explain, "No grant of the policy lets "+caller.String()) || grant == "" {
			t.Errorf("%s: %q, grant %q", tc.rec.Method, explain, grant)
			continue
		}
		if policy.Closed().Allows(tc.want) {
			t.Fatal("a closed policy allows it already")
		}
		p, err := policy.Parse([]byte(`{"grants": [` + grant + `]}`))
		if err != nil {
			t.Fatalf("%s: the grant %s does not parse: %v", tc.rec.Method, grant, err)
		}
		if !p.Allows(tc.want) {
			t.Errorf("%s: the grant %s does not allow %+v", tc.rec.Method, grant, tc.want)
		}
		other := tc.want
		other.Name += "-other"
		if p.Allows(other) {
			t.Errorf("%s: the grant %s allows more than the refused call", tc.rec.Method, grant)
		}
	}
	for reason, want := range map[string]string{
		"rate":    "rate limit",
		"banned":  "banned for a while",
		"weird":   "Refused tools/call of node/x: weird.",
		"delegat": "delegat",
	} {
		r := audit.Record{Caller: caller.String(), Server: "node", Method: "tools/call", Name: "x", Outcome: audit.Refused, Reason: reason}
		if explain, grant := explainRefusal(&r, plain); !strings.Contains(explain, want) || grant != "" {
			t.Errorf("reason %s: %q, grant %q", reason, explain, grant)
		}
	}
}
