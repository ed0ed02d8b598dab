package tracker

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/internal/fuzzseed"
	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/tasks"
)

var (
	fuzzRelay  = lpeer.ID("relay-node-id")
	fuzzCaller = lpeer.ID("caller-node-id")
	fuzzTarget = lpeer.ID("target-node-id")
	// The peer IDs as they appear on a task path.
	relayStr, callerStr = fuzzRelay.String(), fuzzCaller.String()
)

// sdkTask reads params._meta[task key] as the next node's SDK does
// (segmentio, case-sensitive, generic maps; the last of duplicate keys).
func sdkTask(params json.RawMessage) (string, bool) {
	var p struct {
		Meta map[string]any `json:"_meta"`
	}
	if _, err := segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return "", false
	}
	s, ok := p.Meta[tasks.MetaKey].(string)
	return s, ok
}

// FuzzRelayFrames drives a relay hop's task rewrite (RelaySession, for a
// re-shared server) with arbitrary frames from a client. It checks that
// nothing panics; that a frame that is not a tools/call passes byte for
// byte; that a frame passed on changed is still a JSON-RPC request with the
// same ID and method, with nothing but its _meta changed; that the task
// context the next node's SDK reads in it, if the next node's guard accepts
// it from the relay, is the child of a task of the relay that continues the
// incoming one (its path extended by this hop, its budget one less, its
// time no longer): a relay never launders a path; and that a refusal is an
// error response to the request's ID.
func FuzzRelayFrames(f *testing.F) {
	for _, s := range fuzzseed.RelayFrames(callerStr, relayStr) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		tr := New(Config{Self: fuzzRelay})
		defer tr.Close()
		s := tr.Relay("far", fuzzCaller, Target{Peer: fuzzTarget, Server: "node"},
			func(jsonrpc.Message) error { return nil }, func(jsonrpc.Message) error { return nil })
		defer s.End(nil)
		in := slices.Clone(frame)
		fwd, reply, err := relay.Apply(s.ToServer, in)
		if !bytes.Equal(in, frame) {
			t.Fatal("the rewrite changed its input frame")
		}
		msg, derr := sdkcompat.DecodeMessage(frame)
		req, _ := msg.(*jsonrpc.Request)
		switch {
		case err != nil:
			if fwd != nil || reply != nil {
				t.Fatal("a frame both refused with an error and passed on")
			}
			if derr == nil {
				t.Fatalf("a frame that decodes broke the session: %v", err)
			}
		case reply != nil:
			if fwd != nil {
				t.Fatal("a request both refused and passed on")
			}
			rm, err := sdkcompat.DecodeMessage(reply)
			resp, ok := rm.(*jsonrpc.Response)
			if err != nil || !ok || resp.Error == nil || req == nil || resp.ID != req.ID {
				t.Fatalf("refusal %q of %q is not an error answer to it (%v)", reply, frame, err)
			}
		case fwd == nil:
			t.Fatalf("frame %q dropped without an answer", frame)
		case bytes.Equal(fwd, frame):
			if req != nil && req.Method == "tools/call" && req.ID.IsValid() {
				t.Fatalf("a call passed on without the relay's task context: %q", frame)
			}
		default:
			out, err := sdkcompat.DecodeMessage(fwd)
			oreq, ok := out.(*jsonrpc.Request)
			if err != nil || !ok || req == nil || oreq.Method != req.Method || oreq.ID != req.ID {
				t.Fatalf("rewritten frame is not the same request (%v):\n in  %q\n out %q", err, frame, fwd)
			}
			checkOnlyMetaChanged(t, req.Params, oreq.Params)
			checkChild(t, tr, req, oreq)
		}
	})
}

// checkChild checks the task context the relay passed on: if the next
// node's guard accepts it from the relay, it is the child of the relay's
// task, and that task continues the incoming context.
func checkChild(t *testing.T, tr *Tracker, in, out *jsonrpc.Request) {
	t.Helper()
	next, ok := sdkTask(out.Params)
	if !ok {
		return
	}
	nm, err := tasks.Parse(next)
	if err != nil || tasks.Check(nm, "the next node", relayStr) != nil {
		return
	}
	e, ok := tr.reg.Lookup(nm.Parent)
	if !ok {
		t.Fatalf("the context passed on (%q) names parent %s, no task of the relay", next, nm.Parent)
	}
	mine := e.Snapshot(false)
	if mine.Role != tasks.Relayed || len(mine.Children) != 1 || mine.Children[0].Task != nm.ID {
		t.Fatalf("the relay's task %+v does not record its child %s", mine, nm.ID)
	}
	if !slices.Equal(nm.Path, append(slices.Clone(mine.Path), relayStr)) || nm.Budget != mine.Budget-1 || nm.Root != mine.Root {
		t.Fatalf("relay hop: its task %+v passed on %q", mine, next)
	}
	old, had := sdkTask(in.Params)
	if !had {
		if !slices.Equal(mine.Path, []string{callerStr}) || mine.Root != mine.ID || mine.Budget != tasks.DefaultBudget {
			t.Fatalf("a call without a task context became %+v, not the root of a new tree", mine)
		}
		return
	}
	om, err := tasks.Parse(old)
	if err != nil {
		t.Fatalf("the relay made a task of a context that does not parse (%q): %v", old, err)
	}
	// The guard lowers a budget over what the path allows (tasks.Check).
	if mine.ID != om.ID || mine.Root != om.Root || mine.Parent != om.Parent || !slices.Equal(mine.Path, om.Path) || mine.Budget != min(om.Budget, tasks.MaxBudget(om.Path)) {
		t.Fatalf("the relay's task %+v is not the incoming %q", mine, old)
	}
	if om.TimeoutMs > 0 && (nm.TimeoutMs < 1 || nm.TimeoutMs > om.TimeoutMs) {
		t.Fatalf("relay hop: %d ms left became %d", om.TimeoutMs, nm.TimeoutMs)
	}
}

// checkOnlyMetaChanged checks that the relay's rewrite left every field of
// the params but _meta as the next node reads it (the arguments above all).
func checkOnlyMetaChanged(t *testing.T, in, out json.RawMessage) {
	t.Helper()
	var a, b map[string]any
	if _, err := segjson.Parse(in, &a, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return
	}
	if _, err := segjson.Parse(out, &b, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		t.Fatalf("rewritten params do not decode: %v\n in  %q\n out %q", err, in, out)
	}
	delete(a, "_meta")
	delete(b, "_meta")
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("the rewrite changed more than _meta:\n in  %q\n out %q", in, out)
	}
}
