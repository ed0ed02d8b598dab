package relay

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// sdkParams reads a frame's params as the next node's SDK does.
func sdkParams(t *testing.T, frame []byte) (*jsonrpc.Request, map[string]any) {
	t.Helper()
	msg, err := sdkcompat.DecodeMessage(frame)
	if err != nil {
		t.Fatalf("%s: %v", frame, err)
	}
	req, ok := msg.(*jsonrpc.Request)
	if !ok {
		t.Fatalf("%s: not a request", frame)
	}
	var p map[string]any
	if _, err := segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		t.Fatalf("%s: params: %v", frame, err)
	}
	return req, p
}

// TestFrameSetMeta changes the task context and the delegation of a
// tools/call, as the task and trust layers of a relay do, and checks what
// the next node reads: the new values, and everything else as it was. Where
// the fields are written once and plainly, the frame is changed in place,
// both at once, byte for byte otherwise the same; where they are not (an
// escape, a key also in the arguments, a field the call lacks), it is
// encoded again.
func TestFrameSetMeta(t *testing.T) {
	const (
		task = `"t1 r1 - 8 0 0 caller"`
		next = `"t2 r1 t1 7 0 0 caller,relay"`
		del  = `["link0"]`
		del2 = `["link0","link1"]`
	)
	for _, c := range []struct {
		name, frame string
		spliced     bool // changed in place
	}{
		{"plain", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.mcpmesh/task":` + task + `,"io.mcpmesh/delegation":` + del + `,"progressToken":3}}}`, true},
		{"delegation first", `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"_meta":{"io.mcpmesh/delegation":` + del + `,"io.mcpmesh/task":` + task + `},"name":"echo"}}`, true},
		{"escape", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"h\u0069"},"_meta":{"io.mcpmesh/task":` + task + `,"io.mcpmesh/delegation":` + del + `}}}`, false},
		{"key in the arguments", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"io.mcpmesh/task":` + task + `},"_meta":{"io.mcpmesh/task":` + task + `,"io.mcpmesh/delegation":` + del + `}}}`, false},
		{"spaced", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","_meta":{"io.mcpmesh/task": ` + task + `,"io.mcpmesh/delegation":` + del + `}}}`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := []byte(c.frame)
			f := NewFrame(append([]byte(nil), in...))
			head, err := f.Call()
			if err != nil || head.Name != "echo" || string(head.Task) != task || string(head.Delegation) != del {
				t.Fatalf("Call: %+v, %v", head, err)
			}
			if err := f.SetMeta(tasks.MetaKey, head.Task, []byte(next)); err != nil {
				t.Fatal(err)
			}
			head, _ = f.Call() // read again if the frame was encoded again
			if err := f.SetMeta(delegation.MetaKey, head.Delegation, []byte(del2)); err != nil {
				t.Fatal(err)
			}
			out := f.Bytes()
			req, p := sdkParams(t, out)
			wantReq, want := sdkParams(t, in)
			meta := p["_meta"].(map[string]any)
			if meta[tasks.MetaKey] != "t2 r1 t1 7 0 0 caller,relay" || !reflect.DeepEqual(meta[delegation.MetaKey], []any{"link0", "link1"}) {
				t.Fatalf("the next node reads %v in %s", meta, out)
			}
			wantMeta := want["_meta"].(map[string]any)
			wantMeta[tasks.MetaKey], wantMeta[delegation.MetaKey] = meta[tasks.MetaKey], meta[delegation.MetaKey]
			if !reflect.DeepEqual(p, want) || req.ID != wantReq.ID || req.Method != wantReq.Method {
				t.Fatalf("more than the two fields changed:\n in  %s\n out %s", in, out)
			}
			inPlace := strings.Replace(strings.Replace(c.frame, `"io.mcpmesh/task":`+task, `"io.mcpmesh/task":`+next, 1),
				`"io.mcpmesh/delegation":`+del, `"io.mcpmesh/delegation":`+del2, 1)
			spliced := string(out) == inPlace
			if spliced != c.spliced {
				t.Errorf("changed in place: %v, want %v\n in  %s\n out %s", spliced, c.spliced, in, out)
			}
		})
	}

	// A call without a task context gets one; "_meta": null is none.
	f := NewFrame([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":null}}`))
	head, err := f.Call()
	if err != nil || head.Task != nil || head.Delegation != nil {
		t.Fatalf("Call: %+v, %v", head, err)
	}
	if err := f.SetMeta(tasks.MetaKey, nil, []byte(next)); err != nil {
		t.Fatal(err)
	}
	if _, p := sdkParams(t, f.Bytes()); p["_meta"].(map[string]any)[tasks.MetaKey] == nil {
		t.Fatalf("no task context added: %s", f.Bytes())
	}
}

// TestFrameReuse relays frames one after another through one Frame, as a
// Relay does: a frame's changes never show in the next, and a frame no
// rewrite changes goes on as it was read.
func TestFrameReuse(t *testing.T) {
	var f Frame
	call := func(id, task string) []byte {
		return []byte(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"echo","_meta":{"io.mcpmesh/task":"` + task + `"}}}`)
	}
	for i, frame := range [][]byte{call("1", "a"), call("2", "bb"), []byte(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}`), call("3", "ccc")} {
		f.reset(frame)
		msg, err := f.Message()
		if err != nil {
			t.Fatal(err)
		}
		req := msg.(*jsonrpc.Request)
		if req.Method != "tools/call" {
			if out := f.Bytes(); &out[0] != &frame[0] {
				t.Fatalf("frame %d: an unchanged frame was copied", i)
			}
			continue
		}
		head, _ := f.Call()
		value, _ := json.Marshal(string(head.Task[1:len(head.Task)-1]) + "-next")
		if err := f.SetMeta(tasks.MetaKey, head.Task, value); err != nil {
			t.Fatal(err)
		}
		_, p := sdkParams(t, f.Bytes())
		got := p["_meta"].(map[string]any)[tasks.MetaKey]
		if want := string(head.Task[1:len(head.Task)-1]) + "-next"; got != want {
			t.Fatalf("frame %d: task %v, want %q", i, got, want)
		}
	}
}
