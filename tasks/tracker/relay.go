package tracker

// Relayed calls: a tools/call that a node passes through, to a peer's
// server (--share-peer) or to a server it shares from a program or an
// endpoint, is a task of its registry like a served one: visible in the
// tree, cancellable, its progress recorded. The relay sees frames, not
// handler contexts, so the task follows the call's frames: it begins with
// the request, ends with the answer, and its cancellation or deadline is a
// notifications/cancelled to the server and an answer to the caller.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// Target is where a relayed session goes: the server Server of the peer
// Peer (a relay hop, whose calls go on as children of its tasks), or, with
// no peer, a server the node shares from outside the mesh (a leaf: its
// calls end there).
type Target struct {
	Peer   lpeer.ID
	Server string
}

// CodeCancelled is the JSON-RPC error code of a relayed call that was
// cancelled on the relaying node (not by its caller, who expects no
// answer).
const CodeCancelled int64 = -32800

// RelaySession is the task layer of one relayed session: ToServer and
// ToClient are its frame rewrites (nil when task tracking is off), End
// must be called when the session ends.
type RelaySession struct {
	ToServer, ToClient relay.FrameRewrite

	tr         *Tracker
	name       string // the server the node shares the session under
	caller     string
	target     Target
	targetText string
	leaf       bool
	toServer   func(jsonrpc.Message) error
	toClient   func(jsonrpc.Message) error

	mu       sync.Mutex
	calls    map[jsonrpc.ID]*relayedCall
	tokens   map[string]*relayedCall // progress token (its JSON) → call
	answered map[jsonrpc.ID]struct{} // calls this node answered: their late answers are dropped
	ended    bool
}

// relayedCall is a relayed tools/call in flight.
type relayedCall struct {
	id       jsonrpc.ID
	entry    *tasks.Entry
	meta     *tasks.Meta // the task's own context
	hop      tasks.Hop   // this node's part, for failures that start here
	child    *tasks.Hop  // the call passed on (relay hops): childHop, or nil
	childHop tasks.Hop
	token    string
	timer    *time.Timer
}

// Relay returns the task layer of a session that the node relays, under
// the server name, from caller to t. toServer and toClient write a message
// of the node's own to either side (a cancellation, an answer).
func (tr *Tracker) Relay(name string, caller lpeer.ID, t Target, toServer, toClient func(jsonrpc.Message) error) *RelaySession {
	s := &RelaySession{tr: tr, name: name, caller: tr.names.Of(caller), target: t, leaf: t.Peer == "",
		toServer: toServer, toClient: toClient,
		calls: map[jsonrpc.ID]*relayedCall{}, tokens: map[string]*relayedCall{}, answered: map[jsonrpc.ID]struct{}{}}
	if !s.leaf {
		s.targetText = tr.names.Of(t.Peer)
	}
	if !tr.cfg.Off {
		s.ToServer, s.ToClient = s.fromClient, s.fromServer
	}
	return s
}

var (
	toolsCallField = []byte(`tools/call`)
	cancelledField = []byte(`notifications/cancelled`)
)

// Busy reports whether a call is in flight.
func (s *RelaySession) Busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls) > 0
}

// fromClient sees each frame from the caller: a tools/call begins a task
// (guards first: a call its context does not allow is refused here), a
// notifications/cancelled ends one.
func (s *RelaySession) fromClient(f *relay.Frame) error {
	if !f.Contains(toolsCallField) && !f.HasKeyEscape() &&
		!(f.Contains(cancelledField) && s.Busy()) {
		return nil
	}
	msg, err := f.Message()
	if err != nil {
		return err
	}
	req, ok := msg.(*jsonrpc.Request)
	switch {
	case !ok:
		return nil
	case req.Method == "notifications/cancelled":
		s.cancelledByCaller(req.Params)
		return nil
	case req.Method != "tools/call" || !req.ID.IsValid():
		return nil
	}
	return s.begin(f, req)
}

// begin makes a relayed tools/call a task, and for a relay hop passes its
// context on as the task's child.
func (s *RelaySession) begin(f *relay.Frame, req *jsonrpc.Request) error {
	tr := s.tr
	self := tr.reg.Self()
	// Read as the next node's SDK reads it, so that the relay judges the
	// very context the next node would see. Params that do not read (not an
	// object) carry none: not the relay's to judge, the server answers them.
	head, _ := f.Call()
	refuse := func(format string, args ...any) error {
		out, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("%s/%s on %s: ", s.name, head.Name, self) + fmt.Sprintf(format, args...)}})
		f.Answer(out)
		return nil
	}
	var m *tasks.Meta
	if head.Task != nil {
		var old string
		if _, err := segjson.Parse(head.Task, &old, 0); err != nil {
			return refuse(`_meta %q: want a string`, tasks.MetaKey)
		}
		var err error
		if m, err = tasks.Parse(old); err != nil {
			return refuse("%v", err)
		}
	} else {
		// A call from outside the mesh's task layer (a plain MCP client):
		// the root of a new tree.
		id := tasks.NewID()
		m = &tasks.Meta{ID: id, Root: id, Path: []string{s.caller}, Budget: tasks.DefaultBudget}
	}
	// The guards a served call meets, the hop budget clamped to this
	// node's limit: the child passed on below has one hop less than that,
	// whatever the caller wrote.
	claimed, err := tr.admit(m, s.caller, head.Name)
	if err != nil {
		return refuse("%v", err)
	}
	c := &relayedCall{id: req.ID, meta: m}
	role, target := tasks.Served, ""
	if !s.leaf {
		role, target = tasks.Relayed, s.targetText
	}
	var deadline time.Time
	if t := m.Timeout(); t > 0 {
		deadline = time.Now().Add(t)
	}
	cancel := func() { s.stop(c, tasks.Cancelled) }
	e, resumed := tr.reg.Resume(m.ID, s.caller, cancel)
	if !resumed {
		e, err = tr.reg.Begin(tasks.Task{ID: m.ID, Root: m.Root, Role: role, Caller: s.caller, Parent: m.Parent, Path: m.Path,
			Server: s.name, Tool: head.Name, Target: target, Budget: m.Budget, BudgetClaimed: claimed, Deadline: deadline}, cancel)
		if err != nil {
			return refuse("%v", err)
		}
	}
	c.entry = e
	c.hop = tasks.Hop{Task: e.ID(), Peer: self, Server: s.name, Tool: head.Name}
	if !s.leaf {
		child := m.Child(self, 0, m.Timeout())
		if prev := lastChild(e); resumed && prev != nil {
			child.ID = prev.Task // the caller's retry (2026-07-28) resumes the same task below
		} else {
			e.AddChild(tasks.Hop{Task: child.ID, Peer: s.targetText, Server: s.target.Server, Tool: head.Name})
		}
		c.childHop = tasks.Hop{Task: child.ID, Peer: s.targetText, Server: s.target.Server, Tool: head.Name}
		c.child = &c.childHop
		var buf [512]byte // SetMeta copies it
		next := child.AppendText(append(buf[:0], '"'))
		if relay.IsPlainString(next[1:]) {
			next = append(next, '"')
		} else {
			next = relay.AppendString(nil, string(next[1:]))
		}
		if err := f.SetMeta(tasks.MetaKey, head.Task, next); err != nil {
			e.Finish(tasks.Failed, nil, err, &c.hop)
			return refuse("%v", err)
		}
	}
	if head.ProgressToken != nil {
		c.token = string(head.ProgressToken)
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		e.Finish(tasks.Failed, nil, errors.New("session ended"), &c.hop)
		f.Drop()
		return nil
	}
	if prev, ok := s.calls[req.ID]; ok {
		s.forgetLocked(prev)
		prev.entry.Finish(tasks.Failed, nil, errors.New("request ID reused while in flight"), &prev.hop)
	}
	s.calls[req.ID] = c
	if c.token != "" {
		s.tokens[c.token] = c
	}
	s.mu.Unlock()
	if !deadline.IsZero() {
		c.timer = time.AfterFunc(time.Until(deadline), func() { s.stop(c, tasks.Failed) })
	}
	return nil
}

// lastChild returns the last call task e made, if any.
func lastChild(e *tasks.Entry) *tasks.Hop {
	ch := e.Snapshot(false).Children
	if len(ch) == 0 {
		return nil
	}
	return &ch[len(ch)-1]
}

// forgetLocked removes c from what the session tracks.
func (s *RelaySession) forgetLocked(c *relayedCall) {
	delete(s.calls, c.id)
	if c.token != "" && s.tokens[c.token] == c {
		delete(s.tokens, c.token)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
}

// take removes and returns the call id, if in flight.
func (s *RelaySession) take(id jsonrpc.ID) (*relayedCall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.calls[id]
	if ok {
		s.forgetLocked(c)
	}
	return c, ok
}

// cancelledByCaller ends the task of a call its caller cancelled.
func (s *RelaySession) cancelledByCaller(params json.RawMessage) {
	var p struct {
		RequestID any `json:"requestId"`
	}
	if _, err := segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return
	}
	id, err := jsonrpc.MakeID(p.RequestID)
	if err != nil {
		return
	}
	if c, ok := s.take(id); ok {
		c.entry.Finish(tasks.Cancelled, nil, errors.New("cancelled by its caller"), nil)
	}
}

// stop ends a call on this node, cancelled (tasks cancel) or past its
// deadline: the server is told to stop (notifications/cancelled), and the
// caller, who still waits, gets an answer that names this hop.
func (s *RelaySession) stop(c *relayedCall, state tasks.State) {
	s.mu.Lock()
	if s.calls[c.id] != c {
		s.mu.Unlock()
		return // answered meanwhile
	}
	s.forgetLocked(c)
	s.answered[c.id] = struct{}{}
	s.mu.Unlock()
	self := s.tr.reg.Self()
	why := fmt.Sprintf("%s/%s on %s: cancelled (task %s)", c.hop.Server, c.hop.Tool, self, c.entry.ID())
	var answer *jsonrpc.Response
	if state == tasks.Cancelled {
		c.entry.Finish(tasks.Cancelled, nil, errors.New(why), nil)
		answer = &jsonrpc.Response{ID: c.id, Error: &jsonrpc.Error{Code: CodeCancelled, Message: why}}
	} else {
		why = fmt.Sprintf("%s/%s on %s: deadline exceeded", c.hop.Server, c.hop.Tool, self)
		c.entry.Finish(tasks.Failed, nil, errors.New(why), &c.hop)
		answer = failedResult(c.id, why, tasks.ResultMeta{Task: c.entry.ID(), State: tasks.Failed, FailedAt: &c.hop})
	}
	params, _ := json.Marshal(map[string]any{"requestId": c.id.Raw(), "reason": why})
	if err := s.toServer(&jsonrpc.Request{Method: "notifications/cancelled", Params: params}); err != nil {
		taskLog.Debugw("cancel a relayed call upstream", "task", c.entry.ID(), "error", err)
	}
	if err := s.toClient(answer); err != nil {
		taskLog.Debugw("answer a relayed call stopped here", "task", c.entry.ID(), "error", err)
	}
}

// failedResult is a tool result that failed with text, the task's record
// in its _meta.
func failedResult(id jsonrpc.ID, text string, rm tasks.ResultMeta) *jsonrpc.Response {
	raw, err := json.Marshal(map[string]any{
		"content": []any{map[string]any{"type": "text", "text": text}},
		"isError": true,
		"_meta":   map[string]any{tasks.MetaKey: rm},
	})
	if err != nil {
		return &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: text}}
	}
	return &jsonrpc.Response{ID: id, Result: raw}
}

var progressField = []byte(`notifications/progress`)

// fromServer sees each frame from the server while calls are in flight: an
// answer ends its task, progress is recorded, a question (2025-11-25,
// where it names no call) is marked with the task it belongs to.
func (s *RelaySession) fromServer(f *relay.Frame) error {
	if !s.Busy() {
		s.mu.Lock()
		none := len(s.answered) == 0
		s.mu.Unlock()
		if none {
			return nil
		}
	}
	msg, err := f.Message()
	if err != nil {
		return err
	}
	switch m := msg.(type) {
	case *jsonrpc.Response:
		s.answer(f, m)
	case *jsonrpc.Request:
		switch {
		case m.Method == "notifications/progress":
			s.progress(m.Params)
		case m.IsCall() && (m.Method == "elicitation/create" || m.Method == "sampling/createMessage"):
			s.question(f, m)
		}
	}
	return nil
}

// answer ends the task of the call resp answers.
func (s *RelaySession) answer(f *relay.Frame, resp *jsonrpc.Response) {
	c, ok := s.take(resp.ID)
	if !ok {
		s.mu.Lock()
		_, late := s.answered[resp.ID]
		delete(s.answered, resp.ID)
		s.mu.Unlock()
		if late {
			f.Drop() // this node answered it already
		}
		return
	}
	below := &c.hop // where a failure without a record of its own started
	if c.child != nil {
		below = c.child
	}
	if resp.Error != nil {
		c.entry.Finish(tasks.Failed, nil, resp.Error, below)
		return
	}
	var r struct {
		IsError    bool           `json:"isError"`
		ResultType string         `json:"resultType"`
		Meta       map[string]any `json:"_meta"`
	}
	segjson.Parse(resp.Result, &r, segjson.DontMatchCaseInsensitiveStructFields)
	result := json.RawMessage(bytes.Clone(resp.Result))
	switch {
	case r.ResultType == "input_required":
		c.entry.Park() // the caller answers and calls again, with the same task
	case r.IsError:
		failedAt := below
		if rm, ok := tasks.DecodeResult(r.Meta); ok && rm.FailedAt != nil {
			failedAt = rm.FailedAt
		} else if s.leaf {
			// Where the failure started, in the mesh's own _meta key.
			raw, _ := json.Marshal(tasks.ResultMeta{Task: c.entry.ID(), State: tasks.Failed, FailedAt: failedAt})
			if res, err := relay.SetMetaField(resp.Result, tasks.MetaKey, raw); err == nil {
				out := *resp
				out.Result = res
				if b, err := jsonrpc.EncodeMessage(&out); err == nil {
					f.Replace(b)
				}
			}
		}
		c.entry.Finish(tasks.Failed, result, errors.New("tool error"), failedAt)
	default:
		c.entry.Finish(tasks.Completed, result, nil, nil)
	}
}

// progress records a progress notification on the task whose call it
// belongs to.
func (s *RelaySession) progress(params json.RawMessage) {
	var p struct {
		Token    json.RawMessage `json:"progressToken"`
		Progress float64         `json:"progress"`
		Total    float64         `json:"total"`
		Message  string          `json:"message"`
	}
	if _, err := segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields); err != nil {
		return
	}
	s.mu.Lock()
	c, ok := s.tokens[string(p.Token)]
	s.mu.Unlock()
	if ok {
		c.entry.SetProgress(p.Progress, p.Total, p.Message)
	}
}

// question marks a question from the server with the caller's task it
// belongs to (tasks.AskKey), so that the calling node asks the right user:
// on 2025-11-25 the question names no call. A leaf knows it when exactly
// one call is in flight; a relay hop reads the task the node below named
// and names its own caller's instead.
func (s *RelaySession) question(f *relay.Frame, req *jsonrpc.Request) {
	var parent string
	if s.leaf {
		s.mu.Lock()
		if len(s.calls) == 1 {
			for _, c := range s.calls {
				parent = c.meta.Parent
			}
		}
		s.mu.Unlock()
		if parent == "" {
			return
		}
	} else {
		var p struct {
			Meta map[string]any `json:"_meta"`
		}
		segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields)
		asked := tasks.AskedBy(p.Meta)
		if asked == "" {
			return
		}
		s.mu.Lock()
		found := false
		for _, c := range s.calls {
			if c.entry.ID() == asked {
				parent, found = c.meta.Parent, true
			}
		}
		s.mu.Unlock()
		if !found {
			return
		}
	}
	v := json.RawMessage("null")
	if parent != "" {
		v, _ = json.Marshal(map[string]string{"task": parent})
	}
	if params, err := relay.SetMetaField(req.Params, tasks.AskKey, v); err == nil {
		f.ReplaceParams(req, params) // on failure, the question goes as it came
	}
}

// End ends the session's tasks still in flight: as failed, naming the lost
// target, when lost says why the target was lost; else (the caller's side
// ended, or the node stops) as cancelled, as a served call whose caller
// went away is.
func (s *RelaySession) End(lost error) {
	s.mu.Lock()
	s.ended = true
	calls := make([]*relayedCall, 0, len(s.calls))
	for _, c := range s.calls {
		calls = append(calls, c)
		s.forgetLocked(c)
	}
	s.mu.Unlock()
	for _, c := range calls {
		if lost == nil {
			c.entry.Finish(tasks.Cancelled, nil, errors.New("its caller's session ended before the answer"), nil)
			continue
		}
		c.entry.Finish(tasks.Failed, nil, fmt.Errorf("lost %s: %w", c.hop.Server, lost), &c.hop)
	}
}
