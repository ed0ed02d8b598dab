package control

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
)

// ReloadResponse is the answer of POST /v1/config/reload: what the daemon
// said while it applied its configuration file, one line each.
type ReloadResponse struct {
	Lines []string `json:"lines"`
}

// A Reloader rereads the daemon's configuration file and applies it; it
// returns what it said, or why it applied nothing.
type Reloader func(ctx context.Context) ([]string, error)

// reloader is the daemon's Reloader, if it has one.
type reloader = atomic.Pointer[Reloader]

// SetReloader makes POST /v1/config/reload run f ('mcpmesh config reload').
func (s *Server) SetReloader(f Reloader) { s.reload.Store(&f) }

func (s *Server) reloadRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/config/reload", s.handleReload)
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	f := s.reload.Load()
	if f == nil {
		writeError(w, http.StatusNotImplemented, errors.New("this daemon reloads no configuration file (a node embedded in a program)"))
		return
	}
	lines, err := (*f)(r.Context())
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if lines == nil {
		lines = []string{}
	}
	writeJSON(w, ReloadResponse{Lines: lines})
}

// Reload makes the daemon reread its configuration file and apply it.
func (c *Client) Reload(ctx context.Context) (ReloadResponse, error) {
	var out ReloadResponse
	err := c.do(ctx, http.MethodPost, "/v1/config/reload", nil, &out)
	return out, err
}
