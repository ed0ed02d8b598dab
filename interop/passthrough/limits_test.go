package passthrough

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// overLimit is a size above the mesh's default message limit (4 MiB,
// --max-message-size).
const overLimit = 5 << 20

// namesTheLimit reports whether an error message says that a size limit was
// hit and which: "limit" and the size (4 MiB, or in bytes).
func namesTheLimit(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "limit") && (strings.Contains(m, "4 mib") || strings.Contains(m, "4mib") || strings.Contains(m, "4194304"))
}

// A message over the limit, either way, is answered with a JSON-RPC error
// that names the limit, on both of a host's paths: never a silent exit or a
// request left unanswered. (Directly, the programs answer both: the limit is
// the mesh's, so the mesh must say so.)
func TestLimitsThatSaySo(t *testing.T) {
	everything := everythingProgram(t)
	fs := filesystemProgram(t)
	big := filepath.Join(strings.TrimPrefix(fs.rootURI, "file://"), "big.txt")
	if err := os.WriteFile(big, []byte(strings.Repeat("x", overLimit)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startMesh(t, share{name: "everything", command: everything.command()}, share{name: "filesystem", command: fs.command()})

	cases := []struct {
		name, server, tool string
		args               map[string]any
	}{
		// The host's request is over the limit.
		{"request", "everything", "echo", map[string]any{"message": strings.Repeat("y", overLimit)}},
		// The program's result is over the limit.
		{"result", "filesystem", "read_text_file", map[string]any{"path": big}},
	}
	for _, c := range cases {
		for _, path := range []string{"stdio-to", "http"} {
			t.Run(c.name+"/"+path, func(t *testing.T) {
				var conn conn
				var proc *stdioConn
				if path == "http" {
					conn = newHTTPConn(t, m.url(c.server), "")
				} else {
					proc = startStdio(t, nil, mcpmeshBin, "--home", m.a.home, "stdio", "--to", m.target(c.server))
					conn = proc
				}
				r := &runner{t: t, c: conn, nextID: 1}
				for _, s := range initSteps(v20251125, "") {
					r.do(s)
				}
				id, msg := r.request("tools/call", map[string]any{"name": c.tool, "arguments": c.args})
				if err := conn.send(msg); err != nil {
					t.Fatalf("send: %v", err)
				}
				var got []byte
				deadline := time.After(20 * time.Second)
			wait:
				for {
					select {
					case m, ok := <-conn.in():
						if !ok {
							break wait
						}
						if isResponseTo(m, id) {
							got = m
							break wait
						}
					case <-deadline:
						break wait
					}
				}
				if got == nil {
					detail := "no answer within 20s"
					if proc != nil {
						if code := proc.exitCode(2 * time.Second); code >= 0 {
							detail = fmt.Sprintf("mcpmesh stdio exited with status %d, stderr %q", code, proc.stderr.String())
						}
					}
					t.Fatalf("a %s over 4 MiB: %s; want a JSON-RPC error naming the limit", c.name, detail)
				}
				var resp struct {
					Error *struct {
						Code    int    `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
					HTTPStatus int    `json:"httpStatus"`
					Body       string `json:"body"`
				}
				json.Unmarshal(got, &resp)
				switch {
				case resp.HTTPStatus != 0:
					t.Fatalf("a %s over 4 MiB: HTTP %d %q, not a JSON-RPC error", c.name, resp.HTTPStatus, resp.Body)
				case resp.Error == nil:
					t.Fatalf("a %s over 4 MiB: answered with a result (%d bytes), not an error", c.name, len(got))
				case !namesTheLimit(resp.Error.Message):
					t.Fatalf("a %s over 4 MiB: error %d %q does not name the limit", c.name, resp.Error.Code, resp.Error.Message)
				}
			})
		}
	}
}
