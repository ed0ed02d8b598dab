package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/console"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// fakeNode is a console.Node with canned answers.
type fakeNode struct {
	mu      sync.Mutex
	records []audit.Record
	tree    *console.Tree
	calls   chan context.Context // each Call's context, once started
}

func newFakeNode() *fakeNode {
	return &fakeNode{calls: make(chan context.Context, 64)}
}

func (f *fakeNode) Self() console.Self {
	return console.Self{ID: "12D3KooWSelf", Name: "self", Servers: []string{"node"}}
}
func (f *fakeNode) Peers() []console.Peer {
	return []console.Peer{{ID: "12D3KooWPeerB", State: console.Connected, Latency: 1500 * time.Microsecond}}
}
func (f *fakeNode) Card(ctx context.Context, peer string) (*discovery.Card, error) {
	return nil, errors.New("no cards here")
}
func (f *fakeNode) Search(ctx context.Context, q string, tags []string) ([]console.Hit, error) {
	return []console.Hit{{Ref: "12D3KooWPeerB/node/echo", Peer: "b"}}, nil
}
func (f *fakeNode) Tasks() []tasks.Task               { return nil }
func (f *fakeNode) Task(id string) (tasks.Task, bool) { return tasks.Task{ID: id}, id == "t1" }
func (f *fakeNode) TaskTree(ctx context.Context, id string) (*console.Tree, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tree == nil || f.tree.ID != id {
		return nil, fmt.Errorf("no task %s", id)
	}
	t := *f.tree
	return &t, nil
}
func (f *fakeNode) CancelTask(id string) error { return nil }
func (f *fakeNode) AuditSince(cursor uint64, max int) ([]audit.Record, uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := uint64(len(f.records))
	if cursor > n {
		cursor = 0
	}
	return append([]audit.Record(nil), f.records[cursor:]...), n, true
}
func (f *fakeNode) addRecord(r audit.Record) {
	f.mu.Lock()
	f.records = append(f.records, r)
	f.mu.Unlock()
}
func (f *fakeNode) Policy() console.Policy {
	return console.Policy{Summary: "1 grant, 0 groups", JSON: json.RawMessage(`{"grants":[]}`)}
}
func (f *fakeNode) Check(a console.Access) (console.Decision, error) {
	return console.Decision{Allowed: a.Name == "echo", Listed: a.Name == "echo"}, nil
}
func (f *fakeNode) Tools(ctx context.Context, peer string) ([]console.Tool, error) {
	return []console.Tool{{Server: "node", Tool: &sdkmcp.Tool{Name: "echo"}}}, nil
}
func (f *fakeNode) Call(ctx context.Context, peer, server, tool string, args json.RawMessage, started func(string)) (*sdkmcp.CallToolResult, error) {
	if tool == "quick" {
		return text("done"), nil
	}
	started("t1")
	f.calls <- ctx
	<-ctx.Done()
	return nil, ctx.Err()
}

// testConsole serves a console of f and returns it, its base URL and a
// client signed in to it.
func testConsole(t *testing.T, f console.Node) (*console.Server, string, *client) {
	t.Helper()
	s := console.New(f, console.Options{Interval: 20 * time.Millisecond, MaxCalls: 2})
	login, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	_, base, c := testConsoleClient(t, login)
	return s, base, c
}

// testConsoleClient signs a Go client in to the console at login (a URL
// with its token).
func testConsoleClient(t *testing.T, login string) (string, string, *client) {
	t.Helper()
	base := strings.Split(login, "/?")[0]
	c := &client{t: t, base: base, http: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	resp := c.get(login[len(base):], nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	for _, ck := range resp.Cookies() {
		c.cookie = ck
	}
	return login, base, c
}

type client struct {
	t      *testing.T
	base   string
	http   *http.Client
	cookie *http.Cookie
}

func (c *client) request(ctx context.Context, method, path string, body string, header map[string]string) *http.Response {
	c.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
	}
	if method == http.MethodPost {
		req.Header.Set("Origin", c.base)
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func (c *client) get(path string, header map[string]string) *http.Response {
	return c.request(context.Background(), http.MethodGet, path, "", header)
}

func (c *client) post(path, body string, header map[string]string) *http.Response {
	return c.request(context.Background(), http.MethodPost, path, body, header)
}

func status(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestLoginExchangesTheTokenForACookie(t *testing.T) {
	s, base, c := testConsole(t, newFakeNode())
	anon := &client{t: t, base: base, http: c.http}

	// The token's answer: a cookie a script cannot read, sent to this
	// site only, and the same page without the token.
	resp := anon.get("/?token="+s.Token()+"&keep=1", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/?keep=1" {
		t.Errorf("login: %s to %q, want 303 to /?keep=1", resp.Status, resp.Header.Get("Location"))
	}
	ck := resp.Cookies()
	port := base[strings.LastIndex(base, ":")+1:]
	if len(ck) != 1 || ck[0].Name != "mcpmesh-console-"+port || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Path != "/" {
		t.Fatalf("cookie %+v: want one HttpOnly SameSite=Strict cookie named for the port", ck)
	}
	if ck[0].Value == s.Token() {
		t.Error("the cookie holds the login token itself")
	}

	if code, body := status(t, c.get("/", nil)); code != http.StatusOK || !strings.Contains(body, `src="/app.js"`) {
		t.Errorf("signed in, GET /: %d", code)
	}
	if code, body := status(t, anon.get("/", nil)); code != http.StatusUnauthorized || !strings.Contains(body, "mcpmesh ui") {
		t.Errorf("not signed in, GET /: %d %s", code, body)
	}
	resp = anon.get("/?token=0123", nil)
	if code, body := status(t, resp); code != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(body, "not this console") {
		t.Errorf("wrong token: %d, cookies %v", code, resp.Cookies())
	}
	for _, path := range []string{"/api/events", "/api/tasks/t1"} {
		if code, _ := status(t, anon.get(path, nil)); code != http.StatusUnauthorized {
			t.Errorf("not signed in, GET %s: %d, want 401", path, code)
		}
	}
	if code, _ := status(t, anon.post("/api/tasks/t1/cancel", "{}", nil)); code != http.StatusUnauthorized {
		t.Errorf("not signed in, cancel: %d, want 401", code)
	}
	forged := &client{t: t, base: base, http: c.http, cookie: &http.Cookie{Name: ck[0].Name, Value: strings.Repeat("0", 64)}}
	if code, _ := status(t, forged.get("/api/tasks/t1", nil)); code != http.StatusUnauthorized {
		t.Errorf("forged cookie: %d, want 401", code)
	}
	if code, _ := status(t, c.get("/api/tasks/t1", nil)); code != http.StatusOK {
		t.Errorf("signed in, GET /api/tasks/t1: %d", code)
	}
	// The page's own files carry no secret and load without the cookie,
	// under a policy that lets it load nothing else.
	resp = anon.get("/app.js", nil)
	if code, _ := status(t, resp); code != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("GET /app.js: %d %s, CSP %q", code, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
	}
}

// What a page of another site (or another local port) can make a browser
// send is refused, even with the cookie.
func TestRequestsFromOtherOriginsRefused(t *testing.T) {
	_, base, c := testConsole(t, newFakeNode())
	u, _ := url.Parse(base)
	otherPort := "http://127.0.0.1:1"
	for _, tc := range []struct {
		name   string
		method string
		path   string
		header map[string]string
		want   int
	}{
		{"rebound Host", "GET", "/", map[string]string{"Host": "evil.example:" + u.Port()}, 403},
		{"rebound Host on the API", "GET", "/api/tasks/t1", map[string]string{"Host": "evil.example"}, 403},
		{"foreign Origin", "POST", "/api/tasks/t1/cancel", map[string]string{"Origin": "http://evil.example"}, 403},
		{"another local port", "POST", "/api/tasks/t1/cancel", map[string]string{"Origin": otherPort}, 403},
		{"no Origin", "POST", "/api/tasks/t1/cancel", map[string]string{"Origin": ""}, 403},
		{"a form's body", "POST", "/api/tasks/t1/cancel", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 403},
		{"cross-site fetch", "POST", "/api/tasks/t1/cancel", map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
		{"cross-site read", "GET", "/api/events", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"cross-origin read", "GET", "/api/tasks/t1", map[string]string{"Origin": otherPort}, 403},
		{"a GET cannot act", "GET", "/api/tasks/t1/cancel", nil, 404},
		{"same origin", "POST", "/api/tasks/t1/cancel", map[string]string{"Sec-Fetch-Site": "same-origin"}, 200},
		{"same origin read", "GET", "/api/tasks/t1", map[string]string{"Sec-Fetch-Site": "same-origin"}, 200},
	} {
		// A stream let through by mistake would never end: read only the
		// status, and a little of the body, for a while.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		body := ""
		if tc.method == "POST" {
			body = "{}"
		}
		resp := c.request(ctx, tc.method, tc.path, body, tc.header)
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		cancel()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, msg, tc.want)
		}
	}
}

// event is one server-sent event.
type event struct {
	name string
	data string
}

// events reads server-sent events from resp until it ends.
func events(resp *http.Response) <-chan event {
	ch := make(chan event, 256)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var e event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				e.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				e.data = line[len("data: "):]
			case line == "" && e.name != "":
				ch <- e
				e = event{}
			}
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan event, name string) event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("the stream ended before a %q event", name)
			}
			if e.name == name {
				return e
			}
		case <-deadline:
			t.Fatalf("no %q event", name)
		}
	}
}

// waitGone waits until no goroutine runs fn (a function name as in a stack
// trace), failing after a deadline.
func waitGone(t *testing.T, fn string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if !strings.Contains(string(buf[:n]), fn) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine still runs %s", fn)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The live feed sends each section, then only what changed; the audit
// trail record by record. It ends with its request.
func TestEventStreamFollowsAndEndsWithTheRequest(t *testing.T) {
	f := newFakeNode()
	f.addRecord(audit.Record{Caller: "12D3KooWPeerB", Server: "node", Method: "tools/call", Name: "secret", Outcome: audit.Refused, Reason: "policy"})
	_, _, c := testConsole(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := c.request(ctx, http.MethodGet, "/api/events", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /api/events: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	ch := events(resp)
	type auditItem struct {
		Seq     uint64       `json:"seq"`
		Kind    string       `json:"kind"`
		Record  audit.Record `json:"record"`
		Explain string       `json:"explain"`
		Grant   string       `json:"grant"`
	}
	type update struct {
		Self, Peers, Tasks, Policy json.RawMessage
		Audit                      *struct {
			Items []auditItem `json:"items"`
			Reset bool        `json:"reset"`
		}
	}
	read := func() update {
		var u update
		if err := json.Unmarshal([]byte(next(t, ch, "update").data), &u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	first := read()
	if first.Self == nil || first.Peers == nil || first.Policy == nil || first.Tasks == nil || first.Audit == nil {
		t.Fatalf("the first update lacks sections: %+v", first)
	}
	if !strings.Contains(string(first.Peers), `"latencyMs":1.5`) {
		t.Errorf("peers: %s", first.Peers)
	}
	if a := first.Audit; !a.Reset || len(a.Items) != 1 || a.Items[0].Kind != "refused" || a.Items[0].Seq != 1 ||
		!strings.Contains(a.Items[0].Explain, "No grant") || !strings.Contains(a.Items[0].Grant, `"tools":["secret"]`) {
		t.Errorf("first audit section: %+v", a)
	}
	f.addRecord(audit.Record{Caller: "12D3KooWPeerB", Server: "node", Method: "tools/call", Name: "echo", Outcome: audit.OK})
	second := read() // only what changed
	if second.Self != nil || second.Tasks != nil || second.Audit == nil {
		t.Fatalf("second update: %+v, want the new record only", second)
	}
	if a := second.Audit; a.Reset || len(a.Items) != 1 || a.Items[0].Record.Name != "echo" || a.Items[0].Seq != 2 || a.Items[0].Kind != "served" || a.Items[0].Explain != "" {
		t.Errorf("second audit section: %+v, want only the new record", a)
	}

	cancel()
	for range ch { // the client side ends
	}
	waitGone(t, "console.(*Server).serveEvents")
}

// A tree's stream ends by itself once every task in it has ended; Close
// ends the streams still open, and the calls started from the page.
func TestTreeStreamEndsWhenTheTreeHasEnded(t *testing.T) {
	f := newFakeNode()
	f.tree = &console.Tree{Task: tasks.Task{ID: "t1", State: tasks.Working}, Children: []*console.Tree{{Task: tasks.Task{ID: "t2", State: tasks.Working}}}}
	s, _, c := testConsole(t, f)
	resp := c.get("/api/tasks/t1/events", nil)
	ch := events(resp)
	next(t, ch, "tree")
	f.mu.Lock()
	f.tree = &console.Tree{Task: tasks.Task{ID: "t1", State: tasks.Cancelled}, Children: []*console.Tree{{Task: tasks.Task{ID: "t2", State: tasks.Working}}}}
	f.mu.Unlock()
	if e := next(t, ch, "tree"); !strings.Contains(e.data, `"state":"cancelled"`) {
		t.Errorf("tree event: %s", e.data)
	}
	f.mu.Lock()
	f.tree = &console.Tree{Task: tasks.Task{ID: "t1", State: tasks.Cancelled}, Children: []*console.Tree{{Task: tasks.Task{ID: "t2", State: tasks.Cancelled}}}}
	f.mu.Unlock()
	next(t, ch, "end")
	for range ch {
	}
	waitGone(t, "console.(*Server).serveTree")

	if e := next(t, events(c.get("/api/tasks/nope/events", nil)), "problem"); !strings.Contains(e.data, "no task nope") {
		t.Errorf("unknown task: %s", e.data)
	}

	// A call started from the page answers with its tree's ID at once and
	// runs on; Close ends it, and an open feed.
	code, body := status(t, c.post("/api/call", `{"peer":"12D3KooWPeerB","server":"node","tool":"slow","args":{"a":1}}`, nil))
	if code != http.StatusAccepted || !strings.Contains(body, `"task":"t1"`) {
		t.Fatalf("call: %d %s", code, body)
	}
	callCtx := <-f.calls
	feed := events(c.get("/api/events", nil))
	next(t, feed, "update")
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case <-callCtx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the call started from the page")
	}
	for range feed {
	}
	if err := <-done; err != nil {
		t.Errorf("close: %v", err)
	}
}

func TestCallsFromThePage(t *testing.T) {
	f := newFakeNode()
	_, _, c := testConsole(t, f) // MaxCalls 2
	if code, body := status(t, c.post("/api/call", `{"peer":"p","server":"node","tool":"quick"}`, nil)); code != http.StatusOK || !strings.Contains(body, `"done":true`) || !strings.Contains(body, "done") {
		t.Errorf("a call that ends at once: %d %s", code, body)
	}
	if code, body := status(t, c.post("/api/call", `{"peer":"p","server":"node","tool":"x","args":[1]}`, nil)); code != http.StatusBadRequest || !strings.Contains(body, "JSON object") {
		t.Errorf("arguments not an object: %d %s", code, body)
	}
	for range 2 {
		if code, body := status(t, c.post("/api/call", `{"peer":"p","server":"node","tool":"slow"}`, nil)); code != http.StatusAccepted {
			t.Fatalf("call: %d %s", code, body)
		}
		<-f.calls
	}
	if code, body := status(t, c.post("/api/call", `{"peer":"p","server":"node","tool":"slow"}`, nil)); code != http.StatusTooManyRequests {
		t.Errorf("a third call while two run: %d %s, want 429", code, body)
	}
	if code, body := status(t, c.post("/api/policy/check", `{"peer":"p","server":"node","name":"pay"}`, nil)); code != http.StatusOK || !strings.Contains(body, `"allowed":false`) || !strings.Contains(body, "Refused: no grant lets p use the tool node/pay") {
		t.Errorf("check: %d %s", code, body)
	}
	if code, body := status(t, c.post("/api/search", `{"query":"echo tag:x"}`, nil)); code != http.StatusOK || !strings.Contains(body, "node/echo") {
		t.Errorf("search: %d %s", code, body)
	}
}
