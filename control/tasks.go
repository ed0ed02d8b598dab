package control

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mcpmesh/mcpmesh/tasks"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

// CancelResponse answers POST /v1/tasks/{id}/cancel.
type CancelResponse struct {
	ID string `json:"id"`
}

// taskRoutes serves the daemon's tasks:
//
//	GET  /v1/tasks               every task the daemon holds, without results
//	GET  /v1/tasks/{id}          one task, with its result once ended
//	GET  /v1/tasks/{id}/tree     the tree below it, across nodes
//	POST /v1/tasks/{id}/cancel   cancels it and everything below it
func (s *Server) taskRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/tasks", s.handleTasks)
	mux.HandleFunc("GET /v1/tasks/{id}", s.handleTask)
	mux.HandleFunc("GET /v1/tasks/{id}/tree", s.handleTaskTree)
	mux.HandleFunc("POST /v1/tasks/{id}/cancel", s.handleTaskCancel)
}

func (s *Server) handleTasks(w http.ResponseWriter, r *http.Request) {
	list := s.node.Tasks()
	if list == nil {
		list = []tasks.Task{}
	}
	writeJSON(w, list)
}

// taskID resolves what a user typed for a task: its ID, or the start of
// one ("5d0c", "5d0c…", as the CLI shows them) that only one task of this
// node has. Tasks below it on other nodes are found through the tree.
func (s *Server) taskID(typed string) (string, error) {
	id := strings.TrimSpace(typed)
	id = strings.TrimSuffix(strings.TrimSuffix(id, "…"), "...")
	if _, ok := s.node.Task(id); ok {
		return id, nil
	}
	var matches []string
	if id != "" {
		for _, t := range s.node.Tasks() {
			if strings.HasPrefix(t.ID, id) {
				matches = append(matches, t.ID)
			}
		}
	}
	switch len(matches) {
	case 0:
		return "", fmt.Errorf("no task %s on this node (ended tasks are kept for a while only; 'mcpmesh tasks' lists them)", typed)
	case 1:
		return matches[0], nil
	}
	slices.Sort(matches)
	if len(matches) > 5 {
		matches = append(matches[:5], "…")
	}
	return "", fmt.Errorf("%d tasks start with %s: type more of the ID (%s)", len(matches), id, strings.Join(matches, ", "))
}

func (s *Server) handleTask(w http.ResponseWriter, r *http.Request) {
	id, err := s.taskID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	t, ok := s.node.Task(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no task %s on this node (ended tasks are kept for a while only)", id))
		return
	}
	writeJSON(w, t)
}

func (s *Server) handleTaskTree(w http.ResponseWriter, r *http.Request) {
	id, err := s.taskID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	tree, err := s.node.TaskTree(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, tree)
}

func (s *Server) handleTaskCancel(w http.ResponseWriter, r *http.Request) {
	id, err := s.taskID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	// Cancelling what has ended does nothing: say so, rather than
	// "cancelled" for a task that completed minutes ago.
	if t, ok := s.node.Task(id); ok && t.State.Terminal() {
		writeError(w, http.StatusConflict, fmt.Errorf("task %s has already ended (%s): nothing to cancel", id, t.State))
		return
	}
	if err := s.node.CancelTask(id); err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, CancelResponse{ID: id})
}

// Tasks lists the daemon's tasks, oldest first.
func (c *Client) Tasks(ctx context.Context) ([]tasks.Task, error) {
	var out []tasks.Task
	return out, c.do(ctx, http.MethodGet, "/v1/tasks", nil, &out)
}

// Task returns one of the daemon's tasks, with its result once ended.
func (c *Client) Task(ctx context.Context, id string) (tasks.Task, error) {
	var out tasks.Task
	return out, c.do(ctx, http.MethodGet, "/v1/tasks/"+url.PathEscape(id), nil, &out)
}

// TaskTree returns the tree below one of the daemon's tasks, across nodes.
func (c *Client) TaskTree(ctx context.Context, id string) (*tracker.TaskTree, error) {
	var out tracker.TaskTree
	return &out, c.do(ctx, http.MethodGet, "/v1/tasks/"+url.PathEscape(id)+"/tree", nil, &out)
}

// CancelTask cancels one of the daemon's tasks (id, or the start of one
// that only one task has) and every task below it; it returns the full ID.
func (c *Client) CancelTask(ctx context.Context, id string) (string, error) {
	var out CancelResponse
	err := c.do(ctx, http.MethodPost, "/v1/tasks/"+url.PathEscape(id)+"/cancel", nil, &out)
	return out.ID, err
}
