package control

import (
	"context"
	"net/http"
	"slices"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

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
	// Daemon is what the running command says of itself (state, policy,
	// mesh, discovery); Shares the state of each shared server.
	Daemon Daemon       `json:"daemon"`
	Shares []ShareState `json:"shares"`
}

// Daemon describes the process that runs the node, as the command that
// started it tells the control API (Server.SetDaemon).
type Daemon struct {
	// State is "starting" until every shared server has had its first
	// start (or failed it), then "running".
	State   string    `json:"state"`
	Since   time.Time `json:"since"`
	PID     int       `json:"pid"`
	Home    string    `json:"home"`
	Config  string    `json:"config,omitempty"` // the configuration file read, if any
	Policy  string    `json:"policy"`           // in one line: open, closed, or its grants
	Mesh    string    `json:"mesh"`             // private mesh and its key, or "open mesh"
	MDNS    bool      `json:"mdns"`
	DHT     bool      `json:"dht"`
	Control string    `json:"control"`
}

// ShareState is one server the node shares, beside its built-in "node".
type ShareState struct {
	Name string `json:"name"`
	// State is "running", "starting" (not yet up for the first time) or
	// "restarting" (it stopped or failed; LastError says why).
	State     string `json:"state"`
	Command   string `json:"command,omitempty"` // program, URL or peer
	Tools     int    `json:"tools"`
	Restarts  int    `json:"restarts,omitempty"`
	LastError string `json:"lastError,omitempty"`
}

// SetDaemon sets what GET /v1/status says of the daemon; the command that
// runs the node calls it at start and when its state changes.
func (s *Server) SetDaemon(d Daemon) { s.daemon.Store(&d) }

// UpdateDaemon changes what GET /v1/status says of the daemon with f, which
// may run more than once: parts of the daemon (its start, a config reload)
// each change their own fields.
func (s *Server) UpdateDaemon(f func(*Daemon)) {
	for {
		old := s.daemon.Load()
		d := s.daemonInfo()
		f(&d)
		if s.daemon.CompareAndSwap(old, &d) {
			return
		}
	}
}

func (s *Server) daemonInfo() Daemon {
	if d := s.daemon.Load(); d != nil {
		return *d
	}
	return Daemon{State: "running", PID: s.pid, Home: s.home}
}

// shares reports the servers the node shares: programs and HTTP servers
// with their supervisor's state, the others (re-shared peers' servers,
// servers added in Go) as running.
func (s *Server) shares() []ShareState {
	out := []ShareState{}
	seen := map[string]bool{"node": true}
	for _, p := range s.node.Programs() {
		st := ShareState{Name: p.Name, Command: p.Command, Tools: p.Tools, Restarts: p.Restarts, LastError: p.LastError, State: "running"}
		switch {
		case p.Running:
		case p.Restarts == 0 && p.LastError == "":
			st.State = "starting"
		default:
			st.State = "restarting"
		}
		seen[p.Name] = true
		out = append(out, st)
	}
	for _, name := range s.node.Shared() {
		if !seen[name] {
			out = append(out, ShareState{Name: name, State: "running"})
		}
	}
	slices.SortFunc(out, func(a, b ShareState) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	n := s.node
	st := Status{ID: n.ID().String(), Name: n.Name(), Version: n.Version(), Status: n.Reachability(),
		Daemon: s.daemonInfo(), Shares: s.shares()}
	// Peers without an open session have no name yet: their cards have one.
	var unnamed []lpeer.ID
	for _, p := range st.Peers {
		if id, err := lpeer.Decode(p.ID); err == nil && p.Name == "" {
			unnamed = append(unnamed, id)
		}
	}
	if len(unnamed) > 0 {
		named := s.namesOf(r.Context(), unnamed)
		for i, p := range st.Peers {
			if id, err := lpeer.Decode(p.ID); err == nil && p.Name == "" {
				st.Peers[i].Name = named[id]
			}
		}
	}
	writeJSON(w, st)
}

// Status returns the daemon's state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}
