package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// Why server-sent events: the page only listens (its actions are plain
// POSTs), EventSource reconnects by itself, and it is HTTP, so the same
// checks and cookie apply as to every other request. Each open page has
// one stream, and one more per tree it shows; the loop of a stream is the
// request's own goroutine, so it ends with the request.

// Limits of what one event carries.
const (
	maxTaskItems  = 200 // newest top-level tasks in a "tasks" event
	maxAuditFirst = 500 // audit records in the first "audit" event
	maxAuditNext  = 500 // in each later one (more new ones: the newest)
	maxPolicyRows = 100 // peers in the policy matrix
	maxPolicyCols = 100 // tools in the policy matrix
	keepAlive     = 15 * time.Second
	treeTimeout   = 3 * time.Second  // one look at a tree across nodes
	treeLinger    = 10 * time.Second // a tree is followed this long after its root ended
)

// stream writes server-sent events.
type stream struct {
	w http.ResponseWriter
	f http.Flusher
}

func newStream(w http.ResponseWriter) (*stream, error) {
	f, ok := w.(http.Flusher)
	if !ok {
		return nil, errors.New("this connection cannot stream")
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// A page reconnects 2 s after a lost stream (after a daemon restart it
	// is refused: the cookie is the old daemon's).
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return nil, err
	}
	f.Flush()
	return &stream{w: w, f: f}, nil
}

// send writes one event; data is JSON, which holds no raw newline.
func (st *stream) send(event string, data []byte) error {
	if _, err := fmt.Fprintf(st.w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		return err
	}
	st.f.Flush()
	return nil
}

func (st *stream) sendJSON(event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	return st.send(event, data)
}

func (st *stream) ping() error {
	if _, err := fmt.Fprint(st.w, ": keep-alive\n\n"); err != nil {
		return err
	}
	st.f.Flush()
	return nil
}

// feed is what one page's stream has sent so far.
type feed struct {
	self, peers, tasks, policy []byte
	audit                      uint64 // cursor in the audit trail
	auditStarted               bool
	relays                     map[string]string // this node's re-shared servers
	ownTools                   []string
	ownToolsAt                 time.Time
}

// serveEvents is the page's live feed. Events (each data a JSON object):
//
//	self    this node: Self
//	peers   {peers: [Peer]}, when anything about them changed
//	tasks   {items: [tasks.Task], running, total}: the newest top-level tasks
//	audit   {items: [auditItem], reset, kept}: records new since the last event
//	policy  policyView, when the policy or the peers changed
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	st, err := newStream(w)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // Close ends the stream
	defer stop()

	var f feed
	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()
	lastWrite := time.Now()
	for i := 0; ; i++ {
		sent, err := s.feedOnce(ctx, st, &f, i%4 == 0)
		if err != nil {
			log.Debugw("event stream ends", "error", err)
			return
		}
		if sent {
			lastWrite = time.Now()
		} else if time.Since(lastWrite) > keepAlive {
			if st.ping() != nil {
				return
			}
			lastWrite = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// feedOnce sends what changed since the last time; slow adds the peers, the
// node itself and the policy, which change less often and cost more.
func (s *Server) feedOnce(ctx context.Context, st *stream, f *feed, slow bool) (bool, error) {
	sent := false
	push := func(event string, last *[]byte, v any) error {
		data, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode %s event: %w", event, err)
		}
		if bytes.Equal(data, *last) {
			return nil
		}
		*last = data
		sent = true
		return st.send(event, data)
	}
	if slow {
		self := s.n.Self()
		f.relays = self.Relays
		if err := push("self", &f.self, self); err != nil {
			return sent, err
		}
		peers := s.peerView()
		if err := push("peers", &f.peers, map[string]any{"peers": peers}); err != nil {
			return sent, err
		}
		if err := push("policy", &f.policy, s.policyView(ctx, f, self, peers)); err != nil {
			return sent, err
		}
	}
	if err := push("tasks", &f.tasks, taskView(s.n.Tasks())); err != nil {
		return sent, err
	}
	max := maxAuditNext
	if !f.auditStarted {
		max = maxAuditFirst
	}
	recs, next, kept := s.n.AuditSince(f.audit, max)
	if !f.auditStarted || len(recs) > 0 {
		items := make([]auditItem, len(recs))
		for i := range recs {
			items[i] = newAuditItem(next-uint64(len(recs)-i), recs[i], f.relays, s.peerName)
		}
		if err := st.sendJSON("audit", map[string]any{"items": items, "reset": !f.auditStarted, "kept": kept}); err != nil {
			return sent, err
		}
		sent = true
	}
	f.audit, f.auditStarted = next, true
	return sent, nil
}

// peerView is the node's peers with what their cards say, connected first.
func (s *Server) peerView() []Peer {
	peers := s.n.Peers()
	for i := range peers {
		s.cards.describe(&peers[i])
	}
	rank := map[PeerState]int{Connected: 0, Known: 1, Banned: 2}
	slices.SortFunc(peers, func(a, b Peer) int {
		if d := rank[a.State] - rank[b.State]; d != 0 {
			return d
		}
		return strings.Compare(a.ID, b.ID)
	})
	if peers == nil {
		peers = []Peer{}
	}
	return peers
}

// taskList is the "tasks" event.
type taskList struct {
	Items   []tasks.Task `json:"items"`
	Running int          `json:"running"`
	Total   int          `json:"total"`
}

// taskView keeps the top-level tasks (those whose caller's task is not on
// this node: the roots of calls made here, and calls from other nodes),
// newest first; the page shows the rest as trees.
func taskView(all []tasks.Task) taskList {
	here := make(map[string]bool, len(all))
	for i := range all {
		here[all[i].ID] = true
	}
	out := taskList{Items: []tasks.Task{}, Total: len(all)}
	for i := len(all) - 1; i >= 0; i-- {
		t := &all[i]
		if !t.State.Terminal() {
			out.Running++
		}
		if t.Parent != "" && here[t.Parent] {
			continue
		}
		if len(out.Items) < maxTaskItems {
			out.Items = append(out.Items, *t)
		}
	}
	slices.SortStableFunc(out.Items, func(a, b tasks.Task) int { return b.Started.Compare(a.Started) })
	return out
}

// auditItem is one record of the "audit" event, with its kind and, for a
// refusal, why.
type auditItem struct {
	Seq     uint64       `json:"seq"`
	Kind    string       `json:"kind"` // served, relayed or refused
	Record  audit.Record `json:"record"`
	Explain string       `json:"explain,omitempty"`
	Grant   string       `json:"grant,omitempty"` // for a policy refusal: a grant that would have allowed it
}

func newAuditItem(seq uint64, r audit.Record, relays map[string]string, name func(string) string) auditItem {
	it := auditItem{Seq: seq, Kind: "served", Record: r}
	switch {
	case r.Outcome == audit.Refused:
		it.Kind = "refused"
		it.Explain, it.Grant = explainRefusal(&r, name)
	case relays[r.Server] != "":
		it.Kind = "relayed"
	}
	return it
}

// policyView is the "policy" event: the policy, and what each known peer
// may call here, for itself.
type policyView struct {
	Policy
	Tools []string    `json:"tools"` // this node's tools, SERVER/TOOL: the matrix's columns
	Rows  []policyRow `json:"rows"`
	Note  string      `json:"note,omitempty"`
}

type policyRow struct {
	Peer  string     `json:"peer"`
	Name  string     `json:"name,omitempty"`
	State PeerState  `json:"state"`
	Cells []Decision `json:"cells"`
}

func (s *Server) policyView(ctx context.Context, f *feed, self Self, peers []Peer) policyView {
	v := policyView{Policy: s.n.Policy(), Tools: s.ownTools(ctx, f, self.ID), Rows: []policyRow{}}
	if len(v.Tools) > maxPolicyCols {
		v.Note = fmt.Sprintf("The first %d of %d tools. ", maxPolicyCols, len(v.Tools))
		v.Tools = v.Tools[:maxPolicyCols]
	}
	if len(peers) > maxPolicyRows {
		v.Note += fmt.Sprintf("The first %d of %d peers; ask about any other below.", maxPolicyRows, len(peers))
		peers = peers[:maxPolicyRows]
	}
	for _, p := range peers {
		row := policyRow{Peer: p.ID, Name: p.Name, State: p.State, Cells: make([]Decision, len(v.Tools))}
		for i, ref := range v.Tools {
			server, tool, _ := strings.Cut(ref, "/")
			row.Cells[i], _ = s.n.Check(Access{Peer: p.ID, Server: server, Kind: "tool", Name: tool})
		}
		v.Rows = append(v.Rows, row)
	}
	return v
}

// ownToolsEvery is how often a feed lists the node's own tools again.
const ownToolsEvery = 10 * time.Second

func (s *Server) ownTools(ctx context.Context, f *feed, self string) []string {
	if f.ownTools != nil && time.Since(f.ownToolsAt) < ownToolsEvery {
		return f.ownTools
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tools, err := s.n.Tools(ctx, self)
	if err != nil {
		log.Debugw("list own tools", "error", err)
		if f.ownTools == nil {
			return []string{}
		}
		return f.ownTools
	}
	refs := make([]string, len(tools))
	for i, t := range tools {
		refs[i] = t.Server + "/" + t.Tool.Name
	}
	slices.Sort(refs)
	f.ownTools, f.ownToolsAt = refs, time.Now()
	return refs
}

// treeView is the "tree" event of a tree's stream.
type treeView struct {
	Tree   *Tree           `json:"tree"`
	Result json.RawMessage `json:"result,omitempty"` // the root's, once it ended
}

// serveTree follows the tree below task id across nodes, sending a "tree"
// event each time it changed, until every task in it has ended (or its
// root ended treeLinger ago); then "end". A task this node does not hold
// gets "problem" and "end".
func (s *Server) serveTree(w http.ResponseWriter, r *http.Request, id string) {
	st, err := newStream(w)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()
	var last []byte
	var rootEnded time.Time
	lastWrite := time.Now()
	for {
		tctx, tcancel := context.WithTimeout(ctx, treeTimeout)
		tree, err := s.n.TaskTree(tctx, id)
		tcancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			st.sendJSON("problem", apiError{Error: err.Error()})
			st.send("end", []byte("{}"))
			return
		}
		v := treeView{Tree: tree}
		if tree.State.Terminal() {
			if t, ok := s.n.Task(id); ok {
				v.Result = t.Result
			}
			if rootEnded.IsZero() {
				rootEnded = time.Now()
			}
		}
		data, err := json.Marshal(v)
		if err != nil {
			log.Errorw("encode tree", "error", err)
			return
		}
		if !bytes.Equal(data, last) {
			if st.send("tree", data) != nil {
				return
			}
			last, lastWrite = data, time.Now()
		} else if time.Since(lastWrite) > keepAlive {
			if st.ping() != nil {
				return
			}
			lastWrite = time.Now()
		}
		if settled(tree) || (!rootEnded.IsZero() && time.Since(rootEnded) > treeLinger) {
			st.send("end", []byte("{}"))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// settled reports whether every task in t has ended or cannot be asked.
func settled(t *Tree) bool {
	if t.Unreachable == "" && !t.State.Terminal() {
		return false
	}
	for _, c := range t.Children {
		if !settled(c) {
			return false
		}
	}
	return true
}
