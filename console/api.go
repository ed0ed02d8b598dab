package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/tasks"
)

// api serves what the page asks for; every path is under /api/:
//
//	GET  /api/events                   the live feed (server-sent events; see events.go)
//	GET  /api/tasks/{id}               one task, with its result once ended
//	GET  /api/tasks/{id}/events        the live tree below a task, until it ends
//	POST /api/tasks/{id}/cancel        cancels a task and everything below it
//	POST /api/search                   {query, tags}: tools across the mesh
//	POST /api/tools                    {peer}: a peer's tools with input schemas
//	POST /api/call                     {peer, server, tool, args}: starts a call, answers with its tree's ID
//	GET  /api/calls/{task}/questions   the questions a call started here is asked (see questions.go)
//	POST /api/calls/{task}/answer      {question, action, content}: answers one
//	POST /api/policy/check             an Access: the policy's Decision
func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/api")
	post := r.Method == http.MethodPost
	get := r.Method == http.MethodGet
	switch {
	case get && path == "/events":
		s.serveEvents(w, r)
	case post && path == "/search":
		s.handleSearch(w, r)
	case post && path == "/tools":
		s.handleTools(w, r)
	case post && path == "/call":
		s.handleCall(w, r)
	case post && path == "/policy/check":
		s.handleCheck(w, r)
	case strings.HasPrefix(path, "/calls/"):
		task, rest, _ := strings.Cut(strings.TrimPrefix(path, "/calls/"), "/")
		switch {
		case get && rest == "questions":
			s.serveQuestions(w, r, task)
		case post && rest == "answer":
			s.handleAnswer(w, r, task)
		default:
			writeError(w, http.StatusNotFound, fmt.Errorf("no %s %s", r.Method, r.URL.Path))
		}
	case strings.HasPrefix(path, "/tasks/"):
		id, rest, _ := strings.Cut(strings.TrimPrefix(path, "/tasks/"), "/")
		switch {
		case id == "":
			writeError(w, http.StatusNotFound, errors.New("no task ID"))
		case get && rest == "":
			s.handleTask(w, id)
		case get && rest == "events":
			s.serveTree(w, r, id)
		case post && rest == "cancel":
			if err := s.n.CancelTask(id); err != nil {
				writeError(w, http.StatusNotFound, err)
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"cancelled": id})
		default:
			writeError(w, http.StatusNotFound, fmt.Errorf("no %s %s", r.Method, r.URL.Path))
		}
	default:
		writeError(w, http.StatusNotFound, fmt.Errorf("no %s %s", r.Method, r.URL.Path))
	}
}

func (s *Server) handleTask(w http.ResponseWriter, id string) {
	t, ok := s.n.Task(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no task %s on this node (ended tasks are kept for a while only)", id))
		return
	}
	writeJSON(w, http.StatusOK, t)
}

type searchRequest struct {
	Query string   `json:"query"`
	Tags  []string `json:"tags,omitempty"`
}

func (s *Server) handleSearch(w http.ResponseWriter, r *http.Request) {
	var req searchRequest
	if !readJSON(w, r, &req) {
		return
	}
	// Words starting with "tag:" are tags, as in 'mcpmesh find'.
	var words []string
	for _, f := range strings.Fields(req.Query) {
		if t, ok := strings.CutPrefix(f, "tag:"); ok && t != "" {
			req.Tags = append(req.Tags, t)
		} else {
			words = append(words, f)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	hits, err := s.n.Search(ctx, strings.Join(words, " "), req.Tags)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if hits == nil {
		hits = []Hit{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"hits": hits})
}

type toolsRequest struct {
	Peer string `json:"peer"`
}

func (s *Server) handleTools(w http.ResponseWriter, r *http.Request) {
	var req toolsRequest
	if !readJSON(w, r, &req) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	tools, err := s.n.Tools(ctx, req.Peer)
	if err != nil {
		writeError(w, http.StatusBadGateway, err)
		return
	}
	if tools == nil {
		tools = []Tool{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tools": tools})
}

type callRequest struct {
	Peer   string          `json:"peer"`
	Server string          `json:"server"`
	Tool   string          `json:"tool"`
	Args   json.RawMessage `json:"args,omitempty"`
}

// callAnswer answers POST /api/call: the tree's ID as soon as it exists
// (the page follows the tree, and its result, on /api/tasks/{id}/events),
// or the outcome of a call that ended first or started no tree.
type callAnswer struct {
	Task   string                 `json:"task,omitempty"`
	Done   bool                   `json:"done"`
	Result *sdkmcp.CallToolResult `json:"result,omitempty"`
	Error  string                 `json:"error,omitempty"`
}

func (s *Server) handleCall(w http.ResponseWriter, r *http.Request) {
	var req callRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Peer == "" || req.Server == "" || req.Tool == "" {
		writeError(w, http.StatusBadRequest, errors.New("name a peer, a server and a tool"))
		return
	}
	if len(req.Args) > 0 && string(req.Args) != "null" {
		var obj map[string]any
		if err := json.Unmarshal(req.Args, &obj); err != nil || obj == nil {
			writeError(w, http.StatusBadRequest, errors.New(`tool arguments must be a JSON object, like {"text": "hi"}`))
			return
		}
	} else {
		req.Args = nil
	}
	select {
	case s.calls <- struct{}{}:
	default:
		writeError(w, http.StatusTooManyRequests, fmt.Errorf("%d calls started here are still running: cancel one, or wait", cap(s.calls)))
		return
	}
	started := make(chan string, 1)
	done := make(chan callAnswer, 1)
	// The call belongs to the console, not to the request: it runs on
	// after the answer, until it ends, its tree is cancelled, or Close.
	// Its questions wait for a page that follows it (questions.go).
	ok := s.group.Go(func() {
		defer func() { <-s.calls }()
		callCtx, endCall := context.WithCancel(s.ctx)
		defer endCall()
		asked := newCallQuestions(callCtx, s.opts.AskWait)
		var task string
		defer func() {
			if task != "" {
				s.asked.remove(task)
			}
		}()
		res, err := s.n.Call(tasks.WithUser(callCtx, asked.user()), req.Peer, req.Server, req.Tool, req.Args, func(id string) {
			task = id
			s.asked.add(id, asked)
			started <- id
		})
		a := callAnswer{Done: true, Result: res}
		if err != nil {
			a.Error = err.Error()
		}
		done <- a
	})
	if !ok {
		<-s.calls
		writeError(w, http.StatusServiceUnavailable, errors.New("the console is closing"))
		return
	}
	select {
	case id := <-started:
		writeJSON(w, http.StatusAccepted, callAnswer{Task: id})
	case a := <-done:
		select {
		case a.Task = <-started:
		default:
		}
		writeJSON(w, http.StatusOK, a)
	case <-r.Context().Done():
	}
}

// checkAnswer is the policy's Decision on an Access, said in words.
type checkAnswer struct {
	Decision
	Says string `json:"says"`
}

func (s *Server) handleCheck(w http.ResponseWriter, r *http.Request) {
	var a Access
	if !readJSON(w, r, &a) {
		return
	}
	if a.Kind == "" {
		a.Kind = "tool"
	}
	d, err := s.n.Check(a)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, checkAnswer{Decision: d, Says: sayDecision(a, d, s.peerName)})
}
