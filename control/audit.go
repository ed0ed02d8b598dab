package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/mcpmesh/mcpmesh/audit"
)

// auditRoutes serves the daemon's audit trail:
//
//	GET /v1/audit?since=&peer=&tool=&outcome=&limit=   recent served calls, oldest first
//
// since is an RFC 3339 time or a duration back from now ("10m"); peer
// matches the caller or the principal it acted for; tool matches NAME or
// SERVER/NAME; outcome is ok, error, refused or cancelled; limit keeps the
// newest N. Only the records the daemon holds in memory are searched (the
// newest 1000 by default); the file holds more (`mcpmesh audit --file`).
func (s *Server) auditRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/audit", s.handleAudit)
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	f, err := ParseAuditQuery(r.URL.Query(), time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	l := s.node.Audit()
	if l == nil {
		writeError(w, http.StatusNotFound, errors.New("this node keeps no audit log"))
		return
	}
	list := l.Recent(f)
	if list == nil {
		list = []audit.Record{}
	}
	writeJSON(w, list)
}

// ParseAuditQuery reads a filter from the query of GET /v1/audit; a since
// given as a duration counts back from now.
func ParseAuditQuery(q url.Values, now time.Time) (audit.Filter, error) {
	f := audit.Filter{Peer: q.Get("peer"), Tool: q.Get("tool")}
	var err error
	if f.Since, err = ParseSince(q.Get("since"), now); err != nil {
		return f, fmt.Errorf("since %w", err)
	}
	if f.Outcome, err = audit.ParseOutcome(q.Get("outcome")); err != nil {
		return f, fmt.Errorf("outcome %w", err)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, fmt.Errorf("limit %q: want a count (0 for all)", v)
		}
		f.Limit = n
	}
	return f, nil
}

// ParseSince reads a point in time given as an RFC 3339 time or as a
// duration back from now ("10m"). An empty v is the zero time.
func ParseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration back from now must be positive", v)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want a duration back from now (10m) or an RFC 3339 time (2026-05-01T12:00:00Z)", v)
}

// AuditQuery is the query of GET /v1/audit that asks for f.
func AuditQuery(f audit.Filter) url.Values {
	q := url.Values{}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339Nano))
	}
	if f.Peer != "" {
		q.Set("peer", f.Peer)
	}
	if f.Tool != "" {
		q.Set("tool", f.Tool)
	}
	if f.Outcome != "" {
		q.Set("outcome", string(f.Outcome))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// Audit returns the records of the daemon's recent served calls that pass
// f, oldest first.
func (c *Client) Audit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	path := "/v1/audit"
	if q := AuditQuery(f).Encode(); q != "" {
		path += "?" + q
	}
	var out []audit.Record
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}
