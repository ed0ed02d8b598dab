package passthrough

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// program is a real MCP server run as a stdio program: directly by the
// scripted client, and shared by node C with --share.
type program struct {
	name string
	args []string // the program and its arguments
	env  []string // extra environment (KEY=VALUE)
	// fresh is more environment, new for every process (its own state).
	fresh func() []string
	// script is the session each path runs, for a protocol version.
	script func(version string) []step
	// versions are the protocol versions to try; 2026-07-28 only where the
	// program speaks it.
	versions []string
	rootURI  string // what the scripted client answers to roots/list
}

// command is the --share command line of p (run by /bin/sh).
func (p program) command() string {
	line := strings.Join(p.args, " ")
	if len(p.env) > 0 {
		line = "env " + strings.Join(p.env, " ") + " " + line
	}
	return line
}

// start runs p directly, as a host would, in a process of its own.
func (p program) start(t *testing.T) *stdioConn {
	env := append(os.Environ(), p.env...)
	if p.fresh != nil {
		env = append(env, p.fresh()...)
	}
	return startStdio(t, env, p.args...)
}

// commonSteps are what every server is asked after its own script: errors
// (an unknown tool, a logging level a server may not support) and a ping.
func commonSteps() []step {
	return []step{
		call("no_such_tool", map[string]any{}),
		req("logging/setLevel", map[string]any{"level": "debug"}),
		req("completion/complete", map[string]any{"ref": map[string]any{"type": "ref/prompt", "name": "no-such-prompt"},
			"argument": map[string]any{"name": "x", "value": ""}}),
		req("ping", nil),
	}
}

// askNewest is a session of a host that asks for 2026-07-28 in initialize, to
// a program that speaks 2025-11-25 at most: directly the program settles the
// version; through the mesh it must be the same one.
const askNewest = "initialize-asking-2026-07-28"

func askNewestSteps() []step {
	return append(initSteps(v20260728, ""), req("tools/list", nil), req("ping", nil))
}

func memoryProgram(t *testing.T) program {
	bin := npmBin(t, "servers", "mcp-server-memory")
	return program{
		name: "memory", args: []string{bin},
		// server-memory keeps its graph in a file and reads it on every
		// call, so processes that share the file share the graph: C's share
		// puts each session's file in the session's own folder (the mesh
		// gives each process one, $MCPMESH_SESSION_DIR), as each direct run
		// starts with an empty graph in a new file. (A single file for all
		// would be one graph whatever runs the program: the command line,
		// not the mesh, would share the state.)
		env:      []string{"MEMORY_FILE_PATH=$MCPMESH_SESSION_DIR/memory.jsonl"},
		fresh:    func() []string { return []string{"MEMORY_FILE_PATH=" + filepath.Join(t.TempDir(), "memory.jsonl")} },
		versions: []string{v20251125, askNewest},
		script: func(version string) []step {
			if version == askNewest {
				return askNewestSteps()
			}
			steps := append(initSteps(version, ""), listSteps()...)
			steps = append(steps,
				call("create_entities", map[string]any{"entities": []any{
					map[string]any{"name": "Alice", "entityType": "person", "observations": []any{"drinks tea"}},
					map[string]any{"name": "Bob", "entityType": "person", "observations": []any{"rides a bike"}},
				}}),
				call("create_relations", map[string]any{"relations": []any{
					map[string]any{"from": "Alice", "to": "Bob", "relationType": "knows"}}}),
				call("read_graph", map[string]any{}),
				call("search_nodes", map[string]any{"query": "tea"}),
				call("create_entities", map[string]any{"entities": "not a list"}), // bad arguments
			)
			return append(steps, commonSteps()...)
		},
	}
}

func filesystemProgram(t *testing.T) program {
	bin := npmBin(t, "servers", "mcp-server-filesystem")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "top.txt"), []byte("top\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "inner.txt"), []byte("inner\n"), 0o644)
	dir, _ = filepath.EvalSymlinks(dir)
	return program{
		name: "filesystem", args: []string{bin, dir},
		versions: []string{v20251125},
		// The client's root is a sub-folder of the folder on the command
		// line: a server that got the root lists only it.
		rootURI: "file://" + filepath.Join(dir, "sub"),
		script: func(version string) []step {
			// server-filesystem asks for the client's roots once initialized.
			steps := append(initSteps(version, "roots/list"), listSteps()...)
			steps = append(steps,
				// It applies the roots in the background: wait until it has.
				settled(call("list_allowed_directories", map[string]any{}), filepath.Join(dir, "sub")),
				call("list_directory", map[string]any{"path": filepath.Join(dir, "sub")}),
				call("read_text_file", map[string]any{"path": filepath.Join(dir, "sub", "inner.txt")}),
				call("read_text_file", map[string]any{"path": filepath.Join(dir, "top.txt")}), // outside the root
				call("read_text_file", map[string]any{}),                                      // bad arguments
				step{name: "notifications/roots/list_changed", method: "notifications/roots/list_changed", notify: true, expect: "roots/list"},
			)
			return append(steps, commonSteps()...)
		},
	}
}

// settled is s, first repeated until its answer holds text (see step.settle).
func settled(s step, text string) step {
	s.settle = text
	return s
}

func thinkingProgram(t *testing.T) program {
	bin := npmBin(t, "servers", "mcp-server-sequential-thinking")
	thought := func(n int, text string) step {
		return call("sequentialthinking", map[string]any{"thought": text, "thoughtNumber": n, "totalThoughts": 2, "nextThoughtNeeded": n < 2})
	}
	return program{
		name: "thinking", args: []string{bin},
		env:      []string{"DISABLE_THOUGHT_LOGGING=true"},
		versions: []string{v20251125},
		script: func(version string) []step {
			steps := append(initSteps(version, ""), listSteps()...)
			steps = append(steps, thought(1, "first"), thought(2, "second"),
				call("sequentialthinking", map[string]any{"thought": 5})) // bad arguments
			return append(steps, commonSteps()...)
		},
	}
}

func everythingProgram(t *testing.T) program {
	bin := npmBin(t, "everything", "mcp-server-everything")
	return program{
		name: "everything", args: []string{bin, "stdio"},
		versions: []string{v20251125},
		rootURI:  "file:///scripted-root",
		script: func(version string) []step {
			// server-everything asks for the roots once initialized too.
			steps := append(initSteps(version, "roots/list"), listSteps()...)
			withProgress := func(s step, token string) step {
				s.params["_meta"] = map[string]any{"progressToken": token}
				return s
			}
			cancelled := withProgress(call("trigger-long-running-operation", map[string]any{"duration": 2, "steps": 4}), "progress-cancel")
			cancelled.name += " (cancelled)"
			cancelled.cancel = true
			steps = append(steps,
				call("echo", map[string]any{"message": "through the mesh"}),
				call("get-sum", map[string]any{"a": 2, "b": 3}),
				call("get-tiny-image", map[string]any{}),
				call("get-annotated-message", map[string]any{"messageType": "error", "includeImage": false}),
				call("get-structured-content", map[string]any{"location": "Chicago"}),
				call("get-resource-links", map[string]any{"count": 2}),
				call("get-sum", map[string]any{"a": "two"}), // bad arguments
				withProgress(call("trigger-long-running-operation", map[string]any{"duration": 0.3, "steps": 3}), "progress-1"),
				call("trigger-sampling-request", map[string]any{"prompt": "say hi", "maxTokens": 10}),
				call("trigger-elicitation-request", map[string]any{}),
				call("get-roots-list", map[string]any{}),
				cancelled,
				req("resources/read", map[string]any{"uri": "demo://resource/static/document/features.md"}),
				req("resources/subscribe", map[string]any{"uri": "demo://resource/static/document/features.md"}),
				req("resources/unsubscribe", map[string]any{"uri": "demo://resource/static/document/features.md"}),
				req("prompts/get", map[string]any{"name": "args-prompt", "arguments": map[string]any{"city": "Lisbon"}}),
				req("prompts/get", map[string]any{"name": "no-such-prompt"}),
				req("completion/complete", map[string]any{"ref": map[string]any{"type": "ref/prompt", "name": "completable-prompt"},
					"argument": map[string]any{"name": "department", "value": "E"}}),
			)
			return append(steps, commonSteps()...)
		},
	}
}

// fixtureProgram is the Go conformance fixture (official Go SDK v1.8.0) as a
// stdio program: the one server here that speaks 2026-07-28.
func fixtureProgram(t *testing.T) program {
	return program{
		name: "fixture", args: []string{fixtureBin, "--stdio", "--update-every", "1h"},
		versions: []string{v20251125, v20260728},
		rootURI:  "file:///scripted-root",
		script: func(version string) []step {
			var steps []step
			if version == v20260728 {
				steps = []step{req("server/discover", map[string]any{})}
			} else {
				steps = initSteps(version, "")
			}
			steps = append(steps, listSteps()...)
			withProgress := func(s step, token string) step {
				s.params["_meta"] = map[string]any{"progressToken": token}
				return s
			}
			steps = append(steps,
				call("test_simple_text", map[string]any{}),
				call("test_image_content", map[string]any{}),
				call("test_embedded_resource", map[string]any{}),
				call("test_error_handling", map[string]any{}),
				call("test_tool_with_logging", map[string]any{}),
				withProgress(call("test_tool_with_progress", map[string]any{}), "progress-1"),
				call("test_sampling", map[string]any{"prompt": "say hi"}),
				call("test_elicitation", map[string]any{"message": "your name?"}),
				call("json_schema_2020_12_tool", map[string]any{"name": 5}), // bad arguments
				call("no_such_tool", map[string]any{}),
				req("resources/read", map[string]any{"uri": "test://static-text"}),
				req("prompts/get", map[string]any{"name": "test_simple_prompt"}),
				req("completion/complete", map[string]any{"ref": map[string]any{"type": "ref/prompt", "name": "test_prompt_with_arguments"},
					"argument": map[string]any{"name": "arg1", "value": "a"}}),
			)
			if version != v20260728 {
				steps = append(steps, req("logging/setLevel", map[string]any{"level": "debug"}), req("ping", nil))
			}
			return steps
		},
	}
}

// TestPassthroughDiff runs one script against each program directly (twice,
// to show the script is deterministic) and through two mesh hops along both
// paths a host has: `mcpmesh stdio --to B/NAME` through daemon A, and A's
// HTTP gateway at /mcp/B/NAME; B re-shares (--share-peer) what C shares
// (--share). It fails with every field that differs.
func TestPassthroughDiff(t *testing.T) {
	programs := []func(*testing.T) program{memoryProgram, filesystemProgram, thinkingProgram, everythingProgram, fixtureProgram}
	var ps []program
	for _, f := range programs {
		ps = append(ps, f(t))
	}
	var shares []share
	for _, p := range ps {
		shares = append(shares, share{name: p.name, command: p.command()})
	}
	m := startMesh(t, shares...)
	for _, p := range ps {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel() // each program has a share of its own
			for _, version := range p.versions {
				t.Run(version, func(t *testing.T) {
					script := p.script(version)
					direct := runScript(t, p.start(t), version, p.rootURI, script)
					again := runScript(t, p.start(t), version, p.rootURI, script)
					if diffs := compareOrdered(direct, again); len(diffs) > 0 {
						t.Fatalf("the script is not deterministic: two direct runs differ:\n  %s", strings.Join(diffs, "\n  "))
					}
					t.Run("stdio-to", func(t *testing.T) {
						c := startStdio(t, nil, mcpmeshBin, "--home", m.a.home, "stdio", "--to", m.target(p.name))
						report(t, "mcpmesh stdio --to "+p.name, compareOrdered(direct, runScript(t, c, version, p.rootURI, script)))
					})
					t.Run("http", func(t *testing.T) {
						hv := ""
						if version == v20260728 {
							hv = v20260728
						}
						c := newHTTPConn(t, m.url(p.name), hv)
						report(t, "/mcp/PEER/"+p.name, compareUnordered(direct, runScript(t, c, version, p.rootURI, script)))
					})
				})
			}
		})
	}
}
