package control

import (
	"context"
	"net/http"

	"github.com/mcpmesh/mcpmesh/peer/reach"
)

// Status answers GET /v1/status: the daemon's state, one section per
// concern, at the top level of one JSON object. The network section's
// fields (reachability, addresses, port mapping, relay service, relays in
// use, connected peers) come first; other sections are added beside them.
type Status struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
	reach.Status
}

func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	n := s.node
	writeJSON(w, Status{ID: n.ID().String(), Name: n.Name(), Version: n.Version(), Status: n.Reachability()})
}

// Status returns the daemon's state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}
