package passthrough

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// The protocol versions the scripts speak.
const (
	v20251125 = "2025-11-25"
	v20260728 = "2026-07-28"
)

// clientInfo is the scripted client's name, on every path.
var clientInfo = map[string]any{"name": "passthrough-script", "version": "1.0.0"}

// clientCaps are the capabilities the scripted client declares: all that a
// server may ask of a client, so that every server→client request is tried.
var clientCaps = map[string]any{
	"roots":       map[string]any{"listChanged": true},
	"sampling":    map[string]any{},
	"elicitation": map[string]any{"form": map[string]any{}},
}

// step is one thing the scripted client does.
type step struct {
	name   string
	method string
	params map[string]any
	// notify sends a notification instead of a request.
	notify bool
	// expect waits (up to expectWait) for a message from the server with this
	// method before the barrier: for what a server sends on its own after a
	// step (server-filesystem's roots/list after notifications/initialized).
	expect string
	// cancel sends notifications/cancelled for the request once its first
	// progress notification arrives, then waits cancelWait for a response
	// that must not come.
	cancel bool
	// settle, if set, first repeats the step's request (IDs of their own,
	// nothing recorded) until its answer holds this text, for up to
	// expectWait: for what a server applies in the background after a step
	// (server-filesystem validates the client's roots after answering).
	settle string
}

const (
	stepTimeout = 30 * time.Second
	expectWait  = 5 * time.Second
	cancelWait  = 3 * time.Second
)

func call(name string, args map[string]any) step {
	return step{name: "tools/call " + name, method: "tools/call", params: map[string]any{"name": name, "arguments": args}}
}

func req(method string, params map[string]any) step {
	return step{name: method, method: method, params: params}
}

// initSteps opens a 2025-11-25-style session asking for version.
func initSteps(version, expectAfterInit string) []step {
	return []step{
		{name: "initialize " + version, method: "initialize", params: map[string]any{
			"protocolVersion": version, "capabilities": clientCaps, "clientInfo": clientInfo}},
		{name: "notifications/initialized", method: "notifications/initialized", notify: true, expect: expectAfterInit},
	}
}

// listSteps lists everything a server offers.
func listSteps() []step {
	return []step{req("tools/list", nil), req("prompts/list", nil), req("resources/list", nil), req("resources/templates/list", nil)}
}

// record is what the scripted client saw during one step.
type record struct {
	step string
	// response is the normalized answer to the step's request; nil for a
	// notification; the string noResponse when none came.
	response any
	// messages are what the server sent during the step, normalized, in
	// the order they came: notifications, requests to the client (answered
	// by the client, see answer), responses to no request of this step.
	messages []any
}

const noResponse = "(no response)"

// transcript is a whole scripted session.
type transcript []record

// runner drives one session on a conn.
type runner struct {
	t       testing.TB
	c       conn
	modern  bool // 2026-07-28: no initialize, every request carries its _meta
	nextID  int
	rootURI string
}

func runScript(t testing.TB, c conn, version, rootURI string, steps []step) transcript {
	t.Helper()
	r := &runner{t: t, c: c, modern: version == v20260728, nextID: 1, rootURI: rootURI}
	var out transcript
	for _, s := range steps {
		out = append(out, r.do(s))
	}
	return out
}

func (r *runner) request(method string, params map[string]any) (int, []byte) {
	id := r.nextID
	r.nextID++
	msg := map[string]any{"jsonrpc": "2.0", "id": id, "method": method}
	if p := r.params(params); p != nil {
		msg["params"] = p
	}
	b, _ := json.Marshal(msg)
	return id, b
}

// params adds the 2026-07-28 per-request _meta on modern sessions.
func (r *runner) params(p map[string]any) map[string]any {
	if !r.modern {
		return p
	}
	out := maps.Clone(p)
	if out == nil {
		out = map[string]any{}
	}
	meta, _ := out["_meta"].(map[string]any)
	meta = maps.Clone(meta)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["io.modelcontextprotocol/protocolVersion"] = v20260728
	meta["io.modelcontextprotocol/clientInfo"] = clientInfo
	meta["io.modelcontextprotocol/clientCapabilities"] = clientCaps
	out["_meta"] = meta
	return out
}

func (r *runner) do(s step) record {
	if s.settle != "" {
		r.settle(s)
	}
	rec := record{step: s.name}
	if s.notify {
		msg := map[string]any{"jsonrpc": "2.0", "method": s.method}
		if s.params != nil {
			msg["params"] = s.params
		}
		b, _ := json.Marshal(msg)
		if err := r.c.send(b); err != nil {
			r.t.Fatalf("%s: send: %v", s.name, err)
		}
		if h, ok := r.c.(*httpConn); ok && s.method == "notifications/initialized" {
			// The session's GET stream, for what the server sends outside
			// any request.
			if status, err := h.openGET(); err != nil || status != 200 {
				rec.messages = append(rec.messages, map[string]any{"GET stream": fmt.Sprintf("status %d, %v", status, err)})
			}
		}
	} else {
		id, b := r.request(s.method, s.params)
		if err := r.c.send(b); err != nil {
			r.t.Fatalf("%s: send: %v", s.name, err)
		}
		var cancelled bool
		wait := stepTimeout
		deadline := time.After(wait)
	read:
		for {
			select {
			case m, ok := <-r.c.in():
				if !ok {
					rec.response = "(connection closed)"
					return rec
				}
				if isResponseTo(m, id) {
					rec.response = normalize(m)
					if h, ok := r.c.(*httpConn); ok && s.method == "initialize" {
						h.mu.Lock()
						h.version = protocolVersionOf(m)
						h.mu.Unlock()
					}
					break read
				}
				norm := r.handle(m, &rec)
				if s.cancel && !cancelled && method(norm) == "notifications/progress" {
					cancelled = true
					c, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/cancelled",
						"params": map[string]any{"requestId": id, "reason": "cancelled by the scripted client"}})
					if err := r.c.send(c); err != nil {
						r.t.Fatalf("%s: send cancel: %v", s.name, err)
					}
					// What must not come is waited for briefly.
					deadline = time.After(cancelWait)
				}
			case <-deadline:
				rec.response = noResponse
				if !s.cancel {
					r.t.Errorf("%s: no response within %v", s.name, wait)
				}
				break read
			}
		}
		if r.modern && s.method == "server/discover" {
			return rec // its own barrier
		}
	}
	if s.expect != "" {
		deadline := time.After(expectWait)
	expect:
		for !slices.ContainsFunc(rec.messages, func(m any) bool { return method(m) == s.expect }) {
			select {
			case m, ok := <-r.c.in():
				if !ok {
					break expect
				}
				r.handle(m, &rec)
			case <-deadline:
				break expect
			}
		}
	}
	r.barrier(&rec)
	return rec
}

// settle repeats s's request until its answer holds s.settle, or expectWait
// passes; what the server sends meanwhile is answered, not recorded.
func (r *runner) settle(s step) {
	deadline := time.Now().Add(expectWait)
	for n := 1; time.Now().Before(deadline); n++ {
		id := fmt.Sprintf("settle-%d", n)
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": s.method, "params": r.params(s.params)})
		if err := r.c.send(b); err != nil {
			r.t.Fatalf("%s: settle: %v", s.name, err)
		}
		var scratch record
		want := []byte(`"` + id + `"`)
	read:
		for {
			select {
			case m, ok := <-r.c.in():
				if !ok {
					return
				}
				var env struct {
					ID     json.RawMessage `json:"id"`
					Method string          `json:"method"`
				}
				if json.Unmarshal(m, &env) == nil && env.Method == "" && bytes.Equal(bytes.TrimSpace(env.ID), want) {
					if bytes.Contains(m, []byte(s.settle)) {
						return
					}
					break read
				}
				r.handle(m, &scratch)
			case <-time.After(time.Until(deadline)):
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // the server works in the background
	}
}

// barrier sends a request every server answers and reads until its answer:
// on one ordered stream (stdio, and the mesh's streams), whatever the server
// sent before answering has then arrived. Sessions use ping; 2026-07-28, which
// has no ping, uses server/discover.
func (r *runner) barrier(rec *record) {
	m, p := "ping", map[string]any(nil)
	if r.modern {
		m = "server/discover"
	}
	id, b := r.request(m, p)
	if err := r.c.send(b); err != nil {
		r.t.Fatalf("%s: barrier: %v", rec.step, err)
	}
	deadline := time.After(stepTimeout)
	for {
		select {
		case msg, ok := <-r.c.in():
			if !ok {
				return
			}
			if isResponseTo(msg, id) {
				if n := normalize(msg).(map[string]any); n["error"] != nil || n["httpStatus"] != nil {
					rec.messages = append(rec.messages, map[string]any{"barrier " + m: n})
				}
				return
			}
			r.handle(msg, rec)
		case <-deadline:
			r.t.Errorf("%s: barrier %s: no answer within %v", rec.step, m, stepTimeout)
			return
		}
	}
}

// handle records a message from the server and answers its requests.
func (r *runner) handle(m []byte, rec *record) any {
	var env struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	json.Unmarshal(m, &env)
	norm := normalize(m)
	rec.messages = append(rec.messages, norm)
	if env.Method != "" && len(env.ID) > 0 {
		result, rpcErr := r.answer(env.Method)
		reply := map[string]any{"jsonrpc": "2.0", "id": env.ID}
		if rpcErr != nil {
			reply["error"] = rpcErr
		} else {
			reply["result"] = result
		}
		b, _ := json.Marshal(reply)
		if err := r.c.send(b); err != nil {
			r.t.Errorf("%s: answering %s: %v", rec.step, env.Method, err)
		}
	}
	return norm
}

// answer is the scripted client's deterministic answer to a request from the
// server.
func (r *runner) answer(method string) (any, any) {
	switch method {
	case "ping":
		return map[string]any{}, nil
	case "roots/list":
		return map[string]any{"roots": []any{map[string]any{"uri": r.rootURI, "name": "scripted root"}}}, nil
	case "sampling/createMessage":
		return map[string]any{"role": "assistant", "model": "scripted-model", "stopReason": "endTurn",
			"content": map[string]any{"type": "text", "text": "sampled by the scripted client"}}, nil
	case "elicitation/create":
		return map[string]any{"action": "decline"}, nil
	}
	return nil, map[string]any{"code": -32601, "message": "method not found: " + method}
}

func isResponseTo(m []byte, id int) bool {
	var env struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if json.Unmarshal(m, &env) != nil || env.Method != "" {
		return false
	}
	return string(bytes.TrimSpace(env.ID)) == fmt.Sprint(id)
}

func protocolVersionOf(m []byte) string {
	var resp struct {
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"result"`
	}
	json.Unmarshal(m, &resp)
	return resp.Result.ProtocolVersion
}

func method(m any) string {
	if o, ok := m.(map[string]any); ok {
		s, _ := o["method"].(string)
		return s
	}
	return ""
}

// normalize decodes a message and removes what the mesh may change:
//
//   - every _meta key of the mesh's own namespace (io.mcpmesh/…), and a
//     _meta object left empty by that alone: MCP reserves _meta for such
//     additions, and issue 12 allows the mesh exactly this;
//   - the id of a request from the server: the sender chooses it and the
//     client only echoes it back, and a mesh that multiplexes sessions must
//     renumber (MCP: IDs are unique per session and direction, nothing more).
//
// JSON object key order and number spelling (1 vs 1.0) are not compared:
// JSON gives them no meaning, and the values are compared decoded.
func normalize(m []byte) any {
	var v any
	if err := json.Unmarshal(m, &v); err != nil {
		return map[string]any{"not JSON": describeMsg(m)}
	}
	v = stripMeshMeta(v)
	if o, ok := v.(map[string]any); ok {
		if _, isReq := o["method"]; isReq {
			if _, hasID := o["id"]; hasID {
				o["id"] = "(server request id)"
			}
		}
	}
	return v
}

func stripMeshMeta(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if k == "_meta" {
				if meta, ok := val.(map[string]any); ok {
					removed := false
					for mk := range meta {
						if strings.HasPrefix(mk, "io.mcpmesh/") {
							delete(meta, mk)
							removed = true
						}
					}
					if removed && len(meta) == 0 {
						delete(x, k)
						continue
					}
				}
			}
			x[k] = stripMeshMeta(val)
		}
	case []any:
		for i := range x {
			x[i] = stripMeshMeta(x[i])
		}
	}
	return v
}

// compareOrdered lists the differences between two transcripts of the same
// script, step by step, messages in order (one ordered stream: stdio).
func compareOrdered(direct, mesh transcript) []string {
	var out []string
	for i := range max(len(direct), len(mesh)) {
		if i >= len(direct) || i >= len(mesh) {
			out = append(out, fmt.Sprintf("step %d: only one transcript has it", i))
			continue
		}
		d, m := direct[i], mesh[i]
		for _, diff := range diffJSON("", d.response, m.response) {
			out = append(out, fmt.Sprintf("%s: response%s", d.step, diff))
		}
		for _, diff := range diffMessages(d.messages, m.messages) {
			out = append(out, fmt.Sprintf("%s: %s", d.step, diff))
		}
	}
	return out
}

// compareUnordered is compareOrdered for Streamable HTTP: responses step by
// step, but what the server sends outside a response compared for the whole
// session as a multiset, because the transport carries it on several SSE
// streams (the POST's, the GET's) with no order between them, so the step a
// message arrives in is not the server's to choose.
func compareUnordered(direct, mesh transcript) []string {
	var out []string
	var dm, mm []any
	for i := range max(len(direct), len(mesh)) {
		if i >= len(direct) || i >= len(mesh) {
			out = append(out, fmt.Sprintf("step %d: only one transcript has it", i))
			continue
		}
		d, m := direct[i], mesh[i]
		for _, diff := range diffJSON("", d.response, m.response) {
			out = append(out, fmt.Sprintf("%s: response%s", d.step, diff))
		}
		dm = append(dm, d.messages...)
		mm = append(mm, m.messages...)
	}
	for _, diff := range diffMultiset(dm, mm) {
		out = append(out, "session: "+diff)
	}
	return out
}

func canonical(v any) string {
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return string(b)
}

// diffMessages compares two ordered lists of messages: same methods in the
// same order, then field by field.
func diffMessages(d, m []any) []string {
	var out []string
	names := func(l []any) []string {
		var s []string
		for _, x := range l {
			if n := method(x); n != "" {
				s = append(s, n)
			} else {
				s = append(s, abbreviate(canonical(x), 80))
			}
		}
		return s
	}
	if !slices.Equal(names(d), names(m)) {
		return append(out, fmt.Sprintf("messages from the server: direct %v, mesh %v", names(d), names(m)))
	}
	for i := range d {
		for _, diff := range diffJSON("", d[i], m[i]) {
			out = append(out, fmt.Sprintf("message %d (%s)%s", i, method(d[i]), diff))
		}
	}
	return out
}

func diffMultiset(d, m []any) []string {
	count := map[string]int{}
	for _, x := range d {
		count[canonical(x)]++
	}
	for _, x := range m {
		count[canonical(x)]--
	}
	var out []string
	keys := slices.Sorted(maps.Keys(count))
	for _, k := range keys {
		switch n := count[k]; {
		case n > 0:
			out = append(out, fmt.Sprintf("message only direct (%d×): %s", n, abbreviate(k, 300)))
		case n < 0:
			out = append(out, fmt.Sprintf("message only through the mesh (%d×): %s", -n, abbreviate(k, 300)))
		}
	}
	return out
}

// diffJSON lists where two decoded JSON values differ, as
// "PATH: direct X, mesh Y". Lists of objects keyed by name, uri or
// uriTemplate are compared by key (order reported on its own).
func diffJSON(path string, d, m any) []string {
	switch dv := d.(type) {
	case map[string]any:
		mv, ok := m.(map[string]any)
		if !ok {
			break
		}
		var out []string
		keys := slices.Sorted(maps.Keys(dv))
		for _, k := range slices.Sorted(maps.Keys(mv)) {
			if _, ok := dv[k]; !ok {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			dx, inD := dv[k]
			mx, inM := mv[k]
			p := path + "." + k
			switch {
			case !inM:
				out = append(out, fmt.Sprintf("%s: direct %s, mesh absent", p, abbreviate(canonical(dx), 160)))
			case !inD:
				out = append(out, fmt.Sprintf("%s: direct absent, mesh %s", p, abbreviate(canonical(mx), 160)))
			default:
				out = append(out, diffJSON(p, dx, mx)...)
			}
		}
		return out
	case []any:
		mv, ok := m.([]any)
		if !ok {
			break
		}
		if key := listKey(dv, mv); key != "" {
			return diffKeyed(path, key, dv, mv)
		}
		var out []string
		if len(dv) != len(mv) {
			out = append(out, fmt.Sprintf("%s: direct %d items, mesh %d", path, len(dv), len(mv)))
		}
		for i := range min(len(dv), len(mv)) {
			out = append(out, diffJSON(fmt.Sprintf("%s[%d]", path, i), dv[i], mv[i])...)
		}
		return out
	}
	if canonical(d) == canonical(m) {
		return nil
	}
	return []string{fmt.Sprintf("%s: direct %s, mesh %s", path, abbreviate(canonical(d), 160), abbreviate(canonical(m), 160))}
}

// listKey returns the field that names every object of both lists uniquely.
func listKey(lists ...[]any) string {
	for _, key := range []string{"name", "uri", "uriTemplate"} {
		ok := true
		for _, l := range lists {
			seen := map[string]bool{}
			for _, x := range l {
				o, isObj := x.(map[string]any)
				s, isStr := o[key].(string)
				if !isObj || !isStr || seen[s] {
					ok = false
					break
				}
				seen[s] = true
			}
			if !ok || len(l) == 0 {
				ok = false
				break
			}
		}
		if ok {
			return key
		}
	}
	return ""
}

func diffKeyed(path, key string, d, m []any) []string {
	keys := func(l []any) []string {
		var s []string
		for _, x := range l {
			s = append(s, x.(map[string]any)[key].(string))
		}
		return s
	}
	dk, mk := keys(d), keys(m)
	var out []string
	if !slices.Equal(dk, mk) {
		if a, b := slices.Sorted(slices.Values(dk)), slices.Sorted(slices.Values(mk)); slices.Equal(a, b) {
			out = append(out, fmt.Sprintf("%s: order differs: direct %v, mesh %v", path, dk, mk))
		} else {
			out = append(out, fmt.Sprintf("%s: %ss differ: direct %v, mesh %v", path, key, dk, mk))
		}
	}
	byKey := map[string]any{}
	for _, x := range m {
		byKey[x.(map[string]any)[key].(string)] = x
	}
	for _, x := range d {
		k := x.(map[string]any)[key].(string)
		if mx, ok := byKey[k]; ok {
			out = append(out, diffJSON(fmt.Sprintf("%s[%s=%s]", path, key, k), x, mx)...)
		}
	}
	return out
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("…(%d bytes)", len(s))
}

// report fails t with every difference, sorted by step as found.
func report(t *testing.T, what string, diffs []string) {
	t.Helper()
	if len(diffs) == 0 {
		return
	}
	t.Errorf("%s: %d differences from the same script run directly:\n  %s", what, len(diffs), strings.Join(diffs, "\n  "))
}

var _ = sort.Strings
