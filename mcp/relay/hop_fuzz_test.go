package relay

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
	"github.com/mcpmesh/mcpmesh/tasks"
)

var (
	fuzzRelay  = lpeer.ID("relay-node-id")
	fuzzCaller = lpeer.ID("caller-node-id")
	// The peer IDs as they appear on a task path.
	relayStr, callerStr = fuzzRelay.String(), fuzzCaller.String()
)

func relayFrameCorpus() []string { return fuzzseed.RelayFrames(callerStr, relayStr) }

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

// checkExtended checks that the task context sent on, next, is the one that
// came in, old, extended by the relay as a hop.
func checkExtended(t *testing.T, old, next string) {
	t.Helper()
	om, err := tasks.Parse(old)
	if err != nil {
		t.Fatalf("the relay passed on a rewritten context from %q, which does not parse: %v", old, err)
	}
	nm, err := tasks.Parse(next)
	if err != nil {
		t.Fatalf("the relay passed on %q, which does not parse: %v", next, err)
	}
	if !slices.Equal(nm.Path, append(slices.Clone(om.Path), relayStr)) || nm.Budget != om.Budget-1 ||
		nm.ID != om.ID || nm.Root != om.Root || nm.Parent != om.Parent || nm.Detach != om.Detach {
		t.Fatalf("relay hop: %q became %q", old, next)
	}
	if om.TimeoutMs > 0 && (nm.TimeoutMs < 1 || nm.TimeoutMs > om.TimeoutMs) {
		t.Fatalf("relay hop: %d ms left became %d", om.TimeoutMs, nm.TimeoutMs)
	}
	if err := tasks.Check(nm, "the next node", relayStr); err != nil && nm.Budget >= 1 {
		t.Fatalf("the next node refuses what the relay passed on (%q): %v", next, err)
	}
}

// FuzzRelayFrames drives the frame rewrite of a re-shared server (the
// relay's extendTask, spliceMeta and replaceMeta) with arbitrary frames
// from a client, and the same rewrite on decoded messages (TaskHopMessages,
// for a Pump). It checks that nothing panics; that a frame without the task
// field passes byte for byte; that a frame passed on changed is still a
// JSON-RPC request with the same ID and method whose task context, read as
// the next node's SDK reads it, is the incoming one extended by this hop
// (nothing else in the frame may hold the old value in its place); and
// that a refusal is an error response to the request's ID.
func FuzzRelayFrames(f *testing.F) {
	for _, s := range relayFrameCorpus() {
		f.Add([]byte(s))
	}
	frames := TaskHop(fuzzRelay, fuzzCaller)
	messages := TaskHopMessages(fuzzRelay, fuzzCaller)
	f.Fuzz(func(t *testing.T, frame []byte) {
		in := slices.Clone(frame)
		fwd, reply, err := frames(in)
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
			return
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
			if req == nil || req.ID.IsValid() {
				t.Fatalf("frame %q dropped without an answer", frame)
			}
		default:
			out, err := sdkcompat.DecodeMessage(fwd)
			if !bytes.Equal(fwd, frame) {
				oreq, ok := out.(*jsonrpc.Request)
				if err != nil || !ok || req == nil || oreq.Method != req.Method || oreq.ID != req.ID {
					t.Fatalf("rewritten frame is not the same request (%v):\n in  %q\n out %q", err, frame, fwd)
				}
			}
			checkPassedOn(t, req, out)
			if oreq, ok := out.(*jsonrpc.Request); ok && req != nil {
				checkOnlyMetaChanged(t, req.Params, oreq.Params)
			}
		}

		// The same rewrite on a decoded message (a session from the node
		// itself, through Pump) must agree.
		if derr != nil {
			return
		}
		fmsg, rmsg, err := messages(msg)
		if err != nil {
			t.Fatalf("message rewrite failed: %v", err)
		}
		if (rmsg == nil) != (reply == nil) {
			t.Fatalf("frame and message rewrites disagree on refusing %q: %v / %q", frame, rmsg, reply)
		}
		if fmsg != nil {
			checkPassedOn(t, req, fmsg)
			if oreq, ok := fmsg.(*jsonrpc.Request); ok && req != nil {
				checkOnlyMetaChanged(t, req.Params, oreq.Params)
			}
		}
	})
}

// checkPassedOn checks what the relay passes on, out, for the request in
// that came from the caller: if the next node's SDK reads a task context in
// it that the next node's guard accepts from the relay, it must be the
// incoming context extended by this hop. (A context the guard refuses is
// harmless: the call fails there.) The relay must never launder a path.
func checkPassedOn(t *testing.T, in *jsonrpc.Request, out jsonrpc.Message) {
	t.Helper()
	oreq, ok := out.(*jsonrpc.Request)
	if !ok || oreq.Method != "tools/call" {
		return
	}
	next, ok := sdkTask(oreq.Params)
	if !ok {
		return
	}
	nm, err := tasks.Parse(next)
	if err != nil || tasks.Check(nm, "the next node", relayStr) != nil {
		return
	}
	var old string
	if in != nil {
		old, _ = sdkTask(in.Params)
	}
	checkExtended(t, old, next)
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
