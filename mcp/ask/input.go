package ask

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/jsonschema-go/jsonschema"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
)

// ErrInputRequired is returned by [Elicit] and [Sample] when the session
// speaks protocol 2026-07-28 or later and the answer is not known yet. The
// handler must return it (or any error wrapping it): the node then sends the
// pending questions back as input requests, and the caller's client answers
// them and calls again, running the handler once more from the start. That
// time the same question, asked in the same order, gets its answer.
//
// A handler that asks for input must therefore be idempotent up to the point
// where it asks, or wrap what is not (a tool call, a model's completion) in
// [Replay], which gives the run again the values the first run got.
var ErrInputRequired = errors.New("mcp: input required from the caller (multi round-trip); return this error from the handler")

// modernVersion is the first protocol version in which a server may not send
// requests to its client and asks for input through results instead.
const modernVersion = "2026-07-28"

// Inputs asks callers for input on behalf of request handlers. It is
// installed on a server as receiving middleware ([Inputs.Middleware]); one
// Inputs serves every server of a node.
type Inputs struct {
	key []byte // authenticates RequestState, which round-trips through the client
}

// NewInputs returns an Inputs with a fresh random key.
func NewInputs() *Inputs {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic(fmt.Sprintf("mcp: read random key: %v", err)) // crypto/rand never fails on supported platforms
	}
	return &Inputs{key: key}
}

type inputStateKey struct{}

// inputState is the per-request record of questions asked and answers known,
// and of the values Replay remembers.
type inputState struct {
	session *sdkmcp.ServerSession
	modern  bool

	mu      sync.Mutex
	next    int
	answers map[string]json.RawMessage
	pending sdkmcp.InputRequestMap

	// Replay: what earlier runs of the request remembered, by sequence
	// number, and what this run remembers for the next one.
	replayed  map[int]memo
	memos     map[int]memo
	nextMemo  int
	memoBytes int
	diverged  bool // a Replay label differed from the earlier run's: replay no more
}

// memo is a value Replay remembered: the JSON of the value, or the message
// of the error compute returned.
type memo struct {
	Label string          `json:"label"`
	Value json.RawMessage `json:"value,omitempty"`
	Err   string          `json:"err,omitempty"`
}

// requestState is what a requestState string carries, signed.
type requestState struct {
	Answers map[string]json.RawMessage `json:"answers"`
	Memos   map[int]memo               `json:"memos,omitempty"`
}

// maxMemoBytes bounds what Replay keeps in one request's state, which the
// caller sends back with each retry; a value past it is computed again.
const maxMemoBytes = 512 << 10

// Middleware returns the receiving middleware that lets the handlers of
// tools/call, prompts/get and resources/read use [Elicit] and [Sample].
func (in *Inputs) Middleware() sdkmcp.Middleware {
	return func(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
		return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
			var responses sdkmcp.InputResponseMap
			var state string
			switch p := req.GetParams().(type) {
			case *sdkmcp.CallToolParamsRaw:
				responses, state = p.InputResponses, p.RequestState
			case *sdkmcp.GetPromptParams:
				responses, state = p.InputResponses, p.RequestState
			case *sdkmcp.ReadResourceParams:
				responses, state = p.InputResponses, p.RequestState
			default:
				return next(ctx, method, req)
			}
			ss, _ := req.GetSession().(*sdkmcp.ServerSession)
			st := &inputState{session: ss, modern: isModern(ss)}
			if st.modern {
				rs, err := in.decodeState(state)
				if err != nil {
					return nil, err
				}
				for id, r := range responses {
					raw, err := json.Marshal(r)
					if err != nil {
						return nil, fmt.Errorf("encode input response %q: %w", id, err)
					}
					rs.Answers[id] = raw
				}
				st.answers, st.replayed = rs.Answers, rs.Memos
			}
			res, err := next(context.WithValue(ctx, inputStateKey{}, st), method, req)
			st.mu.Lock()
			pending := st.pending
			st.mu.Unlock()
			if len(pending) == 0 {
				return res, err
			}
			st.mu.Lock()
			next := requestState{Answers: st.answers, Memos: st.memos}
			st.mu.Unlock()
			newState, serr := in.encodeState(next)
			if serr != nil {
				return nil, serr
			}
			return sdkcompat.InputRequiredResult(method, pending, newState)
		}
	}
}

func isModern(ss *sdkmcp.ServerSession) bool {
	if ss == nil {
		return false
	}
	ip := ss.InitializeParams()
	// Sessions of 2026-07-28 and later have no initialize handshake.
	return ip == nil || ip.ProtocolVersion >= modernVersion
}

func (in *Inputs) encodeState(rs requestState) (string, error) {
	body, err := json.Marshal(rs)
	if err != nil {
		return "", fmt.Errorf("encode request state: %w", err)
	}
	mac := hmac.New(sha256.New, in.key)
	mac.Write(body)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(body) + "." + enc.EncodeToString(mac.Sum(nil)), nil
}

// decodeState decodes a requestState this node signed. Its Answers map is
// never nil: the middleware adds answers to it.
func (in *Inputs) decodeState(state string) (requestState, error) {
	rs := requestState{Answers: map[string]json.RawMessage{}}
	if state == "" {
		return rs, nil
	}
	enc := base64.RawURLEncoding
	b64body, b64mac, ok := strings.Cut(state, ".")
	body, err1 := enc.DecodeString(b64body)
	sum, err2 := enc.DecodeString(b64mac)
	if !ok || err1 != nil || err2 != nil {
		return rs, errors.New("requestState is malformed: echo back the value the server sent")
	}
	mac := hmac.New(sha256.New, in.key)
	mac.Write(body)
	if !hmac.Equal(sum, mac.Sum(nil)) {
		return rs, errors.New("requestState was not issued by this node (or the node restarted): call again without it")
	}
	if err := json.Unmarshal(body, &rs); err != nil {
		return requestState{Answers: map[string]json.RawMessage{}}, fmt.Errorf("requestState: %w", err)
	}
	if rs.Answers == nil { // null, or missing
		rs.Answers = map[string]json.RawMessage{}
	}
	return rs, nil
}

// ask returns the answer to the next question of this request, or records
// the question and returns ErrInputRequired.
func (st *inputState) ask(q sdkmcp.InputRequest, answer any) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.next++
	id := fmt.Sprintf("mcpmesh-%d", st.next)
	if raw, ok := st.answers[id]; ok {
		if err := json.Unmarshal(raw, answer); err != nil {
			return fmt.Errorf("input response %q: %w", id, err)
		}
		return nil
	}
	if st.pending == nil {
		st.pending = sdkmcp.InputRequestMap{}
	}
	st.pending[id] = q
	return ErrInputRequired
}

// CanAsk reports whether ctx is that of a request handler that may ask its
// caller for input with [Elicit] and [Sample] (one served through
// [Inputs.Middleware]).
func CanAsk(ctx context.Context) bool {
	_, err := stateFrom(ctx)
	return err == nil
}

func stateFrom(ctx context.Context) (*inputState, error) {
	st, ok := ctx.Value(inputStateKey{}).(*inputState)
	if !ok || st.session == nil {
		return nil, errors.New("mcp: no caller to ask: Elicit and Sample work only inside a handler served by an mcpmesh node")
	}
	return st, nil
}

// Replay returns what compute returns. Inside a handler served by an
// mcpmesh node, on a session of protocol 2026-07-28 or later, it also
// remembers the value in the request's state, so that when the handler runs
// again after its caller answered a question (see [ErrInputRequired]), the
// same Replay (the n-th of the run, with the same label) returns the
// remembered value instead of computing it again: a tool is not called
// twice, and a model's completions come out as they did, so the run asks the
// same questions in the same order. A label that differs from the earlier
// run's at the same place means the run went another way: from there on,
// everything is computed afresh.
//
// Values are matched by their order in the run, so a handler's Replays
// must come in the same order each time (not from goroutines racing each
// other). T must round-trip through JSON. An error is remembered by its
// message (and comes back as a plain error, with T's zero value);
// ErrInputRequired is never remembered.
// A value past the state's bound (512 KiB for all of a request's values) is
// computed again on each run. Elsewhere Replay just calls compute.
func Replay[T any](ctx context.Context, label string, compute func() (T, error)) (T, error) {
	st, ok := ctx.Value(inputStateKey{}).(*inputState)
	if !ok || !st.modern {
		return compute()
	}
	st.mu.Lock()
	n := st.nextMemo
	st.nextMemo++
	m, found := st.replayed[n]
	if found && m.Label != label {
		st.diverged = true
	}
	replay := found && !st.diverged
	st.mu.Unlock()

	var v T
	if replay {
		st.keep(n, m)
		if m.Err != "" {
			return v, errors.New(m.Err)
		}
		if err := json.Unmarshal(m.Value, &v); err != nil {
			return v, fmt.Errorf("replay %s: %w", label, err)
		}
		return v, nil
	}
	v, err := compute()
	if errors.Is(err, ErrInputRequired) {
		return v, err
	}
	m = memo{Label: label}
	if err != nil {
		m.Err = err.Error()
	} else if m.Value, _ = json.Marshal(v); m.Value == nil {
		return v, err // not JSON: computed again on the next run
	}
	st.keep(n, m)
	return v, err
}

// keep remembers m as the n-th Replay value for the next run, within the
// state's bound.
func (st *inputState) keep(n int, m memo) {
	size := len(m.Label) + len(m.Value) + len(m.Err)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.memoBytes+size > maxMemoBytes {
		return
	}
	if st.memos == nil {
		st.memos = map[int]memo{}
	}
	st.memos[n] = m
	st.memoBytes += size
}

// Elicit asks the caller of the current request a question for its user and
// returns the answer, whichever protocol version the session negotiated:
// before 2026-07-28 as a direct elicitation/create request, from 2026-07-28 on
// as an input request in the result (see [ErrInputRequired]).
func Elicit(ctx context.Context, params *sdkmcp.ElicitParams) (*sdkmcp.ElicitResult, error) {
	st, err := stateFrom(ctx)
	if err != nil {
		return nil, err
	}
	if !st.modern {
		return st.session.Elicit(ctx, askParams(ctx, params))
	}
	var res sdkmcp.ElicitResult
	if err := st.ask(params, &res); err != nil {
		return nil, err
	}
	// The SDK checks a direct answer against the requested schema; an
	// answer that came back in a retry gets the same check here.
	if err := checkElicitAnswer(params, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

func checkElicitAnswer(params *sdkmcp.ElicitParams, res *sdkmcp.ElicitResult) error {
	if res.Action != "accept" || res.Content == nil || params.RequestedSchema == nil {
		return nil
	}
	raw, err := json.Marshal(params.RequestedSchema)
	if err != nil {
		return fmt.Errorf("requested schema: %w", err)
	}
	var schema jsonschema.Schema
	if err := json.Unmarshal(raw, &schema); err != nil {
		return fmt.Errorf("requested schema: %w", err)
	}
	resolved, err := schema.Resolve(nil)
	if err != nil {
		return fmt.Errorf("requested schema: %w", err)
	}
	if err := resolved.Validate(res.Content); err != nil {
		return fmt.Errorf("elicitation result content does not match requested schema: %v", err)
	}
	if err := resolved.ApplyDefaults(&res.Content); err != nil {
		return fmt.Errorf("apply schema defaults to elicitation result: %v", err)
	}
	return nil
}

// Sample asks the caller of the current request for an LLM completion
// (sampling/createMessage), whichever protocol version the session
// negotiated; see [Elicit].
func Sample(ctx context.Context, params *sdkmcp.CreateMessageParams) (*sdkmcp.CreateMessageResult, error) {
	st, err := stateFrom(ctx)
	if err != nil {
		return nil, err
	}
	if !st.modern {
		return st.session.CreateMessage(ctx, askParams(ctx, params))
	}
	var res sdkmcp.CreateMessageWithToolsResult
	if err := st.ask(params, &res); err != nil {
		return nil, err
	}
	out := &sdkmcp.CreateMessageResult{Meta: res.Meta, Model: res.Model, Role: res.Role, StopReason: res.StopReason}
	if len(res.Content) > 0 {
		out.Content = res.Content[0]
	}
	return out, nil
}

// SampleWithTools asks the caller of the current request for an LLM
// completion that may use tools (sampling/createMessage with tools, protocol
// 2025-11-25 and later): the answer may hold several content blocks, text
// and tool_use among them. See [Elicit] for the protocol versions.
func SampleWithTools(ctx context.Context, params *sdkmcp.CreateMessageWithToolsParams) (*sdkmcp.CreateMessageWithToolsResult, error) {
	st, err := stateFrom(ctx)
	if err != nil {
		return nil, err
	}
	if !st.modern {
		return st.session.CreateMessageWithTools(ctx, askParams(ctx, params))
	}
	var res sdkmcp.CreateMessageWithToolsResult
	if err := st.ask(params, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
