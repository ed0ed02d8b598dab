package main

import (
	"encoding/json"
	"reflect"
	"slices"

	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// describePolicy says in one line what a policy lets peers do.
func describePolicy(p *policy.Policy, open bool) string {
	switch {
	case open:
		return "OPEN: every peer may see and call everything this node shares (--open)"
	case p == nil || p.Grants() == 0:
		return "closed: no peer may see or call anything (add grants to the config's \"policy\"; see README)"
	}
	return p.String()
}

// changedSections names the top-level sections of the configuration file,
// other than the policy, that differ between two versions of it.
func changedSections(before, after []byte) []string {
	var a, b map[string]json.RawMessage
	json.Unmarshal(before, &a)
	json.Unmarshal(after, &b)
	var out []string
	for _, m := range []map[string]json.RawMessage{a, b} {
		for k := range m {
			if k == "policy" || slices.Contains(out, k) {
				continue
			}
			if !jsonEqual(a[k], b[k]) {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

func jsonEqual(x, y json.RawMessage) bool {
	var vx, vy any
	json.Unmarshal(x, &vx)
	json.Unmarshal(y, &vy)
	return reflect.DeepEqual(vx, vy)
}
