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
	maxTaskItems  = 50   // newest top-level tasks in an update
	maxAuditFirst = 500  // audit records in the first "audit" event
	maxAuditRead  = 1000 // audit records read per look (the node keeps 1000)
	maxAuditOK    = 100  // records other than refusals per later event, the newest
	maxCardPeers  = 100  // peers whose cards are fetched and shown
	maxPolicyRows = 100  // peers in the policy matrix
	maxPolicyCols = 100  // tools in the policy matrix
	keepAlive     = 15 * time.Second
	treeTimeout   = 3 * time.Second  // one look at a tree across nodes
	treeLinger    = 10 * time.Second // a tree is followed this long after its root ended
)

// stream writes server-sent events.
type stream struct {
	w         http.ResponseWriter
	f         http.Flusher
	lastWrite time.Time
}

// openStream starts an event stream on w. Its context ends with the
// request or when the console closes; call done when the stream ends.
func (s *Server) openStream(w http.ResponseWriter, r *http.Request) (st *stream, ctx context.Context, done func(), ok bool) {
	st, err := newStream(w)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return nil, nil, nil, false
	}
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.ctx, cancel) // Close ends the stream
	return st, ctx, func() { stop(); cancel() }, true
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
	return &stream{w: w, f: f, lastWrite: time.Now()}, nil
}

// send writes one event; data is JSON, which holds no raw newline.
func (st *stream) send(event string, data []byte) error {
	if _, err := fmt.Fprintf(st.w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		return err
	}
	st.f.Flush()
	st.lastWrite = time.Now()
	return nil
}

func (st *stream) sendJSON(event string, v any) error { // v: a JSON object
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	return st.send(event, data)
}

// idle writes a comment when nothing was written for a while: it keeps the
// connection open through anything in between, and finds a client gone.
func (st *stream) idle() error {
	if time.Since(st.lastWrite) < keepAlive {
		return nil
	}
	if _, err := fmt.Fprint(st.w, ": keep-alive\n\n"); err != nil {
		return err
	}
	st.f.Flush()
	st.lastWrite = time.Now()
	return nil
}

// feed is what one page's stream has sent so far.
type feed struct {
	self, peers, tasks, policy []byte
	audit                      uint64 // cursor in the audit trail
	auditStarted               bool
	tasksHot, auditHot         bool              // the list, the trail changed at the last look
	relays                     map[string]string // this node's re-shared servers
	ownTools                   []string
	ownToolsAt                 time.Time
}

// serveEvents is the page's live feed: one "update" event each time the
// daemon finds something changed (a JSON object with the sections that did,
// so that the page renders once per update):
//
//	self    this node: Self
//	peers   [Peer], when anything about them changed
//	tasks   {items: [taskItem], running, total}: the newest top-level tasks
//	audit   {items: [auditItem], reset, kept, skipped}: records new since the
//	        last update (every refusal; of the others the newest 100, skipped
//	        counts the rest)
//	policy  policyView, when the policy or the peers changed
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	st, ctx, done, ok := s.openStream(w, r)
	if !ok {
		return
	}
	defer done()
	var f feed
	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		if err := s.feedOnce(ctx, st, &f, i%4 == 0); err != nil {
			log.Debugw("event stream ends", "error", err)
			return
		}
		if st.idle() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// update is the "update" event: the sections that changed, as JSON.
type update struct {
	Self   json.RawMessage `json:"self,omitempty"`
	Peers  json.RawMessage `json:"peers,omitempty"`
	Tasks  json.RawMessage `json:"tasks,omitempty"`
	Policy json.RawMessage `json:"policy,omitempty"`
	Audit  *auditUpdate    `json:"audit,omitempty"`
}

type auditUpdate struct {
	Items   []auditItem `json:"items"`
	Reset   bool        `json:"reset"`   // the first: the page starts its list over
	Kept    bool        `json:"kept"`    // the node keeps an audit log
	Skipped int         `json:"skipped"` // records other than refusals left out
}

// feedOnce sends what changed since the last time, if anything; slow adds
// the peers, the node itself and the policy, which change less often and
// cost more to make.
func (s *Server) feedOnce(ctx context.Context, st *stream, f *feed, slow bool) error {
	var u update
	changed := false
	section := func(last *[]byte, v any) (json.RawMessage, error) {
		data, err := json.Marshal(v)
		if err != nil || bytes.Equal(data, *last) {
			return nil, err
		}
		*last = data
		changed = true
		return data, nil
	}
	var err error
	if slow {
		self := s.n.Self()
		f.relays = self.Relays
		peers := s.peerView()
		if u.Self, err = section(&f.self, self); err != nil {
			return err
		}
		if u.Peers, err = section(&f.peers, peers); err != nil {
			return err
		}
		if u.Policy, err = section(&f.policy, s.policyView(ctx, f, self, peers)); err != nil {
			return err
		}
	}
	// A list that changed at the last look is looked at every other time:
	// on a busy node it changes at every look, and one update a second is
	// enough to read.
	if f.tasksHot {
		f.tasksHot = false
	} else {
		if u.Tasks, err = section(&f.tasks, taskView(s.n.Tasks())); err != nil {
			return err
		}
		f.tasksHot = u.Tasks != nil
	}
	// The trail too: new records at the last look, the next look waits.
	if f.auditHot {
		f.auditHot = false
	} else {
		recs, next, kept := s.n.AuditSince(f.audit, maxAuditRead)
		if !f.auditStarted || len(recs) > 0 {
			first := next - uint64(len(recs)) + 1 // the cursor of recs[0]
			keep := maxAuditOK
			if !f.auditStarted {
				keep = maxAuditFirst
			}
			items, skipped := auditItems(recs, first, keep, f.relays, s.peerName)
			u.Audit = &auditUpdate{Items: items, Reset: !f.auditStarted, Kept: kept, Skipped: skipped}
			changed = true
		}
		f.auditHot = f.auditStarted && len(recs) > 0
		f.audit, f.auditStarted = next, true
	}
	if !changed {
		return nil
	}
	return st.sendJSON("update", u)
}

// peerView is the node's peers with what their cards say (the first
// maxCardPeers of them), connected first.
func (s *Server) peerView() []Peer {
	peers := s.n.Peers()
	rank := map[PeerState]int{Connected: 0, Known: 1, Banned: 2}
	slices.SortFunc(peers, func(a, b Peer) int {
		if d := rank[a.State] - rank[b.State]; d != 0 {
			return d
		}
		return strings.Compare(a.ID, b.ID)
	})
	for i := range peers[:min(len(peers), maxCardPeers)] {
		s.cards.describe(&peers[i])
	}
	if peers == nil {
		peers = []Peer{}
	}
	return peers
}

// taskList is the tasks section of an update.
type taskList struct {
	Items   []taskItem `json:"items"`
	Running int        `json:"running"`
	Total   int        `json:"total"`
}

// taskItem is what the list shows of a task (its tree has the rest).
type taskItem struct {
	ID       string          `json:"id"`
	Role     tasks.Role      `json:"role"`
	Server   string          `json:"server"`
	Tool     string          `json:"tool"`
	Target   string          `json:"target,omitempty"`
	Caller   string          `json:"caller,omitempty"`
	State    tasks.State     `json:"state"`
	Progress *tasks.Progress `json:"progress,omitempty"`
	Failed   bool            `json:"failedBelow,omitempty"` // the failure started at a hop below
	Started  time.Time       `json:"started"`
	Ended    time.Time       `json:"ended,omitzero"`
}

// taskView keeps the top-level tasks (those whose caller's task is not on
// this node: the roots of calls made here, and calls from other nodes),
// newest first; the page shows the rest as trees.
func taskView(all []tasks.Task) taskList {
	here := make(map[string]bool, len(all))
	for i := range all {
		here[all[i].ID] = true
	}
	out := taskList{Items: []taskItem{}, Total: len(all)}
	for i := len(all) - 1; i >= 0; i-- {
		t := &all[i]
		if !t.State.Terminal() {
			out.Running++
		}
		if t.Parent != "" && here[t.Parent] {
			continue
		}
		if len(out.Items) < maxTaskItems {
			out.Items = append(out.Items, taskItem{ID: t.ID, Role: t.Role, Server: t.Server, Tool: t.Tool, Target: t.Target, Caller: t.Caller,
				State: t.State, Progress: t.Progress, Failed: t.FailedAt != nil, Started: t.Started, Ended: t.Ended})
		}
	}
	slices.SortStableFunc(out.Items, func(a, b taskItem) int { return b.Started.Compare(a.Started) })
	return out
}

// auditItems makes the records of an "audit" event: every refusal, and the
// newest keep of the others. Under load a node serves more calls than a page
// can show; refusals are the ones to explain. skipped counts the others.
func auditItems(recs []audit.Record, first uint64, keep int, relays map[string]string, name func(string) string) ([]auditItem, int) {
	others := 0
	for i := range recs {
		if recs[i].Outcome != audit.Refused {
			others++
		}
	}
	skip := max(others-keep, 0)
	items := make([]auditItem, 0, len(recs)-skip)
	for i := range recs {
		if recs[i].Outcome != audit.Refused && skip > 0 {
			skip--
			continue
		}
		items = append(items, newAuditItem(first+uint64(i), recs[i], relays, name))
	}
	return items, max(others-keep, 0)
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
	st, ctx, done, ok := s.openStream(w, r)
	if !ok {
		return
	}
	defer done()
	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()
	var last []byte
	var rootEnded time.Time
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
			last = data
		} else if st.idle() != nil {
			return
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
