package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(t testing.TB, a, b host.Host) {
	t.Helper()
	if err := a.Connect(context.Background(), lpeer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

// source is a node's feed for tests: a host, a log, a source that declares
// "job.done", a server whose policy is a set of allowed peers.
type source struct {
	h      host.Host
	log    *events.Log
	src    *events.Source
	srv    *Server
	audit  *audit.Log
	mu     sync.Mutex
	allow  map[lpeer.ID]bool
	strike atomic.Int32
}

func newSource(t testing.TB, h host.Host, lc events.LogConfig, cfg Config) *source {
	t.Helper()
	l, err := events.OpenLog(lc)
	if err != nil {
		t.Fatal(err)
	}
	s := &source{h: h, log: l, src: events.NewSource(l, 0), allow: map[lpeer.ID]bool{}}
	if err := s.src.Declare(events.Type{Name: "job.done", Description: "A job ended."}); err != nil {
		t.Fatal(err)
	}
	s.audit, _ = audit.Open("", audit.Options{})
	cfg.Source = s.src
	cfg.Audit = s.audit
	cfg.May = func(p lpeer.ID, _ string) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.allow[p]
	}
	cfg.Strike = func(lpeer.ID, string) { s.strike.Add(1) }
	s.srv = NewServer(h, cfg)
	t.Cleanup(func() {
		s.srv.Close()
		s.log.Close()
		s.audit.Close()
	})
	return s
}

func (s *source) grant(p lpeer.ID, ok bool) {
	s.mu.Lock()
	s.allow[p] = ok
	s.mu.Unlock()
}

func (s *source) emit(t testing.TB, n int, from int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := s.src.Emit(events.Occurrence{Name: "job.done", Data: map[string]any{"i": i, "state": []string{"ok", "failed"}[i%2]}}); err != nil {
			t.Fatal(err)
		}
	}
}

// sink collects what a subscription delivers.
type sink struct {
	mu     sync.Mutex
	got    []events.Event
	cursor string
	trunc  int
	ch     chan events.Event
}

func newSink() *sink { return &sink{ch: make(chan events.Event, 10000)} }

func (k *sink) options(name string) Options {
	return Options{
		Name: name,
		Deliver: func(_ context.Context, e events.Event) {
			k.mu.Lock()
			k.got = append(k.got, e)
			k.mu.Unlock()
			k.ch <- e
		},
		OnCursor: func(c string) { k.mu.Lock(); k.cursor = c; k.mu.Unlock() },
		OnActive: func(_ string, tr bool) {
			if tr {
				k.mu.Lock()
				k.trunc++
				k.mu.Unlock()
			}
		},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	}
}

func (k *sink) wait(t testing.TB, n int) []events.Event {
	t.Helper()
	var out []events.Event
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case e := <-k.ch:
			out = append(out, e)
		case <-deadline:
			t.Fatalf("got %d events of %d", len(out), n)
		}
	}
	return out
}

func (k *sink) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case e := <-k.ch:
		t.Fatalf("an unexpected event: %s %s", e.ID, e.Data)
	case <-time.After(d):
	}
}

func field(e events.Event) int {
	var d struct{ I int }
	json.Unmarshal(e.Data, &d)
	return d.I
}

func waitActive(t testing.TB, sub *Subscription) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !sub.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatalf("the subscription did not become active: %+v", sub.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A subscriber gets the events after it subscribed, filtered at the
// source; one that closes and comes back with its cursor gets exactly
// those it missed: none lost, none twice.
func TestSubscribeFilterAndResume(t *testing.T) {
	a, b := newHost(t), newHost(t)
	connect(t, a, b)
	src := newSource(t, a, events.LogConfig{}, Config{})
	src.grant(b.ID(), true)
	src.emit(t, 3, 0) // before the subscription: not delivered

	k := newSink()
	opts := k.options("job.done")
	opts.Where = json.RawMessage(`{"state":"failed"}`)
	sub := Subscribe(b, a.ID(), opts)
	waitActive(t, sub)
	src.emit(t, 6, 10)
	got := k.wait(t, 3)
	if field(got[0]) != 11 || field(got[1]) != 13 || field(got[2]) != 15 || got[0].Source != a.ID().String() {
		t.Fatalf("delivered %v; want 11, 13, 15 from %s", got, a.ID())
	}
	k.none(t, 50*time.Millisecond)
	sub.Close()
	cursor := k.cursor

	src.emit(t, 4, 20) // while the subscriber is away: 21 and 23 match
	k2 := newSink()
	opts2 := k2.options("job.done")
	opts2.Where, opts2.Cursor = opts.Where, cursor
	sub2 := Subscribe(b, a.ID(), opts2)
	defer sub2.Close()
	got = k2.wait(t, 2)
	if field(got[0]) != 21 || field(got[1]) != 23 {
		t.Fatalf("after resuming: %d, %d; want 21, 23", field(got[0]), field(got[1]))
	}
	src.emit(t, 2, 30)
	if got := k2.wait(t, 1); field(got[0]) != 31 {
		t.Fatalf("after resuming, live: %d", field(got[0]))
	}
	k2.none(t, 50*time.Millisecond)
	if k2.trunc != 0 {
		t.Error("a resume within the log was reported truncated")
	}
}

// A peer without a grant cannot subscribe, poll or see the type listed;
// the refusal is a JSON-RPC error -32012, audited, and a strike.
func TestSubscribeWithoutGrantRefused(t *testing.T) {
	a, b := newHost(t), newHost(t)
	connect(t, a, b)
	src := newSource(t, a, events.LogConfig{}, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	types, err := List(ctx, b, a.ID())
	if err != nil || len(types) != 0 {
		t.Fatalf("List without a grant: %v, %v; want nothing", types, err)
	}
	_, err = Poll(ctx, b, a.ID(), events.SubscribeParams{Name: "job.done"})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != events.CodeForbidden || !strings.Contains(rpcErr.Message, "not permitted") {
		t.Fatalf("Poll without a grant: %v; want -32012 not permitted", err)
	}
	k := newSink()
	sub := Subscribe(b, a.ID(), k.options("job.done"))
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sub.Status().LastError, "not permitted") {
		if time.Now().After(deadline) {
			t.Fatalf("subscription status: %+v", sub.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	src.emit(t, 2, 0)
	k.none(t, 100*time.Millisecond)
	sub.Close()
	recs := src.audit.Recent(audit.Filter{Outcome: audit.Refused})
	if len(recs) < 2 || recs[0].Reason != "policy" || recs[0].Name != "job.done" || recs[0].Server != AuditServer {
		t.Errorf("audit: %+v", recs)
	}
	if src.strike.Load() < 2 {
		t.Errorf("%d strikes; want one per refusal", src.strike.Load())
	}

	src.grant(b.ID(), true)
	types, err = List(ctx, b, a.ID())
	if err != nil || len(types) != 1 || types[0].Name != "job.done" || !types[0].Meta.Replay {
		t.Fatalf("List with a grant: %+v, %v", types, err)
	}
	if _, err := Poll(ctx, b, a.ID(), events.SubscribeParams{Name: "job.other"}); !errors.As(err, &rpcErr) || rpcErr.Code != events.CodeNotFound {
		t.Errorf("Poll of an unknown type: %v; want -32011", err)
	}
}

// Polling: from now returns nothing and the cursor of now; from a cursor,
// the events after it, a page at a time.
func TestPoll(t *testing.T) {
	a, b := newHost(t), newHost(t)
	connect(t, a, b)
	src := newSource(t, a, events.LogConfig{}, Config{})
	src.grant(b.ID(), true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := Poll(ctx, b, a.ID(), events.SubscribeParams{Name: "job.done"})
	if err != nil || len(res.Events) != 0 || res.Cursor == "" {
		t.Fatalf("poll from now: %+v, %v", res, err)
	}
	src.emit(t, 5, 0)
	cur := res.Cursor
	res, err = Poll(ctx, b, a.ID(), events.SubscribeParams{Name: "job.done", Cursor: &cur, MaxEvents: 3})
	if err != nil || len(res.Events) != 3 || !res.HasMore || res.Truncated {
		t.Fatalf("first page: %+v, %v", res, err)
	}
	res, err = Poll(ctx, b, a.ID(), events.SubscribeParams{Name: "job.done", Cursor: &res.Cursor, MaxEvents: 3})
	if err != nil || len(res.Events) != 2 || res.HasMore || field(res.Events[0]) != 3 {
		t.Fatalf("second page: %+v, %v", res, err)
	}
	bad := "0123456789abcdef.x"
	if _, err := Poll(ctx, b, a.ID(), events.SubscribeParams{Name: "job.done", Cursor: &bad}); err == nil {
		t.Error("a mangled cursor was accepted")
	}
}

// The source restarts: with its log in a file, the subscriber resumes
// where it was (events emitted while it was away included); with its log
// in memory, the subscriber is told events may be missing (truncated) and
// gets everything the new log holds.
func TestSourceRestart(t *testing.T) {
	for _, persistent := range []bool{true, false} {
		t.Run(fmt.Sprintf("file=%v", persistent), func(t *testing.T) {
			b := newHost(t)
			lc := events.LogConfig{}
			if persistent {
				lc.Dir = t.TempDir()
			}
			a1 := newHost(t)
			connect(t, b, a1)
			src := newSource(t, a1, lc, Config{})
			src.grant(b.ID(), true)
			k := newSink()
			opts := k.options("job.done")
			opts.Liveness = time.Second
			sub := Subscribe(b, a1.ID(), opts)
			defer sub.Close()
			waitActive(t, sub)
			src.emit(t, 2, 0)
			k.wait(t, 2)
			// The source's feed stops (the subscriber is cut off and keeps
			// trying), event 2 is logged but not delivered, and the source
			// dies and comes back under the same identity and address.
			src.srv.Close()
			src.log.Append(events.Event{Name: "job.done", Data: json.RawMessage(`{"i":2}`)})
			key := a1.Peerstore().PrivKey(a1.ID())
			addrs := a1.Addrs()
			a1.Close()
			src.log.Close()
			a2, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrs(addrs...), libp2p.DisableMetrics())
			if err != nil {
				t.Fatal(err)
			}
			defer a2.Close()
			src2 := newSource(t, a2, lc, Config{})
			src2.grant(b.ID(), true)
			src2.emit(t, 1, 3)
			b.Peerstore().AddAddrs(a2.ID(), a2.Addrs(), time.Hour)
			got := k.wait(t, map[bool]int{true: 2, false: 1}[persistent])
			if persistent {
				if field(got[0]) != 2 || field(got[1]) != 3 || k.trunc != 0 {
					t.Fatalf("after a restart with a file: %d %d (truncated %d); want 2, 3", field(got[0]), field(got[1]), k.trunc)
				}
			} else if field(got[0]) != 3 || k.trunc == 0 {
				t.Fatalf("after a restart in memory: %d, truncated %d; want 3 and truncated", field(got[0]), k.trunc)
			}
			k.none(t, 100*time.Millisecond)
		})
	}
}

// Bounds: subscriptions per peer; a subscriber that does not read is
// dropped after the write timeout and the next one learns of the gap.
func TestSubscriptionBounds(t *testing.T) {
	a, b := newHost(t), newHost(t)
	connect(t, a, b)
	src := newSource(t, a, events.LogConfig{MaxEvents: 50}, Config{MaxPerPeer: 2, WriteTimeout: 300 * time.Millisecond})
	src.grant(b.ID(), true)
	var subs []*Subscription
	for range 2 {
		k := newSink()
		sub := Subscribe(b, a.ID(), k.options("job.done"))
		subs = append(subs, sub)
		waitActive(t, sub)
	}
	k := newSink()
	third := Subscribe(b, a.ID(), k.options("job.done"))
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(third.Status().LastError, "too many subscriptions") {
		if time.Now().After(deadline) {
			t.Fatalf("third subscription: %+v", third.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	third.Close()
	for _, s := range subs {
		s.Close()
	}

	// A stalled subscriber: it blocks in Deliver; the source's writes back
	// up and time out; it gets everything still in the log on its return,
	// after a gap report.
	release := make(chan struct{})
	var mu sync.Mutex
	var got []int
	trunc := 0
	stalled := Subscribe(b, a.ID(), Options{Name: "job.done",
		Deliver: func(ctx context.Context, e events.Event) {
			mu.Lock()
			got = append(got, field(e))
			n := len(got)
			mu.Unlock()
			if n == 1 {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
		},
		OnActive:   func(_ string, tr bool) { mu.Lock(); trunc += map[bool]int{true: 1}[tr]; mu.Unlock() },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	defer stalled.Close()
	waitActive(t, stalled)
	big := strings.Repeat("x", 16<<10)
	for i := range 200 { // ~3 MiB: more than the stream's window, and the log keeps 50
		src.src.Emit(events.Occurrence{Name: "job.done", Data: map[string]any{"i": i, "pad": big}})
	}
	deadline = time.Now().Add(10 * time.Second)
	for src.srv.Subscriptions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the source kept a stalled subscriber past its write timeout")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	deadline = time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n, last, tr := len(got), 0, trunc
		if n > 0 {
			last = got[n-1]
		}
		mu.Unlock()
		if last == 199 {
			if tr == 0 {
				t.Error("the stalled subscriber lost events without being told")
			}
			if n > 60 {
				t.Errorf("the stalled subscriber got %d events; the log keeps 50", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled subscriber got %d events, last %d", n, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A grant withdrawn ends a subscription with notifications/events/
// terminated; the subscriber then keeps being refused.
func TestRevokedGrantTerminates(t *testing.T) {
	a, b := newHost(t), newHost(t)
	connect(t, a, b)
	src := newSource(t, a, events.LogConfig{}, Config{})
	src.grant(b.ID(), true)
	k := newSink()
	sub := Subscribe(b, a.ID(), k.options("job.done"))
	defer sub.Close()
	waitActive(t, sub)
	src.grant(b.ID(), false)
	src.emit(t, 1, 0)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sub.Status().LastError, "not permitted") {
		if time.Now().After(deadline) {
			t.Fatalf("status after the grant went: %+v", sub.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	k.none(t, 50*time.Millisecond)
}

// A source that breaks the protocol (an event of another name, bad data,
// an absurd cursor) gets its stream dropped; nothing reaches Deliver.
func TestHostileSource(t *testing.T) {
	for name, frame := range map[string]string{
		"other name":  `{"jsonrpc":"2.0","method":"notifications/events/event","params":{"eventId":"1","name":"evil","timestamp":"2026-01-01T00:00:00Z","data":{},"cursor":"c.1"}}`,
		"array data":  `{"jsonrpc":"2.0","method":"notifications/events/event","params":{"eventId":"1","name":"job.done","timestamp":"2026-01-01T00:00:00Z","data":[1],"cursor":"c.1"}}`,
		"no id":       `{"jsonrpc":"2.0","method":"notifications/events/event","params":{"eventId":"","name":"job.done","timestamp":"2026-01-01T00:00:00Z","data":{},"cursor":"c.1"}}`,
		"long cursor": `{"jsonrpc":"2.0","method":"notifications/events/event","params":{"eventId":"1","name":"job.done","timestamp":"2026-01-01T00:00:00Z","data":{},"cursor":"` + strings.Repeat("c", 200) + `"}}`,
		"deep":        `{"jsonrpc":"2.0","method":"notifications/events/event","params":{"eventId":"1","name":"job.done","timestamp":"2026-01-01T00:00:00Z","data":{},"cursor":"c.1","_meta":{"io.mcpmesh/depth":1000}}}`,
		"a request":   `{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{}}`,
	} {
		t.Run(name, func(t *testing.T) {
			a, b := newHost(t), newHost(t)
			connect(t, a, b)
			served := make(chan struct{}, 10)
			a.SetStreamHandler(Protocol, func(st network.Stream) {
				defer st.Close()
				c := transport.NewConn(st, 1<<20)
				c.ReadFrame()
				c.WriteFrame([]byte(`{"jsonrpc":"2.0","method":"notifications/events/active","params":{"cursor":"c.0","truncated":false}}`))
				c.WriteFrame([]byte(frame))
				served <- struct{}{}
				c.ReadFrame() // until the subscriber drops the stream
			})
			k := newSink()
			sub := Subscribe(b, a.ID(), k.options("job.done"))
			<-served
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(sub.Status().LastError, "broke the events protocol") {
				if time.Now().After(deadline) {
					t.Fatalf("status: %+v", sub.Status())
				}
				time.Sleep(5 * time.Millisecond)
			}
			sub.Close()
			k.none(t, 10*time.Millisecond)
		})
	}
}

// A hostile subscriber: garbage, a huge frame, unknown arguments, a
// forged cursor, frames after the request: each refused or dropped, with
// a strike, and nothing held.
func TestHostileSubscriber(t *testing.T) {
	a, b := newHost(t), newHost(t)
	connect(t, a, b)
	src := newSource(t, a, events.LogConfig{}, Config{MaxRequest: 4096})
	src.grant(b.ID(), true)
	send := func(frames ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := b.NewStream(ctx, a.ID(), Protocol)
		if err != nil {
			return "", err
		}
		defer st.Reset()
		c := transport.NewConn(st, 1<<20)
		for _, f := range frames {
			if err := c.WriteFrame([]byte(f)); err != nil {
				return "", err
			}
		}
		st.SetReadDeadline(time.Now().Add(3 * time.Second))
		var out []string
		for {
			line, err := c.ReadFrame()
			if err != nil {
				return strings.Join(out, "\n"), err
			}
			out = append(out, string(line))
		}
	}
	req := func(params string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"events/stream","params":` + params + `}`
	}
	cases := map[string]struct {
		frames []string
		want   string
	}{
		"garbage":        {[]string{"not json"}, ""},
		"huge":           {[]string{`{"jsonrpc":"2.0","id":1,"method":"events/list","params":{"pad":"` + strings.Repeat("x", 5000) + `"}}`}, `"code":-32032`},
		"unknown args":   {[]string{req(`{"name":"job.done","arguments":{"exec":"rm"}}`)}, `"code":-32602`},
		"bad filter":     {[]string{req(`{"name":"job.done","arguments":{"where":{"a":{"b":1}}}}`)}, `"code":-32602`},
		"forged cursor":  {[]string{req(`{"name":"job.done","cursor":"` + src.log.Epoch() + `.999"}`)}, `"code":-32602`},
		"webhook":        {[]string{`{"jsonrpc":"2.0","id":1,"method":"events/subscribe","params":{}}`}, `"code":-32014`},
		"unknown method": {[]string{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`}, `"code":-32601`},
		"a notification": {[]string{`{"jsonrpc":"2.0","method":"events/list"}`}, ""},
		"chatty after":   {append([]string{req(`{"name":"job.done"}`)}, strings.Split(strings.Repeat(`{"jsonrpc":"2.0","method":"x"}`+"\n", 20), "\n")[:20]...), "any"},
	}
	for name, c := range cases {
		before := src.strike.Load()
		out, _ := send(c.frames...)
		if c.want == "any" {
			// The active notification may or may not be read before the reset.
		} else if c.want != "" && !strings.Contains(out, c.want) {
			t.Errorf("%s: answered %q; want %s", name, out, c.want)
		}
		if c.want == "" && out != "" {
			t.Errorf("%s: answered %q; want nothing", name, out)
		}
		if name != "webhook" && name != "unknown method" && src.strike.Load() == before {
			t.Errorf("%s: no strike", name)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for src.srv.Subscriptions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a hostile subscriber's subscription is still held")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
