package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// policyPoll is how often the daemon looks at its configuration file for a
// changed policy.
const policyPoll = 2 * time.Second

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

// watchPolicy rereads the policy from the configuration file at path when
// the file changes or the process gets SIGHUP, and applies it to n. A file
// that does not parse leaves the policy as it was, and says why. It returns
// when ctx ends.
func watchPolicy(ctx context.Context, n *node.Node, path string, named bool, out io.Writer) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	last, _ := os.ReadFile(path)
	started := last // what the node runs with, beside the policy
	tick := time.NewTicker(policyPoll)
	defer tick.Stop()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return
		case <-hup:
			forced = true
		case <-tick.C:
		}
		data, err := os.ReadFile(path)
		if err != nil && !forced {
			continue
		}
		if !forced && bytes.Equal(data, last) {
			continue
		}
		last = data
		cfg, err := loadConfig(path, named)
		if err != nil {
			fmt.Fprintf(os.Stderr, "warning: policy not reloaded, the old one stays: %v\n", err)
			continue
		}
		n.SetPolicy(cfg.Policy)
		fmt.Fprintf(out, "policy reloaded from %s: %s\n", path, describePolicy(cfg.Policy, false))
		if changed := changedSections(started, data); len(changed) > 0 {
			fmt.Fprintf(os.Stderr, "warning: %s changed in %s: only the policy is applied while the node runs; restart it for the rest\n", strings.Join(changed, ", "), path)
		}
	}
}
