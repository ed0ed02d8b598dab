package control

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// PolicyResponse is the answer to GET /v1/policy.
type PolicyResponse struct {
	Summary string          `json:"summary"` // "open", or "3 grants, 2 groups"
	Policy  json.RawMessage `json:"policy"`  // the policy as the configuration file writes it
}

// CheckRequest is the body of POST /v1/policy/check: may Peer, acting for
// For ("" for itself), use Name (a tool, resource URI or prompt, by Kind)
// of Server?
type CheckRequest struct {
	Peer   string `json:"peer"`
	For    string `json:"for,omitempty"`
	Server string `json:"server"`
	Kind   string `json:"kind"` // tool, resource or prompt
	Name   string `json:"name"`
}

// CheckResponse is the policy's answer.
type CheckResponse struct {
	Allowed bool `json:"allowed"` // the call would be let through
	Listed  bool `json:"listed"`  // the capability is listed to the peer
}

// policyRoutes serves the daemon's policy:
//
//	GET  /v1/policy         the policy in force
//	POST /v1/policy/check   what it answers for one peer and capability
func (s *Server) policyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/policy", s.handlePolicy)
	mux.HandleFunc("POST /v1/policy/check", s.handlePolicyCheck)
}

func (s *Server) handlePolicy(w http.ResponseWriter, _ *http.Request) {
	p := s.node.Policy()
	raw, err := json.Marshal(p)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, PolicyResponse{Summary: p.String(), Policy: raw})
}

func (s *Server) handlePolicyCheck(w http.ResponseWriter, r *http.Request) {
	var req CheckRequest
	if !readJSON(w, r, &req) {
		return
	}
	a, err := req.access()
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	p := s.node.Policy()
	writeJSON(w, CheckResponse{Allowed: p.Allows(a), Listed: p.Shows(a)})
}

func (req CheckRequest) access() (policy.Access, error) {
	var a policy.Access
	var err error
	if a.Caller, err = lpeer.Decode(req.Peer); err != nil {
		return a, fmt.Errorf("peer %q: %w", req.Peer, err)
	}
	if req.For != "" {
		if a.For, err = lpeer.Decode(req.For); err != nil {
			return a, fmt.Errorf("for %q: %w", req.For, err)
		}
	}
	switch req.Kind {
	case "", "tool":
		a.Kind = policy.Tool
	case "resource":
		a.Kind = policy.Resource
	case "prompt":
		a.Kind = policy.Prompt
	default:
		return a, fmt.Errorf("kind %q: want tool, resource or prompt", req.Kind)
	}
	if req.Server == "" || req.Name == "" {
		return a, fmt.Errorf("name a server and a %s", a.Kind)
	}
	a.Server, a.Name = req.Server, req.Name
	return a, nil
}

// Policy returns the daemon's policy.
func (c *Client) Policy(ctx context.Context) (PolicyResponse, error) {
	var out PolicyResponse
	return out, c.do(ctx, http.MethodGet, "/v1/policy", nil, &out)
}

// CheckPolicy asks what the daemon's policy answers for req.
func (c *Client) CheckPolicy(ctx context.Context, req CheckRequest) (CheckResponse, error) {
	var out CheckResponse
	return out, c.do(ctx, http.MethodPost, "/v1/policy/check", req, &out)
}
