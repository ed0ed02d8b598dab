package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// A Mux carries many client sessions on one upstream session: a server
// shared in shared mode (one program for every caller), and the node's own
// index session. It initializes the upstream once, with an initialize of
// its own (MuxInit), and answers each session's initialize with the
// upstream's own answer. What must be unique on the upstream session is
// renumbered: request IDs both ways, progress tokens. What the upstream
// sends on its own goes where it belongs: progress to the session whose
// request carries the token; resource updates to the sessions subscribed
// (a subscription reaches the upstream once); list changes and log
// messages to every session; a request to the client (sampling,
// elicitation, roots) to the one session with requests in flight, refused
// when there are several (asking the wrong user is worse than failing).
type Mux struct {
	name string
	up   FrameConn
	init json.RawMessage // the upstream's answer to initialize

	mu        sync.Mutex
	sessions  map[*MuxSession]struct{}
	calls     map[int64]muxCall                   // upstream request ID → whose
	tokens    map[string]muxToken                 // upstream progress token → whose
	subs      map[string]map[*MuxSession]struct{} // resource URI → subscribers
	nextID    int64
	ended     error
	closeOnce sync.Once
	done      chan struct{} // closed when the upstream has ended
}

type muxCall struct {
	s      *MuxSession
	id     jsonrpc.ID
	token  string // the upstream progress token, if any
	method string
	uri    string // resources/subscribe, resources/unsubscribe
}

type muxToken struct {
	s     *MuxSession
	token json.RawMessage // the session's own token, as it wrote it
}

// MuxInit is what a Mux tells its upstream in initialize: the protocol
// version it asks for, its client's name and what its clients may be asked.
type MuxInit struct {
	ProtocolVersion string
	ClientInfo      *sdkmcp.Implementation
	Capabilities    *sdkmcp.ClientCapabilities
}

// ErrMuxEnded is what a session of a Mux whose upstream ended reads.
var ErrMuxEnded = errors.New("the shared server's session ended")

// StartMux initializes up with init and returns the Mux of it. Its reader
// runs in Run, which the caller owns.
func StartMux(ctx context.Context, name string, up FrameConn, init MuxInit) (*Mux, error) {
	params, err := json.Marshal(&sdkmcp.InitializeParams{ProtocolVersion: init.ProtocolVersion, ClientInfo: init.ClientInfo, Capabilities: init.Capabilities})
	if err != nil {
		return nil, err
	}
	frame, err := jsonrpc.EncodeMessage(&jsonrpc.Request{ID: intID(0), Method: "initialize", Params: params})
	if err != nil {
		return nil, err
	}
	type answer struct {
		resp *jsonrpc.Response
		err  error
	}
	got := make(chan answer, 1)
	go func() { // the handshake: read until the answer
		for {
			f, err := up.ReadFrame()
			if err != nil {
				got <- answer{err: err}
				return
			}
			msg, err := sdkcompat.DecodeMessage(f)
			if err != nil {
				got <- answer{err: fmt.Errorf("a frame from the server does not decode: %w", err)}
				return
			}
			switch m := msg.(type) {
			case *jsonrpc.Response:
				if m.ID == intID(0) {
					got <- answer{resp: m}
					return
				}
			case *jsonrpc.Request:
				if m.IsCall() { // nothing to ask before initialize: answer, so it does not wait
					reply := &jsonrpc.Response{ID: m.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "not initialized"}}
					if m.Method == "ping" {
						reply = &jsonrpc.Response{ID: m.ID, Result: json.RawMessage("{}")}
					}
					send(up, reply)
				}
			}
		}
	}()
	if err := up.WriteFrame(frame); err != nil {
		up.Close()
		<-got
		return nil, err
	}
	var a answer
	select {
	case a = <-got:
	case <-ctx.Done():
		up.Close() // ends the reader
		<-got
		return nil, ctx.Err()
	}
	switch {
	case a.err != nil:
		up.Close()
		return nil, a.err
	case a.resp.Error != nil:
		up.Close()
		return nil, fmt.Errorf("initialize: %w", a.resp.Error)
	}
	if err := send(up, &jsonrpc.Request{Method: "notifications/initialized"}); err != nil {
		up.Close()
		return nil, err
	}
	return &Mux{
		name: name, up: up, init: a.resp.Result,
		sessions: map[*MuxSession]struct{}{}, calls: map[int64]muxCall{}, tokens: map[string]muxToken{},
		subs: map[string]map[*MuxSession]struct{}{}, nextID: 1, done: make(chan struct{}),
	}, nil
}

// InitializeResult returns the upstream's answer to initialize, as it sent
// it.
func (m *Mux) InitializeResult() json.RawMessage { return m.init }

// Run reads the upstream and routes what it sends until it ends (or Close);
// then every session ends.
func (m *Mux) Run() error {
	var err error
	for {
		var f []byte
		f, err = m.up.ReadFrame()
		var tooLarge *transport.FrameTooLargeError
		if errors.As(err, &tooLarge) {
			reply := tooLarge.Reply()
			if reply == nil {
				continue
			}
			if tooLarge.Request {
				send(m.up, reply)
				continue
			}
			if f, err = jsonrpc.EncodeMessage(reply); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
		if err = m.route(f); err != nil {
			break
		}
	}
	m.end(err)
	return err
}

// Close ends the upstream session, and so Run and every session.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() { m.up.Close() })
	return nil
}

// end ends every session with err.
func (m *Mux) end(err error) {
	m.mu.Lock()
	if m.ended == nil {
		m.ended = fmt.Errorf("%w: %v", ErrMuxEnded, err)
		close(m.done)
	}
	sessions := m.sessions
	m.sessions = map[*MuxSession]struct{}{}
	m.mu.Unlock()
	for s := range sessions {
		s.fail(m.ended)
	}
}

// route passes one frame from the upstream to the session it belongs to.
func (m *Mux) route(f []byte) error {
	msg, err := sdkcompat.DecodeMessage(f)
	if err != nil {
		return fmt.Errorf("a frame from %s does not decode: %w", m.name, err)
	}
	switch msg := msg.(type) {
	case *jsonrpc.Response:
		id, ok := upstreamID(msg.ID)
		m.mu.Lock()
		c, found := m.calls[id]
		if ok && found {
			delete(m.calls, id)
			if c.token != "" {
				delete(m.tokens, c.token)
			}
			c.s.forget(c.id)
			if c.method == "resources/subscribe" && msg.Error != nil {
				m.unsubscribeLocked(c.s, c.uri)
			}
		}
		m.mu.Unlock()
		if !ok || !found {
			return nil // an answer to no request in flight (cancelled)
		}
		out := *msg
		out.ID = c.id
		c.s.deliverMsg(&out)
	case *jsonrpc.Request:
		if msg.IsCall() {
			m.ask(msg)
			return nil
		}
		m.notify(msg, f)
	}
	return nil
}

// notify routes a notification from the upstream.
func (m *Mux) notify(req *jsonrpc.Request, f []byte) {
	switch req.Method {
	case "notifications/progress":
		var p struct {
			Token json.RawMessage `json:"progressToken"`
		}
		segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields)
		var tok string
		segjson.Unmarshal(p.Token, &tok)
		m.mu.Lock()
		t, ok := m.tokens[tok]
		m.mu.Unlock()
		if !ok {
			return
		}
		params, err := SetField(req.Params, "progressToken", t.token)
		if err != nil {
			return
		}
		out := *req
		out.Params = params
		t.s.deliverMsg(&out)
	case "notifications/cancelled": // the upstream gives up a request of its own
		var p struct {
			RequestID any `json:"requestId"`
		}
		segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields)
		up, err := jsonrpc.MakeID(p.RequestID)
		if err != nil {
			return
		}
		m.mu.Lock()
		var target *MuxSession
		var down jsonrpc.ID
		for s := range m.sessions {
			if id, ok := s.asked(up); ok {
				target, down = s, id
				break
			}
		}
		m.mu.Unlock()
		if target == nil {
			return
		}
		params, err := SetField(req.Params, "requestId", idJSON(down))
		if err != nil {
			return
		}
		out := *req
		out.Params = params
		target.deliverMsg(&out)
	case "notifications/resources/updated":
		var p struct {
			URI string `json:"uri"`
		}
		segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields)
		m.mu.Lock()
		var to []*MuxSession
		for s := range m.subs[p.URI] {
			to = append(to, s)
		}
		m.mu.Unlock()
		for _, s := range to {
			s.deliver(f)
		}
	default: // list changes, log messages, and whatever else: everyone's
		m.mu.Lock()
		to := make([]*MuxSession, 0, len(m.sessions))
		for s := range m.sessions {
			to = append(to, s)
		}
		m.mu.Unlock()
		for _, s := range to {
			s.deliver(f)
		}
	}
}

// ask routes a request from the upstream to its client.
func (m *Mux) ask(req *jsonrpc.Request) {
	if req.Method == "ping" {
		send(m.up, &jsonrpc.Response{ID: req.ID, Result: json.RawMessage("{}")})
		return
	}
	m.mu.Lock()
	var busy []*MuxSession
	for s := range m.sessions {
		if s.busy() {
			busy = append(busy, s)
		}
	}
	m.mu.Unlock()
	switch len(busy) {
	case 0:
		// A program that asks on its own (server-everything asks roots/list
		// once initialized), on a shared session or on the node's own index
		// session of an isolated share: there is no one to ask, and sharing
		// it isolated would not change that.
		send(m.up, &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeInternalError,
			Message: fmt.Sprintf("server %s: %s asked outside any call, so there is no caller to ask it of", m.name, req.Method)}})
		return
	case 1:
	default:
		send(m.up, &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeInternalError,
			Message: fmt.Sprintf("shared server %s: %d callers have requests in flight, so which one %s asks is not known (share it isolated)", m.name, len(busy), req.Method)}})
		return
	}
	s := busy[0]
	down := s.expect(req.ID)
	out := *req
	out.ID = down
	s.deliverMsg(&out)
}

// Session opens a new client session on the mux. It fails once the
// upstream has ended.
func (m *Mux) Session() (*MuxSession, error) {
	s := &MuxSession{m: m, in: make(chan []byte, muxQueue), done: make(chan struct{}),
		inflight: map[jsonrpc.ID]int64{}, asks: map[int64]jsonrpc.ID{}}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended != nil {
		return nil, m.ended
	}
	m.sessions[s] = struct{}{}
	return s, nil
}

// muxQueue bounds what waits for a session's client: a client that reads
// slower than the upstream sends loses its session, not the others.
const muxQueue = 256

// MuxSession is one client session on a Mux. It is a FrameConn for a relay
// and an sdkmcp.Connection for an SDK client.
type MuxSession struct {
	m    *Mux
	in   chan []byte
	done chan struct{}

	mu       sync.Mutex
	err      error
	inflight map[jsonrpc.ID]int64 // the client's request ID → upstream ID
	asks     map[int64]jsonrpc.ID // the upstream's requests to this client: our ID → theirs
	nextAsk  int64
	once     sync.Once
}

// ReadFrame implements FrameConn: the next frame for the client.
func (s *MuxSession) ReadFrame() ([]byte, error) {
	select {
	case f := <-s.in:
		return f, nil
	case <-s.done:
		select {
		case f := <-s.in:
			return f, nil
		default:
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return nil, s.err
	}
}

// Read implements sdkmcp.Connection.
func (s *MuxSession) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	default:
	}
	f, err := s.ReadFrame()
	if err != nil {
		return nil, err
	}
	return sdkcompat.DecodeMessage(f)
}

// Write implements sdkmcp.Connection.
func (s *MuxSession) Write(_ context.Context, msg jsonrpc.Message) error {
	f, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return err
	}
	return s.WriteFrame(f)
}

// SessionID implements sdkmcp.Connection.
func (s *MuxSession) SessionID() string { return "" }

// WriteFrame implements FrameConn: a frame from the client, renumbered for
// the upstream.
func (s *MuxSession) WriteFrame(f []byte) error {
	select {
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.err
	default:
	}
	msg, err := sdkcompat.DecodeMessage(f)
	if err != nil {
		return fmt.Errorf("bad frame for %s: %w", s.m.name, err)
	}
	m := s.m
	switch msg := msg.(type) {
	case *jsonrpc.Response: // the client answers a request of the upstream's
		id, ok := upstreamID(msg.ID)
		s.mu.Lock()
		up, found := s.asks[id]
		delete(s.asks, id)
		s.mu.Unlock()
		if !ok || !found {
			return nil
		}
		out := *msg
		out.ID = up
		return send(m.up, &out)
	case *jsonrpc.Request:
		if !msg.IsCall() {
			return s.notification(msg, f)
		}
		return s.request(msg)
	}
	return nil
}

func (s *MuxSession) notification(req *jsonrpc.Request, f []byte) error {
	m := s.m
	switch req.Method {
	case "notifications/initialized":
		return nil // the mux initialized the upstream once
	case "notifications/cancelled":
		var p struct {
			RequestID any `json:"requestId"`
		}
		segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields)
		id, err := jsonrpc.MakeID(p.RequestID)
		if err != nil {
			return nil
		}
		s.mu.Lock()
		up, ok := s.inflight[id]
		s.mu.Unlock()
		if !ok {
			return nil
		}
		params, err := SetField(req.Params, "requestId", []byte(strconv.FormatInt(up, 10)))
		if err != nil {
			return nil
		}
		out := *req
		out.Params = params
		return send(m.up, &out)
	}
	return m.up.WriteFrame(f)
}

func (s *MuxSession) request(req *jsonrpc.Request) error {
	m := s.m
	if req.Method == "initialize" {
		s.deliverMsg(&jsonrpc.Response{ID: req.ID, Result: m.init})
		return nil
	}
	c := muxCall{s: s, id: req.ID, method: req.Method}
	var uri string
	if req.Method == "resources/subscribe" || req.Method == "resources/unsubscribe" {
		var p struct {
			URI string `json:"uri"`
		}
		segjson.Parse(req.Params, &p, segjson.DontMatchCaseInsensitiveStructFields)
		uri, c.uri = p.URI, p.URI
	}
	m.mu.Lock()
	switch req.Method {
	case "resources/subscribe":
		others := len(m.subs[uri]) > 0
		m.subscribeLocked(s, uri)
		if others { // the upstream sends its updates already
			m.mu.Unlock()
			s.deliverMsg(&jsonrpc.Response{ID: req.ID, Result: json.RawMessage("{}")})
			return nil
		}
	case "resources/unsubscribe":
		m.unsubscribeLocked(s, uri)
		if len(m.subs[uri]) > 0 { // others still want the updates
			m.mu.Unlock()
			s.deliverMsg(&jsonrpc.Response{ID: req.ID, Result: json.RawMessage("{}")})
			return nil
		}
	}
	up := m.nextID
	m.nextID++
	params := req.Params
	if tok, ok := requestProgressToken(params); ok {
		c.token = "mcpmesh-mux-" + strconv.FormatInt(up, 10)
		var err error
		if params, err = SetMetaField(params, "progressToken", []byte(strconv.Quote(c.token))); err != nil {
			m.mu.Unlock()
			s.deliverMsg(&jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}})
			return nil
		}
		m.tokens[c.token] = muxToken{s: s, token: tok}
	}
	m.calls[up] = c
	m.mu.Unlock()
	s.mu.Lock()
	s.inflight[req.ID] = up
	s.mu.Unlock()
	out := *req
	out.ID = intID(up)
	out.Params = params
	return send(m.up, &out)
}

func (m *Mux) subscribeLocked(s *MuxSession, uri string) {
	if m.subs[uri] == nil {
		m.subs[uri] = map[*MuxSession]struct{}{}
	}
	m.subs[uri][s] = struct{}{}
}

func (m *Mux) unsubscribeLocked(s *MuxSession, uri string) {
	delete(m.subs[uri], s)
	if len(m.subs[uri]) == 0 {
		delete(m.subs, uri)
	}
}

// requestProgressToken returns a request's params._meta.progressToken, raw.
func requestProgressToken(params json.RawMessage) (json.RawMessage, bool) {
	if !bytes.Contains(params, []byte(`"progressToken"`)) && !HasKeyEscape(params) {
		return nil, false
	}
	var p struct {
		Meta *struct {
			Token json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	}
	if _, err := segjson.Parse(params, &p, segjson.DontMatchCaseInsensitiveStructFields); err != nil || p.Meta == nil {
		return nil, false
	}
	if len(p.Meta.Token) == 0 || string(p.Meta.Token) == "null" {
		return nil, false
	}
	return p.Meta.Token, true
}

// busy reports whether the session has requests in flight.
func (s *MuxSession) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight) > 0
}

// forget drops a request of the client's that was answered.
func (s *MuxSession) forget(id jsonrpc.ID) {
	s.mu.Lock()
	delete(s.inflight, id)
	s.mu.Unlock()
}

// expect numbers a request of the upstream's for this session's client.
func (s *MuxSession) expect(up jsonrpc.ID) jsonrpc.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextAsk++
	s.asks[s.nextAsk] = up
	return intID(s.nextAsk)
}

// asked returns the session's number of the upstream's request up.
func (s *MuxSession) asked(up jsonrpc.ID) (jsonrpc.ID, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, u := range s.asks {
		if u == up {
			return intID(id), true
		}
	}
	return jsonrpc.ID{}, false
}

func (s *MuxSession) deliverMsg(msg jsonrpc.Message) {
	if f, err := jsonrpc.EncodeMessage(msg); err == nil {
		s.deliver(f)
	}
}

// deliver queues a frame for the client; one that falls too far behind
// loses its session.
func (s *MuxSession) deliver(f []byte) {
	select {
	case <-s.done:
	case s.in <- bytes.Clone(f):
	default:
		s.fail(fmt.Errorf("the client of shared server %s fell %d messages behind", s.m.name, muxQueue))
	}
}

// fail ends the session with err.
func (s *MuxSession) fail(err error) {
	s.once.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.done)
	})
}

// Close ends the session: its requests in flight are cancelled upstream,
// its subscriptions dropped.
func (s *MuxSession) Close() error {
	s.fail(io.EOF)
	m := s.m
	m.mu.Lock()
	_, open := m.sessions[s]
	delete(m.sessions, s)
	var cancel []int64
	for id, c := range m.calls {
		if c.s == s {
			cancel = append(cancel, id)
			delete(m.calls, id)
			if c.token != "" {
				delete(m.tokens, c.token)
			}
		}
	}
	var drop []string
	for uri, subs := range m.subs {
		if _, ok := subs[s]; ok {
			m.unsubscribeLocked(s, uri)
			if len(m.subs[uri]) == 0 {
				drop = append(drop, uri)
			}
		}
	}
	m.mu.Unlock()
	if !open {
		return nil
	}
	for _, id := range cancel {
		params, _ := json.Marshal(map[string]any{"requestId": id, "reason": "the caller's session ended"})
		send(m.up, &jsonrpc.Request{Method: "notifications/cancelled", Params: params})
	}
	for _, uri := range drop {
		m.mu.Lock()
		id := m.nextID
		m.nextID++
		m.mu.Unlock()
		params, _ := json.Marshal(map[string]string{"uri": uri})
		send(m.up, &jsonrpc.Request{ID: intID(id), Method: "resources/unsubscribe", Params: params})
	}
	return nil
}

// upstreamID reads an ID the mux gave (an integer).
func upstreamID(id jsonrpc.ID) (int64, bool) {
	v, ok := id.Raw().(int64)
	return v, ok
}

// idJSON is id as JSON.
func idJSON(id jsonrpc.ID) json.RawMessage {
	b, _ := json.Marshal(id.Raw())
	return b
}

// intID is the JSON-RPC ID n.
func intID(n int64) jsonrpc.ID {
	id, _ := jsonrpc.MakeID(float64(n))
	return id
}
