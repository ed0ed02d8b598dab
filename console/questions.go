package console

// Questions that a call started from a page is asked (MCP elicitation, from
// any hop of its tree): the call carries a tasks.User, the machinery the
// CLI's calls use too, whose questions wait here until a page showing the
// call answers them.
//
//	GET  /api/calls/{task}/questions   the call's open questions (server-sent events), until it ends
//	POST /api/calls/{task}/answer      {question, action, content}: answers one
//
// A question waits while a page follows the call's questions; with no page
// following (closed, or never opened) it is declined after Options.AskWait,
// so that the asking tool hears back rather than waiting for nothing. The
// page is never trusted: an accepted answer's content is checked here
// against the schema the tool asked with.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/elicitcheck"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// maxCallQuestions bounds the questions of one call waiting at once: its
// tools may ask in parallel, and each question waits.
const maxCallQuestions = 16

// Question is one question a call was asked, as the page shows it.
type Question struct {
	ID     string               `json:"id"`
	Elicit *sdkmcp.ElicitParams `json:"elicit"`
	// Completed is set on a URL-mode question whose server said the
	// interaction at the URL is done.
	Completed bool `json:"completed,omitempty"`
}

// Answer is the body of POST /api/calls/{task}/answer: Action is "accept"
// (with Content, the values of the requested schema's fields), "decline"
// or "cancel".
type Answer struct {
	Question string         `json:"question"`
	Action   string         `json:"action"`
	Content  map[string]any `json:"content,omitempty"`
}

// callQuestions are the open questions of one call started from a page.
type callQuestions struct {
	ctx  context.Context // the call's: ends when it returns
	wait time.Duration   // how long a question waits for a page

	mu       sync.Mutex
	open     []*openQuestion
	links    []Question    // URL-mode questions accepted, newest last, for their completion
	watchers int           // pages following the questions
	changed  chan struct{} // closed and replaced on every change
}

type openQuestion struct {
	Question
	schema *jsonschema.Resolved // form mode: what an answer must match
	answer chan *sdkmcp.ElicitResult
}

func newCallQuestions(ctx context.Context, wait time.Duration) *callQuestions {
	return &callQuestions{ctx: ctx, wait: wait, changed: make(chan struct{})}
}

// change wakes everyone waiting for one; c.mu is held.
func (c *callQuestions) change() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// questionsView is what the page is sent: the open questions, and the
// URL-mode questions accepted (the user went to the link), each marked
// once its server says it completed.
type questionsView struct {
	Questions []Question `json:"questions"`
	Links     []Question `json:"links"`
}

// maxLinks bounds the accepted URL-mode questions kept for their
// completion.
const maxLinks = 16

// snapshot returns the questions and a channel closed on the next change.
func (c *callQuestions) snapshot() (questionsView, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := questionsView{Questions: make([]Question, len(c.open)), Links: slices.Clone(c.links)}
	for i, q := range c.open {
		v.Questions[i] = q.Question
	}
	if v.Links == nil {
		v.Links = []Question{}
	}
	return v, c.changed
}

func (c *callQuestions) watch(delta int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchers += delta
	c.change()
}

// user is the call's user: it answers elicitation with the page's help.
// Sampling is left to the node's handler (a person at a page is no model).
func (c *callQuestions) user() *tasks.User {
	return &tasks.User{Elicit: c.elicit, ElicitDone: c.completed}
}

func (c *callQuestions) elicit(ctx context.Context, r *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
	p := *r.Params
	p.Meta = nil // the mesh's own, for routing
	q := &openQuestion{Question: Question{ID: randomHex(16), Elicit: &p}, answer: make(chan *sdkmcp.ElicitResult, 1)}
	switch p.Mode {
	case "url":
		if u, err := url.Parse(p.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("the console shows only http and https links; this question's URL is %q", p.URL)
		}
	case "", "form":
		s, err := requestedSchema(p.RequestedSchema)
		if err != nil {
			return nil, fmt.Errorf("the console cannot show this question: its requested schema: %w", err)
		}
		q.schema = s
	default:
		return nil, fmt.Errorf("the console cannot show a question of mode %q", p.Mode)
	}
	c.mu.Lock()
	if len(c.open) >= maxCallQuestions {
		c.mu.Unlock()
		return nil, fmt.Errorf("the caller has %d questions of this call open already; answer those first", maxCallQuestions)
	}
	c.open = append(c.open, q)
	c.change()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.open = slices.DeleteFunc(c.open, func(o *openQuestion) bool { return o == q })
		c.change()
		c.mu.Unlock()
	}()

	// Wait for the answer while a page follows the call; with none for
	// c.wait, decline.
	unwatchedFor := time.NewTimer(c.wait)
	defer unwatchedFor.Stop()
	var unwatched <-chan time.Time
	for {
		c.mu.Lock()
		watched, changed := c.watchers > 0, c.changed
		c.mu.Unlock()
		if watched {
			unwatched = nil
		} else if unwatched == nil {
			unwatchedFor.Reset(c.wait)
			unwatched = unwatchedFor.C
		}
		select {
		case res := <-q.answer:
			return res, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, fmt.Errorf("the question went unanswered: the call ended")
		case <-unwatched:
			log.Debugw("question declined: no page follows its call", "question", q.ID)
			return &sdkmcp.ElicitResult{Action: "decline"}, nil
		case <-changed:
		}
	}
}

// completed marks a URL-mode question done, as its server says.
func (c *callQuestions) completed(_ context.Context, r *sdkmcp.ElicitationCompleteNotificationRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range c.open {
		if q.Elicit.Mode == "url" && q.Elicit.ElicitationID == r.Params.ElicitationID && !q.Completed {
			q.Completed = true
			c.change()
		}
	}
	for i := range c.links {
		if q := &c.links[i]; q.Elicit.ElicitationID == r.Params.ElicitationID && !q.Completed {
			q.Completed = true
			c.change()
		}
	}
}

// answer hands a to its question, once it checks out.
func (c *callQuestions) answer(a Answer) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.open, func(q *openQuestion) bool { return q.ID == a.Question })
	if i < 0 {
		return http.StatusNotFound, fmt.Errorf("no open question %s (answered already, declined, or its call has ended)", a.Question)
	}
	q := c.open[i]
	res := &sdkmcp.ElicitResult{Action: a.Action}
	switch a.Action {
	case "accept":
		if q.schema != nil {
			if a.Content == nil {
				a.Content = map[string]any{}
			}
			if err := checkContent(q.schema, a.Content); err != nil {
				return http.StatusBadRequest, err
			}
			res.Content = a.Content
		} else if len(a.Content) > 0 {
			return http.StatusBadRequest, errors.New("a URL-mode answer has no content")
		} else {
			if len(c.links) == maxLinks {
				c.links = slices.Delete(c.links, 0, 1)
			}
			c.links = append(c.links, q.Question)
		}
	case "decline", "cancel":
		if len(a.Content) > 0 {
			return http.StatusBadRequest, fmt.Errorf("an answer that does not accept has no content (action %q)", a.Action)
		}
	default:
		return http.StatusBadRequest, fmt.Errorf("answer action %q: want accept, decline or cancel", a.Action)
	}
	c.open = slices.Delete(c.open, i, i+1)
	c.change()
	q.answer <- res
	return http.StatusOK, nil
}

// requestedSchema reads an elicitation's requested schema: an object of
// flat fields, as MCP allows.
func requestedSchema(requested any) (*jsonschema.Resolved, error) {
	s, err := elicitcheck.Schema(requested)
	if err != nil {
		return nil, err
	}
	for name, p := range s.Properties {
		if p == nil {
			continue
		}
		switch p.Type {
		case "string", "number", "integer", "boolean", "array":
		default:
			return nil, fmt.Errorf("field %q has type %q: MCP asks for strings, numbers, integers, booleans and lists of choices", name, p.Type)
		}
	}
	return s.Resolve(nil)
}

// checkContent checks an accepted answer against the requested schema:
// only its fields, each of its type, the required ones there, the formats
// MCP names, then every other rule of the schema (enums, bounds).
func checkContent(rs *jsonschema.Resolved, content map[string]any) error {
	s := rs.Schema()
	for name, v := range content {
		p, ok := s.Properties[name]
		if !ok || p == nil {
			return fmt.Errorf("%q is not a field of the question", name)
		}
		if err := checkType(p.Type, v); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	for _, name := range s.Required {
		if _, ok := content[name]; !ok {
			return fmt.Errorf("%s is required", name)
		}
	}
	for name, v := range content {
		if str, ok := v.(string); ok && s.Properties[name].Type == "string" {
			if err := elicitcheck.Format(s.Properties[name].Format, str); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return elicitcheck.Validate(rs, content)
}

func checkType(typ string, v any) error {
	ok := false
	switch typ {
	case "string":
		_, ok = v.(string)
	case "boolean":
		_, ok = v.(bool)
	case "number":
		_, ok = v.(float64)
	case "integer":
		f, isNum := v.(float64)
		ok = isNum && f == float64(int64(f))
	case "array":
		var items []any
		if items, ok = v.([]any); ok {
			for _, it := range items {
				if _, isStr := it.(string); !isStr {
					return fmt.Errorf("a list of choices holds strings, not %T", it)
				}
			}
		}
	}
	if !ok {
		return fmt.Errorf("want a%s %s, got %s", map[bool]string{true: "n"}[typ == "integer" || typ == "array"], typ, jsonKind(v))
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// calls holds the questions of the calls started from pages, by root task.
type calls struct {
	mu sync.Mutex
	m  map[string]*callQuestions
}

func (cs *calls) add(task string, c *callQuestions) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.m == nil {
		cs.m = map[string]*callQuestions{}
	}
	cs.m[task] = c
}

func (cs *calls) remove(task string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.m, task)
}

func (cs *calls) get(task string) (*callQuestions, bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, ok := cs.m[task]
	return c, ok
}

// serveQuestions streams a call's open questions: a "questions" event with
// all of them whenever they change, "end" when the call has ended.
func (s *Server) serveQuestions(w http.ResponseWriter, r *http.Request, task string) {
	c, ok := s.asked.get(task)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no call %s started from this console is running", task))
		return
	}
	st, ctx, done, ok := s.openStream(w, r)
	if !ok {
		return
	}
	defer done()
	c.watch(1)
	defer c.watch(-1)
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		v, changed := c.snapshot()
		if st.sendJSON("questions", v) != nil {
			return
		}
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return
			case <-c.ctx.Done():
				st.send("end", []byte("{}"))
				return
			case <-tick.C:
				if st.idle() != nil {
					return
				}
			case <-changed:
				waiting = false
			}
		}
	}
}

func (s *Server) handleAnswer(w http.ResponseWriter, r *http.Request, task string) {
	var a Answer
	if !readJSON(w, r, &a) {
		return
	}
	c, ok := s.asked.get(task)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no call %s started from this console is running", task))
		return
	}
	if code, err := c.answer(a); err != nil {
		writeError(w, code, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}
