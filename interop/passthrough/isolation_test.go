package passthrough

import (
	"encoding/json"
	"strings"
	"testing"
)

// Two peers that use one server-memory through the mesh (the default share
// mode) each see a graph of their own, as each would with the program run
// for it directly: what one writes the other does not read.
func TestIsolationTwoPeersUseServerMemory(t *testing.T) {
	mem := memoryProgram(t)
	c := startDaemon(t, "--name", "node-c", "--share", "memory="+mem.command())
	alice := startDaemon(t, "--name", "alice", "--peer", c.addr)
	bob := startDaemon(t, "--name", "bob", "--peer", c.addr)

	open := func(d *daemon) *runner {
		conn := startStdio(t, nil, mcpmeshBin, "--home", d.home, "stdio", "--to", c.id+"/memory")
		r := &runner{t: t, c: conn, nextID: 1}
		for _, s := range initSteps(v20251125, "") {
			if rec := r.do(s); s.method == "initialize" && rec.response == noResponse {
				t.Fatalf("initialize through %s: no response", d.id)
			}
		}
		return r
	}
	graph := func(r *runner) string {
		rec := r.do(call("read_graph", map[string]any{}))
		b, _ := json.Marshal(rec.response)
		return string(b)
	}

	a := open(alice)
	rec := a.do(call("create_entities", map[string]any{"entities": []any{
		map[string]any{"name": "AliceSecret", "entityType": "secret", "observations": []any{"only alice knows"}}}}))
	if b, _ := json.Marshal(rec.response); !strings.Contains(string(b), "AliceSecret") {
		t.Fatalf("alice's create_entities did not create: %s", b)
	}
	if g := graph(a); !strings.Contains(g, "AliceSecret") {
		t.Fatalf("alice does not read back what she wrote: %s", g)
	}

	b := open(bob)
	if g := graph(b); strings.Contains(g, "AliceSecret") {
		t.Errorf("bob's session reads alice's graph (one program process serves every caller): read_graph = %s", g)
	}
	// Bob's writes do not reach Alice either.
	b.do(call("create_entities", map[string]any{"entities": []any{
		map[string]any{"name": "BobSecret", "entityType": "secret", "observations": []any{"only bob knows"}}}}))
	if g := graph(a); strings.Contains(g, "BobSecret") {
		t.Errorf("alice's session reads bob's graph: read_graph = %s", g)
	}
}
