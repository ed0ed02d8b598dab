package control

// Questions from a call's tools to the person who made the call with the
// CLI: the call's event stream carries each question down, POST
// /v1/call/answer brings the answer back.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/oneline"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// The questions waiting for an answer are bounded per call (its tools may
// ask in parallel, and each waits; one call's peers must not crowd out the
// questions of another) and in all.
const (
	maxCallQuestions = 16
	maxOpenQuestions = 1024
)

// questions are the open questions, by ID, each with where its answer goes.
type questions struct {
	mu   sync.Mutex
	open map[string]chan Answer
}

func (q *questions) add() (string, chan Answer, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	id := hex.EncodeToString(b)
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.open) >= maxOpenQuestions {
		return "", nil, fmt.Errorf("the daemon has %d questions open already; answer those first", len(q.open))
	}
	if q.open == nil {
		q.open = map[string]chan Answer{}
	}
	ch := make(chan Answer, 1)
	q.open[id] = ch
	return id, ch, nil
}

func (q *questions) remove(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.open, id)
}

// answer hands a to its question, once.
func (q *questions) answer(a Answer) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	ch, ok := q.open[a.Question]
	if ok {
		delete(q.open, a.Question)
		ch <- a
	}
	return ok
}

// callUser is the user of a call streamed on ev (call is the call's
// context): it passes the call's questions to the caller when the caller
// said it answers them (ask), and declines sampling requests, saying what
// they asked, since the caller is a person at a terminal.
func (s *Server) callUser(call context.Context, ev *eventStream, ask bool) *tasks.User {
	u := &tasks.User{Sample: func(_ context.Context, r *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error) {
		err := fmt.Errorf("the caller (mcpmesh call, a person at a terminal) cannot answer sampling requests; it was asked for %s. Call this tool from an MCP host that has a model (see mcpmesh stdio)", describeSampling(r.Params))
		ev.send(CallEvent{Question: &Question{Kind: QuestionSampling, Declined: err.Error()}})
		return nil, err
	}}
	if !ask {
		return u
	}
	var open atomic.Int32
	u.Elicit = func(ctx context.Context, r *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
		if n := open.Add(1); n > maxCallQuestions {
			open.Add(-1)
			return nil, fmt.Errorf("the caller has %d questions of this call open already; answer those first", n-1)
		}
		defer open.Add(-1)
		id, answer, err := s.questions.add()
		if err != nil {
			return nil, err
		}
		defer s.questions.remove(id)
		p := *r.Params
		p.Meta = nil // the mesh's own, for routing
		ev.send(CallEvent{Question: &Question{ID: id, Kind: QuestionElicitation, Elicit: &p}})
		select {
		case a := <-answer:
			return &sdkmcp.ElicitResult{Action: a.Action, Content: a.Content}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-call.Done():
		}
		// The caller has gone (Ctrl-C): the call is being cancelled, its
		// notifications/cancelled on the way down. Hold the question until
		// it is withdrawn from below, or for a moment: an error sent back at
		// once could reach the asking tool before the cancellation, and its
		// hop would record the task failed rather than cancelled.
		grace := time.NewTimer(cancelGrace)
		defer grace.Stop()
		select {
		case <-ctx.Done():
		case <-grace.C:
		}
		return nil, fmt.Errorf("the question went unanswered: %w", context.Cause(call))
	}
	return u
}

// cancelGrace is how long a question whose caller has gone waits for the
// call's cancellation to reach the hop that asked.
const cancelGrace = 2 * time.Second

// describeSampling says what a sampling request asks for, in a line.
func describeSampling(p *sdkmcp.CreateMessageWithToolsParams) string {
	if p == nil {
		return "a model completion"
	}
	s := fmt.Sprintf("a model completion of %d message(s)", len(p.Messages))
	if n := len(p.Messages); n > 0 {
		for _, c := range p.Messages[n-1].Content {
			if t, ok := c.(*sdkmcp.TextContent); ok {
				s += fmt.Sprintf(", the last %q", firstLineOf(t.Text, 80))
				break
			}
		}
	}
	if p.SystemPrompt != "" {
		s += fmt.Sprintf(", system prompt %q", firstLineOf(p.SystemPrompt, 60))
	}
	if len(p.Tools) > 0 {
		s += fmt.Sprintf(", with %d tool(s)", len(p.Tools))
	}
	return s + fmt.Sprintf(", at most %d tokens (sampling/createMessage)", p.MaxTokens)
}

func firstLineOf(s string, max int) string { return oneline.Cut(s, max) }

func (s *Server) handleAnswer(w http.ResponseWriter, r *http.Request) {
	var a Answer
	if !readJSON(w, r, &a) {
		return
	}
	switch a.Action {
	case "accept":
	case "decline", "cancel":
		if a.Content != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("an answer that does not accept has no content (action %q)", a.Action))
			return
		}
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("answer action %q: want accept, decline or cancel", a.Action))
		return
	}
	if !s.questions.answer(a) {
		writeError(w, http.StatusNotFound, errors.New("no open question "+a.Question+" (answered already, or its call has ended)"))
		return
	}
	writeJSON(w, struct{}{})
}
