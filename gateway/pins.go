package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/retry"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node/iface"
)

// PinEvent says what became of a pin: listed under Name, or not (yet), Err
// saying why and what to do. A pin not listed is tried again when the mesh
// changes (a peer connects) and every 30 s at most.
type PinEvent struct {
	Pin  string // as written: PEER/[SERVER/]TOOL, with NAME= if given
	Name string // the tool's name on the mesh-mode server, once listed
	Err  error
	// Renamed is the name the pin was listed under before Name, when a
	// second pinned peer with the same name made both take an ID suffix.
	Renamed string
}

func (e PinEvent) String() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("pin %s: not listed: %v", e.Pin, e.Err)
	case e.Renamed != "":
		return fmt.Sprintf("pin %s: listed as %s (was %s: another pinned peer has the same name)", e.Pin, e.Name, e.Renamed)
	}
	return fmt.Sprintf("pin %s: listed as %s", e.Pin, e.Name)
}

// LogPin says e in the gateway's log (a pin not listed as a warning): what
// becomes of pins when MeshOptions.OnPin is not set.
func LogPin(e PinEvent) {
	if e.Err != nil {
		log.Warn(e.String())
	} else {
		log.Info(e.String())
	}
}

func (p Pin) String() string {
	s := p.Peer.String() + "/"
	if p.Server != "" {
		s += p.Server + "/"
	}
	s += p.Tool
	if p.As != "" {
		s = p.As + "=" + s
	}
	return s
}

// Bounds of pin resolving.
const (
	pinAttempt  = 10 * time.Second       // one attempt (a dial, a tool list)
	pinMaxWait  = 30 * time.Second       // between attempts when nothing changes
	pinSettle   = 500 * time.Millisecond // after a peer connects, before trying
	maxLabelLen = 48
)

// listedPin is a pin the server lists.
type listedPin struct {
	pin   Pin
	label string // the peer's name as a label, before any suffix
	tool  iface.RemoteTool
	name  string
}

// runPins resolves pins and lists each on s as it resolves, until all are
// listed or ctx ends. A pin that does not resolve is said (once per
// reason) and tried again when a peer connects, or after a backoff.
func (g *Mesh) runPins(ctx context.Context, s *sdkmcp.Server, pins []Pin, first *firstTry) {
	report := g.reportPin
	defer first.end()
	changed, stop := meshChanges(g.n)
	defer stop()
	pending := make(map[int]Pin, len(pins))
	for i, p := range pins {
		pending[i] = p
	}
	said := map[int]string{}
	var listed []*listedPin
	backoff := retry.Backoff(time.Second, pinMaxWait)
	if g.opts.PinRetry > 0 {
		backoff = retry.Backoff(g.opts.PinRetry, g.opts.PinRetry)
	}
	for len(pending) > 0 {
		// Each pin is handled as its try ends: a slow one (a dial that
		// times out) holds up no other.
		for r := range g.attemptPins(ctx, pending) {
			i := r.i
			if r.err == nil {
				lp := &listedPin{pin: pending[i], label: r.label, tool: r.tool}
				if r.err = g.list(s, lp, listed, report); r.err == nil {
					listed = append(listed, lp)
					delete(pending, i)
					report(PinEvent{Pin: lp.pin.String(), Name: lp.name})
				}
			}
			if r.err != nil {
				if msg := r.err.Error(); said[i] != msg && ctx.Err() == nil {
					said[i] = msg
					report(PinEvent{Pin: pending[i].String(), Err: r.err})
				}
			}
			first.tried(i)
		}
		if ctx.Err() != nil {
			return
		}
		if len(pending) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			backoff.Reset()
			// Let the new connection settle (identify, the DHT) first.
			if !retry.Sleep(ctx, pinSettle) {
				return
			}
			drain(changed)
		case <-time.After(backoff.Delay()):
		}
	}
}

// reportPin says e to OnPin, or in the log.
func (g *Mesh) reportPin(e PinEvent) {
	if g.opts.OnPin != nil {
		g.opts.OnPin(e)
		return
	}
	LogPin(e)
}

// defaultPinWait is MeshOptions.PinWait's default.
const defaultPinWait = 5 * time.Second

// firstTry tracks the pins whose first try has not ended, for a host's
// first tools/list, which waits for them (within a bound): a host that
// lists tools once, at its start, and ignores list_changed would never
// see a pin listed a moment later.
type firstTry struct {
	pins []Pin
	done chan struct{} // closed when every pin has had its first try

	mu       sync.Mutex
	trying   map[int]bool // the indexes in pins of those still in their first try
	deadline time.Time    // set by the first tools/list: no later one waits longer
	said     bool         // a tools/list has given up waiting, and said so
}

func newFirstTry(pins []Pin) *firstTry {
	f := &firstTry{pins: pins, done: make(chan struct{}), trying: make(map[int]bool, len(pins))}
	for i := range pins {
		f.trying[i] = true
	}
	return f
}

// tried notes that pin i's first try has ended.
func (f *firstTry) tried(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.trying[i] {
		return
	}
	delete(f.trying, i)
	if len(f.trying) == 0 {
		close(f.done)
	}
}

// end stops every wait: the pins are no longer tried.
func (f *firstTry) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.trying) > 0 {
		clear(f.trying)
		close(f.done)
	}
}

// middleware makes tools/list wait for the first try of every pin, at most
// wait from the first tools/list on; a list that gives up says which pins
// it went without, once.
func (f *firstTry) middleware(wait time.Duration, report func(PinEvent)) sdkmcp.Middleware {
	return func(next sdkmcp.MethodHandler) sdkmcp.MethodHandler {
		return func(ctx context.Context, method string, req sdkmcp.Request) (sdkmcp.Result, error) {
			if method == "tools/list" {
				f.wait(ctx, wait, report)
			}
			return next(ctx, method, req)
		}
	}
}

func (f *firstTry) wait(ctx context.Context, wait time.Duration, report func(PinEvent)) {
	select {
	case <-f.done:
		return
	default:
	}
	f.mu.Lock()
	if f.deadline.IsZero() {
		f.deadline = time.Now().Add(wait)
	}
	timer := time.NewTimer(time.Until(f.deadline))
	f.mu.Unlock()
	defer timer.Stop()
	select {
	case <-f.done:
		return
	case <-ctx.Done():
		return
	case <-timer.C:
	}
	f.mu.Lock()
	var late []Pin
	if !f.said {
		f.said = true
		for i, p := range f.pins {
			if f.trying[i] {
				late = append(late, p)
			}
		}
	}
	f.mu.Unlock()
	for _, p := range late {
		report(PinEvent{Pin: p.String(), Err: fmt.Errorf("still being tried after %v: the host's first tools/list went without it; it is announced with list_changed once listed (a host that ignores list_changed shows it after a restart)", wait)})
	}
}

type pinResult struct {
	i     int // the pin's index
	tool  iface.RemoteTool
	label string
	err   error
}

// attemptPins tries every pending pin at once; the channel yields each
// result as it comes and closes after the last.
func (g *Mesh) attemptPins(ctx context.Context, pending map[int]Pin) <-chan pinResult {
	out := make(chan pinResult, len(pending))
	var wg sync.WaitGroup
	for i, p := range pending {
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, pinAttempt)
			defer cancel()
			r := g.resolvePin(actx, p)
			r.i = i
			out <- r
		})
	}
	go func() { wg.Wait(); close(out) }()
	return out
}

// resolvePin finds p's tool and its peer's label, or says why it cannot
// and what to do.
func (g *Mesh) resolvePin(ctx context.Context, p Pin) pinResult {
	ref := p.Tool
	if p.Server != "" {
		ref = p.Server + "/" + p.Tool
	}
	t, err := g.n.ResolveTool(ctx, p.Peer, ref)
	switch {
	case errors.Is(err, iface.ErrAmbiguousTool):
		return pinResult{err: fmt.Errorf("%w; pin one of them as PEER/SERVER/TOOL", err)}
	case errors.Is(err, iface.ErrNoSuchTool):
		hint := ""
		if near := g.nearTool(ctx, p); near != "" {
			hint = fmt.Sprintf("; did you mean %q?", near)
		}
		return pinResult{err: fmt.Errorf("%w%s; 'mcpmesh tools %s' lists its tools (tried again when the mesh changes)", err, hint, p.Peer)}
	case err != nil:
		return pinResult{err: fmt.Errorf("not reachable yet: %w (tried again when a peer connects: is it running, is its ID right? --peer ADDR connects to it)", err)}
	}
	if err := g.allow(p.Peer, t); err != nil {
		return pinResult{err: err}
	}
	return pinResult{tool: t, label: g.peerLabel(ctx, p.Peer)}
}

// nearTool returns the name of p's peer's tool closest to p.Tool, if one is
// close enough to be a misspelling of it.
func (g *Mesh) nearTool(ctx context.Context, p Pin) string {
	lister, ok := g.n.(interface {
		ListTools(context.Context, lpeer.ID) ([]iface.RemoteTool, error)
	})
	if !ok {
		return ""
	}
	all, err := lister.ListTools(ctx, p.Peer)
	if err != nil {
		return ""
	}
	best, bestD := "", len(p.Tool)/3+2
	for _, t := range all {
		if p.Server != "" && t.Server != p.Server {
			continue
		}
		if d := editDistance(strings.ToLower(p.Tool), strings.ToLower(t.Name)); d < bestD {
			best, bestD = t.Name, d
		}
	}
	return best
}

// peerLabel is the name p gives itself (the name of its node's MCP server,
// the same as its card's), as a label; the end of its ID if it has none.
func (g *Mesh) peerLabel(ctx context.Context, p lpeer.ID) string {
	var name string
	if sn, ok := g.n.(interface {
		Session(context.Context, lpeer.ID, string) (*sdkmcp.ClientSession, error)
	}); ok {
		if cs, err := sn.Session(ctx, p, transport.DefaultServer); err == nil {
			if r := cs.InitializeResult(); r != nil && r.ServerInfo != nil {
				name = r.ServerInfo.Name
			}
		}
	}
	if name == "" {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if c, err := g.n.Card(cctx, p); err == nil {
			name = c.Name
		}
		cancel()
	}
	if label := sanitizeLabel(name); label != "" && name != "mcpmesh" {
		return label
	}
	return shortID(p)
}

// list adds lp to s under its name: As, or LABEL.TOOL with an ID suffix on
// LABEL if another listed peer has the same label (that peer's pins take
// one too, renamed, and said).
func (g *Mesh) list(s *sdkmcp.Server, lp *listedPin, listed []*listedPin, report func(PinEvent)) error {
	name := lp.pin.As
	if name == "" {
		label := lp.label
		for _, o := range listed {
			if o.pin.As == "" && o.pin.Peer != lp.pin.Peer && o.label == lp.label {
				label = lp.label + "-" + shortID(lp.pin.Peer)
				break
			}
		}
		name = label + "." + sanitizeLabel(lp.tool.Name)
	}
	if len(name) > 128 {
		name = name[:128]
	}
	if reserved(name) {
		return fmt.Errorf("the name %s is mesh mode's own; give the pin another: NAME=%s", name, lp.pin)
	}
	for _, o := range listed {
		if o.name == name {
			return fmt.Errorf("the name %s is taken by pin %s; give this one another: NAME=%s", name, o.pin, lp.pin)
		}
	}
	lp.name = name
	g.addPinned(s, lp)
	// The peers that had this label alone take their suffix now.
	if lp.pin.As == "" && !strings.HasPrefix(name, lp.label+".") {
		for _, o := range listed {
			if o.pin.As != "" || o.label != lp.label || strings.Contains(o.name, "-"+shortID(o.pin.Peer)+".") {
				continue
			}
			old := o.name
			s.RemoveTools(old)
			o.name = o.label + "-" + shortID(o.pin.Peer) + "." + sanitizeLabel(o.tool.Name)
			g.addPinned(s, o)
			report(PinEvent{Pin: o.pin.String(), Name: o.name, Renamed: old})
		}
	}
	return nil
}

func (g *Mesh) addPinned(s *sdkmcp.Server, lp *listedPin) {
	tool := *lp.tool.Tool
	tool.Name = lp.name
	p, server, remote := lp.pin.Peer, lp.tool.Server, lp.tool.Name
	s.AddTool(&tool, func(ctx context.Context, req *sdkmcp.CallToolRequest) (*sdkmcp.CallToolResult, error) {
		var args any
		if len(req.Params.Arguments) > 0 {
			args = json.RawMessage(req.Params.Arguments)
		}
		return g.n.CallServerTool(withHostProgress(ctx, req), p, server, remote, args)
	})
}

func reserved(name string) bool {
	switch name {
	case "mesh_search", "mesh_describe", "mesh_call", "mesh_subscribe", "mesh_events":
		return true
	}
	return false
}

// sanitizeLabel makes s a part of a valid MCP tool name: letters, digits,
// '_' and '-' (a '.' would blur LABEL.TOOL), every run of anything else one
// '-', at most maxLabelLen bytes.
func sanitizeLabel(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range s {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= maxLabelLen {
			break
		}
	}
	return strings.TrimRight(b.String(), "-")
}

// validToolName checks a name a user gives a pin against MCP's tool names.
func validToolName(s string) error {
	if len(s) > 128 {
		return fmt.Errorf("%q is longer than a tool name may be (128)", s)
	}
	for _, r := range s {
		if !(r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')) {
			return fmt.Errorf("%q: a tool name holds letters, digits, '_', '-' and '.' only", s)
		}
	}
	return nil
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// meshChanges signals (without blocking) when a peer connects to n's host,
// if n has one; stop ends the subscription.
func meshChanges(n iface.Node) (<-chan struct{}, func()) {
	out := make(chan struct{}, 1)
	hn, ok := n.(interface{ Host() host.Host })
	if !ok {
		return out, func() {}
	}
	sub, err := hn.Host().EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return out, func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range sub.Out() {
			if e.(event.EvtPeerConnectednessChanged).Connectedness != network.Connected {
				continue
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, func() { sub.Close(); <-done }
}

func drain(c <-chan struct{}) {
	select {
	case <-c:
	default:
	}
}
