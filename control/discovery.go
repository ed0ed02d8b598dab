package control

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

// FindRequest is the body of POST /v1/find.
type FindRequest struct {
	Query   string        `json:"query"`
	Timeout time.Duration `json:"timeoutNs,omitempty"`
}

// FindResult is one line of the answer to POST /v1/find, which streams one
// JSON object per line as providers are verified.
type FindResult struct {
	Peer    string      `json:"peer"`
	Name    string      `json:"name"`
	Addrs   []string    `json:"addrs,omitempty"`
	Matches []FindMatch `json:"matches"`
	Error   string      `json:"error,omitempty"` // set on the last line if the lookup failed
}

// FindMatch is one matching tool of a provider, or one event type it
// emits (Event set, Server and Tool empty).
type FindMatch struct {
	Server      string   `json:"server"`
	Tool        string   `json:"tool"`
	Event       string   `json:"event,omitempty"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
}

// CardRequest is the body of POST /v1/card.
type CardRequest struct {
	Peer string `json:"peer"`
}

// CardResponse answers POST /v1/card with a verified card.
type CardResponse struct {
	Peer    string           `json:"peer"`
	Seq     uint64           `json:"seq"`
	Issued  time.Time        `json:"issued"`
	Expires time.Time        `json:"expires"`
	Name    string           `json:"name"`
	Desc    string           `json:"description,omitempty"`
	Version string           `json:"version,omitempty"`
	Addrs   []string         `json:"addrs"`
	Tags    []string         `json:"tags,omitempty"`
	Servers []*cardpb.Server `json:"servers"`
}

// AnyPeer, as the peer of a call, asks the daemon to find a provider.
const AnyPeer = "any"

func addrStrings(c *discovery.Card) []string {
	var out []string
	for _, a := range c.Multiaddrs() {
		out = append(out, a.String())
	}
	return out
}

func (s *Server) handleFind(w http.ResponseWriter, r *http.Request) {
	var req FindRequest
	if !readJSON(w, r, &req) {
		return
	}
	capability, err := discovery.ParseQuery(req.Query)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	timeout := req.Timeout
	if timeout <= 0 || timeout > 5*time.Minute {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	if capability.Kind == "tool" {
		// Words, as mesh_search takes them: the tools whose names or
		// descriptions hold them, best first, one line per peer.
		s.findWords(ctx, enc, req.Query, timeout)
		return
	}
	err = s.node.Find(ctx, req.Query, func(f discovery.Found) {
		res := FindResult{Peer: f.Card.Peer.String(), Name: f.Card.Name, Addrs: addrStrings(f.Card), Matches: []FindMatch{}}
		for _, m := range f.Matches {
			switch {
			case m.Tool != nil:
				res.Matches = append(res.Matches, FindMatch{Server: m.Server, Tool: m.Tool.Name, Description: m.Tool.Description, Tags: m.Tool.Tags})
			case m.Event != nil:
				res.Matches = append(res.Matches, FindMatch{Event: m.Event.Name, Description: m.Event.Description})
			}
		}
		enc.Encode(res)
		if flusher != nil {
			flusher.Flush()
		}
	})
	// The lookup ending at its deadline is its normal end.
	if err != nil && ctx.Err() == nil {
		enc.Encode(FindResult{Error: err.Error()})
	}
}

// findWords answers a find of words with mesh_search's matching
// (gateway.Mesh), the tools grouped by peer, the peer of the best match
// first.
func (s *Server) findWords(ctx context.Context, enc *json.Encoder, query string, timeout time.Duration) {
	mesh := gateway.NewMesh(s.node, gateway.MeshOptions{SearchTimeout: timeout})
	matches, err := mesh.Matches(ctx, query, nil)
	if err != nil {
		enc.Encode(FindResult{Error: err.Error()})
		return
	}
	var order []*FindResult
	byPeer := map[lpeer.ID]*FindResult{}
	for _, m := range matches {
		res, ok := byPeer[m.Card.Peer]
		if !ok {
			res = &FindResult{Peer: m.Card.Peer.String(), Name: m.Card.Name, Addrs: addrStrings(m.Card)}
			byPeer[m.Card.Peer] = res
			order = append(order, res)
		}
		res.Matches = append(res.Matches, FindMatch{Server: m.Server, Tool: m.Tool.Name, Description: m.Tool.Description, Tags: m.Tool.Tags})
	}
	for _, res := range order {
		enc.Encode(res)
	}
}

func (s *Server) handleCard(w http.ResponseWriter, r *http.Request) {
	var req CardRequest
	if !readJSON(w, r, &req) {
		return
	}
	p, err := s.target(r.Context(), req.Peer)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	c, err := s.node.Card(r.Context(), p)
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, CardResponse{
		Peer: c.Peer.String(), Seq: c.Seq, Issued: time.UnixMilli(c.IssuedAtMs).UTC(), Expires: c.Expires().UTC(),
		Name: c.Name, Desc: c.Description, Version: c.Version, Addrs: addrStrings(c), Tags: c.Tags, Servers: c.Servers,
	})
}

// callAny calls tool on a provider found in the mesh.
func (s *Server) callAny(ctx context.Context, tool string, args any) (CallResponse, int, error) {
	res, err := s.node.CallAny(ctx, tool, args)
	if err != nil {
		return CallResponse{}, http.StatusBadGateway, err
	}
	out := CallResponse{Peer: res.Peer.String(), Server: res.Server, Tool: tool, Result: res.Result}
	for _, e := range res.Tried {
		out.Tried = append(out.Tried, e.Error())
	}
	return out, 0, nil
}
