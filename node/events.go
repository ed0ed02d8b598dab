package node

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/proto"

	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/events/feed"
	"github.com/mcpmesh/mcpmesh/internal/retry"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/proto/cardpb"
	"github.com/mcpmesh/mcpmesh/tasks"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

// Wiring of the node's events (events, events/feed): the log and the types
// every node emits, the feed peers subscribe to, and the sources that feed
// it: shared servers' resource updates and list changes (observed through
// the node's own sessions to them), root tasks that end, peers that join
// and leave, and changes of the node's card.

// EventsDir is the folder of the event log in a node's home.
const EventsDir = "events"

// maxWatchedResources bounds the resources of one shared server the node
// subscribes to, for their update events.
const maxWatchedResources = 256

// unsupported marks, in a watcher's set, a server that takes no
// subscriptions.
const unsupported = "\x00unsupported"

// nodeEvents is the node's part of the events.
type nodeEvents struct {
	src  *events.Source
	feed *feed.Server

	mu      sync.Mutex
	watches map[string]chan struct{} // shared server → kick its resource watcher
	watched map[string]int           // shared server → resources subscribed to
	card    [32]byte                 // digest of what the last card offered
}

// builtinTypes are the events every node emits.
var builtinTypes = []events.Type{
	{Name: events.ResourceUpdated, Description: "A resource of one of the node's shared servers changed.",
		PayloadSchema: json.RawMessage(`{"type":"object","properties":{"server":{"type":"string"},"uri":{"type":"string"}},"required":["server","uri"]}`)},
	{Name: events.ToolsChanged, Description: "The tool list of one of the node's shared servers changed.", PayloadSchema: serverPayload},
	{Name: events.ResourcesChanged, Description: "The resource list of one of the node's shared servers changed.", PayloadSchema: serverPayload},
	{Name: events.PromptsChanged, Description: "The prompt list of one of the node's shared servers changed.", PayloadSchema: serverPayload},
	{Name: events.TaskEnded, Description: "A task that was the root of its tree on the node ended: completed, failed or cancelled, with the calls it made.",
		PayloadSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"string"},"state":{"type":"string","enum":["completed","failed","cancelled"]},"server":{"type":"string"},"tool":{"type":"string"},"target":{"type":"string"},"error":{"type":"string"},"children":{"type":"array"},"cause":{"type":"object"}},"required":["id","state"]}`)},
	{Name: events.PeerJoined, Description: "A peer connected to the node.", PayloadSchema: peerPayload},
	{Name: events.PeerLeft, Description: "A peer's last connection to the node closed.", PayloadSchema: peerPayload},
	{Name: events.CardChanged, Description: "What the node offers changed, and so its card.",
		PayloadSchema: json.RawMessage(`{"type":"object","properties":{"peer":{"type":"string"},"servers":{"type":"array","items":{"type":"string"}},"tools":{"type":"integer"},"events":{"type":"array","items":{"type":"string"}}}}`)},
}

var (
	serverPayload = json.RawMessage(`{"type":"object","properties":{"server":{"type":"string"}},"required":["server"]}`)
	peerPayload   = json.RawMessage(`{"type":"object","properties":{"peer":{"type":"string"}},"required":["peer"]}`)
)

// initEvents opens the event log and declares the built-in types; New
// calls it before the task layer, which reports the roots that end to it.
func (n *Node) initEvents() error {
	c := n.cfg.events
	if c.Off {
		return nil
	}
	lc := c.Log
	if lc.Dir == "" && !c.Memory && n.cfg.home != "" {
		lc.Dir = filepath.Join(n.cfg.home, EventsDir)
	}
	l, err := events.OpenLog(lc)
	if err != nil {
		return err
	}
	src := events.NewSource(l, c.MaxData)
	for _, t := range builtinTypes {
		if err := src.DeclareBuiltin(t); err != nil {
			l.Close()
			return err
		}
	}
	src.OnChange(n.changed)
	n.ev = &nodeEvents{src: src, watches: map[string]chan struct{}{}, watched: map[string]int{}}
	return nil
}

// startEvents serves the feed and starts the sources that run on their own
// (peers joining and leaving); New calls it last.
func (n *Node) startEvents() error {
	if n.ev == nil {
		return nil
	}
	c := n.cfg.events
	n.ev.feed = feed.NewServer(n.host, feed.Config{
		Source:  n.ev.src,
		May:     n.mayEvents,
		Visible: n.visibleEvent,
		Admit: func(p lpeer.ID) error {
			if n.limits == nil {
				return nil
			}
			release, err := n.limits.Admit(p)
			if err != nil {
				return err
			}
			release() // a subscription is long-lived: it counts against the rate, not the calls in flight
			return nil
		},
		Strike: func(p lpeer.ID, why string) {
			if n.limits != nil {
				n.limits.Strike(p, why)
			}
		},
		Audit:      n.audit,
		MaxPerPeer: c.MaxSubscriptionsPerPeer, MaxTotal: c.MaxSubscriptions,
		Heartbeat: c.Heartbeat, WriteTimeout: c.WriteTimeout,
	})
	return n.watchPeers()
}

// closeEvents stops the feed (its subscriptions end); the log is closed by
// closeEventLog once nothing emits any more.
func (n *Node) closeEvents() {
	if n.ev != nil && n.ev.feed != nil {
		n.ev.feed.Close()
	}
}

func (n *Node) closeEventLog() error {
	if n.ev == nil {
		return nil
	}
	return n.ev.src.Log().Close()
}

// mayEvents is the feed's policy: may p subscribe to the events called name.
func (n *Node) mayEvents(p lpeer.ID, name string) bool {
	return n.trust.Policy().Allows(policy.Access{Caller: p, Kind: policy.Event, Name: name})
}

// visibleEvent keeps from p the events about what the policy does not
// show it: a resource it may not see, a server where it may use nothing.
func (n *Node) visibleEvent(p lpeer.ID, e *events.Event) bool {
	switch e.Name {
	case events.ResourceUpdated, events.ToolsChanged, events.ResourcesChanged, events.PromptsChanged:
	default:
		return true
	}
	var d struct{ Server, URI string }
	if json.Unmarshal(e.Data, &d) != nil {
		return false
	}
	pol := n.trust.Policy()
	if e.Name == events.ResourceUpdated {
		return pol.Shows(policy.Access{Caller: p, Server: d.Server, Kind: policy.Resource, Name: d.URI})
	}
	return pol.AllowsServer(p, policy.Anyone, d.Server)
}

// Events returns the node's event source: the types it declares and its
// log. It is nil on a node started with events off.
func (n *Node) Events() *events.Source {
	if n.ev == nil {
		return nil
	}
	return n.ev.src
}

// ErrNoEvents is returned by event calls on a node started with events off.
var ErrNoEvents = fmt.Errorf("events are off on this node")

// DeclareEvent declares an event type the node emits (Emit), listed to
// peers by events/list and, by name, on the node's card. Names starting
// "mcp." or "mesh." are the node's own.
func (n *Node) DeclareEvent(t events.Type) error {
	if n.ev == nil {
		return ErrNoEvents
	}
	return n.ev.src.Declare(t)
}

// Emit logs an event of a type declared with DeclareEvent; the peers
// subscribed to it (that the policy lets) get it, at least once while the
// log keeps it. An emitter with a stable ID for the event (an upstream's)
// gives it as o.ID, so that a subscriber de-duplicates it however it came.
// Emitted by a handler serving a call that a trigger started, the event is
// one deeper than the one that fired (see events.Meta.Depth).
func (n *Node) Emit(ctx context.Context, o events.Occurrence) (events.Event, error) {
	if n.ev == nil {
		return events.Event{}, ErrNoEvents
	}
	if o.Depth == 0 {
		if c := n.causeOf(ctx); c != nil {
			o.Depth = c.Depth + 1
		}
	}
	return n.ev.src.Emit(o)
}

// causeOf returns the cause of the tree ctx's call belongs to, if its root
// is on this node (a trigger of this node calling one of its own tools).
func (n *Node) causeOf(ctx context.Context) *tasks.Cause {
	if c := tasks.CauseOf(ctx); c != nil {
		return c
	}
	id, ok := tracker.CurrentTask(ctx)
	if !ok {
		return nil
	}
	t, ok := n.tasks.Task(id)
	if !ok {
		return nil
	}
	if r, ok := n.tasks.Task(t.Root); ok {
		return r.Cause
	}
	return nil
}

// Subscribe subscribes to p's events of opts.Name (p may be the node
// itself). The subscription runs until closed.
func (n *Node) Subscribe(p lpeer.ID, opts feed.Options) (*feed.Subscription, error) {
	if n.ev == nil {
		return nil, ErrNoEvents
	}
	if p == n.host.ID() {
		return feed.SubscribeLocal(n.ev.src, p, opts), nil
	}
	return feed.Subscribe(n.host, p, opts), nil
}

// EventTypes lists the event types p lets this node subscribe to
// (events/list); p may be the node itself.
func (n *Node) EventTypes(ctx context.Context, p lpeer.ID) ([]events.Type, error) {
	if p == n.host.ID() {
		if n.ev == nil {
			return nil, ErrNoEvents
		}
		return n.ev.src.Types(), nil
	}
	return feed.List(ctx, n.host, p)
}

// emit logs a built-in event; failures are logged, never returned (the
// sources are the node's own machinery).
func (n *Node) emit(name string, data any, depth int) {
	if n.ev == nil {
		return
	}
	if _, err := n.ev.src.Emit(events.Occurrence{Name: name, Data: data, Depth: depth}); err != nil {
		log.Warnw("emit event", "event", name, "error", err)
	}
}

// taskEnded is the task layer's report of a root that ended.
func (n *Node) taskEnded(t tasks.Task) {
	if n.ev == nil {
		return
	}
	d := struct {
		ID         string       `json:"id"`
		Role       tasks.Role   `json:"role"`
		State      tasks.State  `json:"state"`
		Server     string       `json:"server"`
		Tool       string       `json:"tool"`
		Target     string       `json:"target,omitempty"`
		Caller     string       `json:"caller,omitempty"`
		Error      string       `json:"error,omitempty"`
		FailedAt   *tasks.Hop   `json:"failedAt,omitempty"`
		DurationMs int64        `json:"durationMs"`
		Children   []tasks.Hop  `json:"children,omitempty"`
		Cause      *tasks.Cause `json:"cause,omitempty"`
	}{t.ID, t.Role, t.State, t.Server, t.Tool, t.Target, t.Caller, clipText(t.Error, 500), t.FailedAt,
		t.Duration().Milliseconds(), t.Children, t.Cause}
	if len(d.Children) > 64 {
		d.Children = d.Children[:64]
	}
	depth := 0
	if t.Cause != nil {
		depth = t.Cause.Depth + 1
	}
	n.emit(events.TaskEnded, d, depth)
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// watchPeers emits a peer's joining and leaving, from libp2p's
// connectedness events.
func (n *Node) watchPeers() error {
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged), eventbus.Name("mcpmesh-events"))
	if err != nil {
		return fmt.Errorf("watch peers for events: %w", err)
	}
	if !n.group.Go(func() {
		defer sub.Close()
		for {
			select {
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				c := e.(event.EvtPeerConnectednessChanged)
				switch c.Connectedness {
				case network.Connected:
					n.emit(events.PeerJoined, map[string]string{"peer": c.Peer.String()}, 0)
				case network.NotConnected:
					n.emit(events.PeerLeft, map[string]string{"peer": c.Peer.String()}, 0)
				}
			case <-n.ctx.Done():
				return
			}
		}
	}) {
		sub.Close()
	}
	return nil
}

// serverChanged emits a shared server's list change, reported on one of the
// node's own sessions to it; a changed resource list also has its watcher
// look again.
func (n *Node) serverChanged(cs *sdkmcp.ClientSession, name string) {
	server, ok := n.selfServer(cs)
	if !ok || n.ev == nil {
		return
	}
	n.emit(name, map[string]string{"server": server}, 0)
	if name == events.ResourcesChanged {
		n.kickWatch(server)
	}
}

// resourceUpdated emits a shared server's resource update, reported on one
// of the node's own sessions to it.
func (n *Node) resourceUpdated(cs *sdkmcp.ClientSession, uri string) {
	server, ok := n.selfServer(cs)
	if !ok {
		return
	}
	n.emit(events.ResourceUpdated, map[string]string{"server": server, "uri": uri}, 0)
}

// selfServer returns the name of the node's own server cs is a session to.
func (n *Node) selfServer(cs *sdkmcp.ClientSession) (string, bool) {
	v, ok := n.self.Load(cs)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	return s, ok
}

// startWatch starts the resource watcher of the shared server name: it
// subscribes, through the node's own session to the server, to every
// resource the server lists (up to maxWatchedResources), so that their
// updates become events; again when the list changes or the session is
// replaced. It stops when the server is unshared or the node closes.
func (n *Node) startWatch(name string) {
	if n.ev == nil {
		return
	}
	kick := make(chan struct{}, 1)
	kick <- struct{}{}
	n.ev.mu.Lock()
	n.ev.watches[name] = kick
	n.ev.mu.Unlock()
	n.group.Go(func() { n.watch(name, kick) })
}

// WatchedResources returns how many resources of the shared server name
// the node is subscribed to, whose updates are events.
func (n *Node) WatchedResources(name string) int {
	if n.ev == nil {
		return 0
	}
	n.ev.mu.Lock()
	defer n.ev.mu.Unlock()
	return n.ev.watched[name]
}

func (n *Node) stopWatch(name string) {
	if n.ev == nil {
		return
	}
	n.ev.mu.Lock()
	kick, ok := n.ev.watches[name]
	delete(n.ev.watches, name)
	delete(n.ev.watched, name)
	n.ev.mu.Unlock()
	if ok {
		close(kick)
	}
}

func (n *Node) kickWatch(server string) {
	if n.ev == nil {
		return
	}
	n.ev.mu.Lock()
	defer n.ev.mu.Unlock()
	if kick, ok := n.ev.watches[server]; ok {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}

func (n *Node) watch(name string, kick <-chan struct{}) {
	backoff := retry.Backoff(time.Second, time.Minute)
	var watched map[string]bool
	var on *sdkmcp.ClientSession
	for {
		select {
		case _, ok := <-kick:
			if !ok {
				return
			}
		case <-n.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
		cs, err := n.Session(ctx, n.host.ID(), name)
		if err == nil {
			if cs != on {
				on, watched = cs, map[string]bool{}
			}
			err = n.subscribeAll(ctx, cs, watched)
			count := len(watched)
			if watched[unsupported] {
				count--
			}
			n.ev.mu.Lock()
			n.ev.watched[name] = count
			n.ev.mu.Unlock()
		}
		cancel()
		if err != nil && n.ctx.Err() == nil {
			wait := backoff.Delay()
			log.Debugw("watch resources of a shared server", "server", name, "error", err, "retry in", wait)
			n.group.Go(func() {
				if retry.Sleep(n.ctx, wait) {
					n.kickWatch(name)
				}
			})
			continue
		}
		backoff.Reset()
	}
}

// subscribeAll subscribes cs to the resources its server lists that it is
// not subscribed to yet. Capabilities are not asked (they are those of the
// session's start; a server may have gained resources since): a server
// that does not take subscriptions is marked, and left alone.
func (n *Node) subscribeAll(ctx context.Context, cs *sdkmcp.ClientSession, watched map[string]bool) error {
	if watched[unsupported] {
		return nil
	}
	notFound := func(err error) bool {
		var rpcErr *jsonrpc.Error
		return errors.As(err, &rpcErr) && rpcErr.Code == jsonrpc.CodeMethodNotFound
	}
	for r, err := range cs.Resources(ctx, nil) {
		if notFound(err) {
			return nil // no resources (yet): a list change will say
		}
		if err != nil {
			return err
		}
		if watched[r.URI] {
			continue
		}
		if len(watched) >= maxWatchedResources {
			log.Warnf("shared server lists over %d resources: updates of the rest are not events", maxWatchedResources)
			return nil
		}
		if err := cs.Subscribe(ctx, &sdkmcp.SubscribeParams{URI: r.URI}); err != nil {
			if notFound(err) {
				watched[unsupported] = true
				return nil
			}
			return fmt.Errorf("subscribe to %s: %w", r.URI, err)
		}
		watched[r.URI] = true
	}
	return nil
}

// cardEvents lists on the card the event types the policy lets some peer
// subscribe to (and does not hide).
func (n *Node) cardEvents(card *cardpb.Card) {
	if n.ev == nil {
		return
	}
	for _, t := range n.ev.src.Types() {
		if n.trust.Advertised("", policy.Event, t.Name) {
			card.Events = append(card.Events, &cardpb.EventType{Name: t.Name, Description: summary(t.Description), Replay: true})
		}
	}
}

// cardBuilt emits mesh.card.changed when what the card offers differs from
// the last card's (addresses and times aside).
func (n *Node) cardBuilt(card *cardpb.Card) {
	if n.ev == nil {
		return
	}
	what := &cardpb.Card{Name: card.Name, Description: card.Description, Version: card.Version, Tags: card.Tags, Servers: card.Servers, Events: card.Events}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(what)
	if err != nil {
		return
	}
	sum := sha256.Sum256(raw)
	n.ev.mu.Lock()
	last := n.ev.card
	n.ev.card = sum
	n.ev.mu.Unlock()
	if last == sum || last == [32]byte{} {
		return // the same, or the node's first card
	}
	d := struct {
		Peer    string   `json:"peer"`
		Servers []string `json:"servers"`
		Tools   int      `json:"tools"`
		Events  []string `json:"events"`
	}{Peer: n.host.ID().String(), Servers: []string{}, Events: []string{}}
	for _, s := range card.Servers {
		d.Servers = append(d.Servers, s.Name)
		d.Tools += len(s.Tools)
	}
	for _, e := range card.Events {
		d.Events = append(d.Events, e.Name)
	}
	slices.Sort(d.Servers)
	n.emit(events.CardChanged, d, 0)
}
