package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/upstream"
)

// A share's mode and session bounds come from the file ("mode",
// "sessions") or from --share-mode; what does not fit is a usage error
// naming the share.
func TestShareModesFromTheFileAndFlags(t *testing.T) {
	file := &fileConfig{Shares: map[string]shareConfig{
		"memory": {Command: "npx server-memory", Sessions: &sessionsConfig{Max: 8, PerCaller: 2, Spares: -1, Idle: "5m"}},
		"search": {URL: "http://127.0.0.1:9/mcp", Mode: "shared"},
	}}
	specs, err := shareSpecs(file, []string{"calc=./calc"}, nil, nil, []string{"far=12D3KooWHy7xH9pbs9NCoqhXLJH6g3c3qU5Y8sCrQ2E7GzMRsKq2/node"}, []string{"calc=shared", "memory=isolated"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]relay.ShareConfig{}
	for _, s := range specs {
		var c relay.ShareConfig
		for _, o := range s.opts {
			o(&c)
		}
		got[s.name] = c
	}
	want := map[string]relay.ShareConfig{
		"calc":   {Mode: relay.Shared},
		"memory": {Mode: relay.Isolated, Pool: upstream.PoolConfig{MaxSessions: 8, MaxPerCaller: 2, Spares: -1, IdleTimeout: 5 * time.Minute}},
		"search": {Mode: relay.Shared},
		"far":    {},
	}
	for name, w := range want {
		if g := got[name]; g.Mode != w.Mode || g.Pool != w.Pool {
			t.Errorf("share %s: %+v, want %+v", name, g, w)
		}
	}

	for _, c := range []struct {
		file  map[string]shareConfig
		modes []string
		want  string
	}{
		{map[string]shareConfig{"x": {Command: "a", Mode: "private"}}, nil, `share x: share mode "private"`},
		{map[string]shareConfig{"x": {Peer: "12D3KooWHy7xH9pbs9NCoqhXLJH6g3c3qU5Y8sCrQ2E7GzMRsKq2/node", Mode: "shared"}}, nil, "share x: mode and sessions are for programs and URLs"},
		{map[string]shareConfig{"x": {Command: "a", Sessions: &sessionsConfig{Idle: "soon"}}}, nil, "shares.x.sessions.idle"},
		{nil, []string{"nope=shared"}, `--share-mode "nope=shared"`},
	} {
		_, err := shareSpecs(&fileConfig{Shares: c.file}, nil, nil, nil, nil, c.modes)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: error %v, want one saying %q", c.file, c.modes, err, c.want)
		}
	}
}
