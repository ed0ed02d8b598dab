package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// A Frame is one frame on its way through a Relay, as the rewrites of its
// direction see it, one after the other (see FrameRewrite and Chain). What
// they read of it is decoded once for all of them: its JSON-RPC envelope
// (Message) and, for a tools/call, what the mesh reads of its params
// (Call). Both are views: their raw fields are slices of the frame, valid
// only while the rewrites run (what a rewrite keeps, it copies).
//
// A rewrite that changes one of the mesh's own _meta fields of a request
// says so (SetMeta); the changes are made together, with one copy of the
// frame, when it goes on (Bytes). So a tools/call that the trust layer and
// the task layer both look at and change is decoded once and copied once,
// into a buffer the relay reuses from frame to frame. The views, and
// Contains, show the frame as read (or as a rewrite replaced it): without
// the _meta changes still to be made, which touch nothing else.
type Frame struct {
	b []byte

	decoded bool
	view    sdkcompat.View // the envelope, decoded into it
	msg     jsonrpc.Message
	err     error

	callRead bool
	call     CallParams
	callErr  error

	escapes int8 // 0: not looked at yet; 1: none; 2: HasKeyEscape(b)
	edits   []metaEdit

	// out is where Bytes makes the frame with its changes, and kept holds
	// the new values of the changes: both reused from frame to frame by the
	// relay (see reset).
	out, kept []byte

	dropped bool
	reply   []byte
}

// metaEdit replaces b[at:at+n] (a _meta field, "key":old) with key and
// next.
type metaEdit struct {
	at, n int
	key   []byte // quoted, with its colon
	next  []byte
}

// NewFrame returns the frame b on its way through the rewrites.
func NewFrame(b []byte) *Frame { return &Frame{b: b} }

// maxKeptBuffer bounds the output buffer a Frame keeps from one frame to the
// next: a large frame's is let go.
const maxKeptBuffer = 64 << 10

// reset makes f the frame b, keeping the buffers of the last one.
func (f *Frame) reset(b []byte) {
	out, kept, edits := f.out[:0], f.kept[:0], f.edits[:0]
	if cap(out) > maxKeptBuffer {
		out = nil
	}
	*f = Frame{b: b, out: out, kept: kept, edits: edits}
}

// keep copies b, a change's new value, into the frame's buffer for them.
func (f *Frame) keep(b []byte) []byte {
	if len(f.kept)+len(b) > cap(f.kept) {
		if len(b) > maxKeptBuffer/2 {
			return bytes.Clone(b)
		}
		// The values kept so far stay where they are, in the old buffer.
		f.kept = make([]byte, 0, min(max(2*cap(f.kept), len(b), 1024), maxKeptBuffer))
	}
	start := len(f.kept)
	f.kept = append(f.kept, b...)
	return f.kept[start:len(f.kept):len(f.kept)]
}

// Bytes returns the frame as it goes on: with the changes asked for (made
// now, once; the views are then read again from the result, if asked), the
// frame as read otherwise. Like the frame, it is valid only while the
// rewrites run.
func (f *Frame) Bytes() []byte {
	if len(f.edits) == 0 {
		return f.b
	}
	slices.SortFunc(f.edits, func(a, b metaEdit) int { return a.at - b.at })
	size := len(f.b)
	for _, e := range f.edits {
		size += len(e.key) + len(e.next) - e.n
	}
	var out []byte
	if len(f.out) == 0 && cap(f.out) > size && !aliases(f.out, f.b) {
		out = f.out[:0]
	} else {
		out = make([]byte, 0, size+1) // +1: room for the newline the conn appends
	}
	last := 0
	for _, e := range f.edits {
		out = append(out, f.b[last:e.at]...)
		out = append(out, e.key...)
		out = append(out, e.next...)
		last = e.at + e.n
	}
	out = append(out, f.b[last:]...)
	if cap(out) <= maxKeptBuffer && !aliases(f.out, out) {
		f.out = out[:0]
	}
	f.set(out)
	return out
}

// aliases reports whether a and b share their backing array's start.
func aliases(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}

// Replace makes b the frame, as a rewrite that encoded it again made it.
// It drops the _meta changes still to be made: a rewrite that may have
// others' changes before it makes them first (Bytes) and builds on the
// frame read again.
func (f *Frame) Replace(b []byte) { f.set(b) }

// set makes b the frame's bytes, its views to be read again.
func (f *Frame) set(b []byte) {
	f.b = b
	f.decoded, f.msg, f.err = false, nil, nil
	f.callRead, f.call, f.callErr = false, CallParams{}, nil
	f.escapes = 0
	f.edits = f.edits[:0]
}

// Drop drops the frame: it goes no further.
func (f *Frame) Drop() { f.dropped = true }

// Answer drops the frame and sends reply back to where it came from in its
// place (a refusal of a request).
func (f *Frame) Answer(reply []byte) {
	f.dropped, f.reply = true, reply
}

// Dropped reports whether a rewrite dropped (or answered) the frame.
func (f *Frame) Dropped() bool { return f.dropped }

// Reply returns the answer a rewrite gave in the frame's place, if any.
func (f *Frame) Reply() []byte { return f.reply }

// Contains reports whether the frame holds sub.
func (f *Frame) Contains(sub []byte) bool { return bytes.Contains(f.b, sub) }

// HasKeyEscape reports whether the frame holds a JSON escape that could
// spell a key another way than plainly (see HasKeyEscape).
func (f *Frame) HasKeyEscape() bool {
	if f.escapes == 0 {
		f.escapes = 1
		if HasKeyEscape(f.b) {
			f.escapes = 2
		}
	}
	return f.escapes == 2
}

// Message returns the frame's JSON-RPC envelope, decoded once (params and
// results stay raw: slices of the frame). The message is the frame's: it
// shows the frame again once the frame is changed, and is valid only while
// the rewrites run.
func (f *Frame) Message() (jsonrpc.Message, error) {
	if !f.decoded {
		f.decoded = true
		f.msg, f.err = f.view.Decode(f.b)
	}
	return f.msg, f.err
}

// Request returns the frame's request (a call or a notification), or nil
// if it is an answer or does not decode.
func (f *Frame) Request() *jsonrpc.Request {
	msg, _ := f.Message()
	req, _ := msg.(*jsonrpc.Request)
	return req
}

// CallParams is what the mesh reads of the params of a tools/call, read
// once for every layer of a relay, as the next node's SDK reads them: with
// the same parser, case-sensitive, the last of duplicate keys winning, and
// "_meta": null clearing what came before. Each _meta field is its raw
// value, nil when the call has none (or null); like the frame, the raw
// values are valid only while the rewrites run.
type CallParams struct {
	// Name is the tool's name ("" if it is not a string).
	Name string
	// The mesh's task context (tasks.MetaKey) and delegation
	// (delegation.MetaKey), and the caller's progress token.
	Task, Delegation, ProgressToken json.RawMessage
}

// The mesh's _meta keys CallParams reads (its field tags spell them too:
// TestCallParams holds them equal).
const (
	taskKey       = tasks.MetaKey
	delegationKey = delegation.MetaKey
)

// errNotACall is what Call returns for a frame that is not a tools/call
// request.
var errNotACall = errors.New("not a tools/call request")

// Call returns what the mesh reads of the params of the frame, a
// tools/call; an error when the frame is not one, or its params (or their
// _meta) are not objects (then the server is the one to answer them).
func (f *Frame) Call() (CallParams, error) {
	if f.callRead {
		return f.call, f.callErr
	}
	req := f.Request()
	f.callRead = true
	if req == nil || req.Method != "tools/call" {
		f.callErr = errNotACall
		return f.call, f.callErr
	}
	var head struct {
		Name json.RawMessage `json:"name"`
		Meta *struct {
			Task          json.RawMessage `json:"io.mcpmesh/task"`
			Delegation    json.RawMessage `json:"io.mcpmesh/delegation"`
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	}
	if _, err := segjson.Parse(req.Params, &head, segjson.DontMatchCaseInsensitiveStructFields|segjson.DontCopyRawMessage); err != nil {
		f.callErr = err
		return f.call, err
	}
	if len(head.Name) > 0 && head.Name[0] == '"' {
		segjson.Parse(head.Name, &f.call.Name, 0)
	}
	if m := head.Meta; m != nil {
		f.call.Task, f.call.Delegation, f.call.ProgressToken = nonNull(m.Task), nonNull(m.Delegation), nonNull(m.ProgressToken)
	}
	return f.call, nil
}

func nonNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}

// SetMeta sets the _meta field key of the frame, a request, to next (raw
// JSON, copied: the caller may reuse it), where old is its value as read
// (Call; nil when the request has none). The change is made in place, when the frame goes on, where the key
// is written once in the frame, plainly, followed by old: then that one key
// is the one the next node reads, and not, say, a field of the arguments.
// Otherwise the request is encoded again now, with the changes asked for
// before, the top level of its params and their _meta re-encoded (the other
// fields stay raw bytes).
func (f *Frame) SetMeta(key string, old, next json.RawMessage) error {
	value := f.keep(next) // next does not escape: the caller may build it on its stack
	if old != nil {
		if at, field, ok := f.fieldAt(key, old); ok {
			end := at + len(field) + len(old)
			overlaps := slices.ContainsFunc(f.edits, func(e metaEdit) bool { return at < e.at+e.n && e.at < end })
			if !overlaps {
				f.edits = append(f.edits, metaEdit{at: at, n: end - at, key: field, next: value})
				return nil
			}
		}
	}
	f.Bytes() // the changes asked for before, made
	msg, err := f.Message()
	if err != nil {
		return err
	}
	req, ok := msg.(*jsonrpc.Request)
	if !ok {
		return errors.New("set _meta: the frame is not a request")
	}
	params, err := SetMetaField(req.Params, key, value)
	if err != nil {
		return err
	}
	return f.ReplaceParams(req, params)
}

// ReplaceParams makes the frame the request req (the frame's, as Message
// read it) with params, encoded again.
func (f *Frame) ReplaceParams(req *jsonrpc.Request, params json.RawMessage) error {
	out := *req
	out.Params = params
	b, err := jsonrpc.EncodeMessage(&out)
	if err != nil {
		return err
	}
	f.Replace(b)
	return nil
}

// Apply runs rw on frame as a Relay does, and returns the frame to pass on
// (nil if rw dropped it) and the answer rw gave in its place (nil for none).
func Apply(rw FrameRewrite, frame []byte) (forward, reply []byte, err error) {
	f := NewFrame(frame)
	if err := rw(f); err != nil {
		return nil, nil, err
	}
	if !f.Dropped() {
		forward = f.Bytes()
	}
	return forward, f.Reply(), nil
}

// fieldAt finds "key":old in the frame where the key is written once,
// plainly, and the frame holds no escape that could spell it otherwise; it
// returns where, and the key as written with its colon.
func (f *Frame) fieldAt(key string, old []byte) (int, []byte, bool) {
	if f.HasKeyEscape() {
		return 0, nil, false
	}
	var field []byte
	switch key {
	case taskKey:
		field = taskFieldColon
	case delegationKey:
		field = delegationFieldColon
	default:
		field = []byte(`"` + key + `":`)
	}
	quoted := field[:len(field)-1]
	if bytes.Count(f.b, quoted) != 1 {
		return 0, nil, false
	}
	i := bytes.Index(f.b, field)
	if i < 0 || !bytes.HasPrefix(f.b[i+len(field):], old) {
		return 0, nil, false
	}
	return i, field, true
}

var (
	taskFieldColon       = []byte(`"` + taskKey + `":`)
	delegationFieldColon = []byte(`"` + delegationKey + `":`)
)

// IsPlainString reports whether b is written the same inside a JSON string:
// printable ASCII with no quote nor backslash.
func IsPlainString(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// AppendString appends s to b as a JSON string (as encoding/json writes
// it, but for the HTML characters, which it writes plainly).
func AppendString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		q, _ := json.Marshal(s) // invalid bytes become U+FFFD, as encoding/json makes them
		return append(b, q...)
	}
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
