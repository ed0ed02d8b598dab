package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoDaemon is returned by Dial when no daemon runs for the home folder.
var ErrNoDaemon = errors.New("no mcpmesh daemon is running")

// Client talks to a running daemon's control API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

func readEndpoint(home string) (Endpoint, error) {
	var ep Endpoint
	data, err := os.ReadFile(filepath.Join(home, APIFile))
	if err != nil {
		return ep, err
	}
	if err := json.Unmarshal(data, &ep); err != nil {
		return ep, fmt.Errorf("read %s: %w", filepath.Join(home, APIFile), err)
	}
	return ep, nil
}

// Dial finds the daemon whose home is home and checks that it answers.
func Dial(ctx context.Context, home string) (*Client, error) {
	ep, err := readEndpoint(home)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w for home %s: start one with `mcpmesh node --home %s`", ErrNoDaemon, home, home)
	}
	if err != nil {
		return nil, err
	}
	c := &Client{base: "http://" + ep.Addr, token: ep.Token, http: &http.Client{}}
	var id Identity
	if err := c.do(ctx, http.MethodGet, "/v1/id", nil, &id); err != nil {
		return nil, fmt.Errorf("%w for home %s (the api file names %s, which does not answer: %v)", ErrNoDaemon, home, ep.Addr, err)
	}
	return c, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// request sends body as JSON with the token and returns a 2xx answer; any
// other becomes the daemon's error message.
func (c *Client) request(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			// Say why we stopped waiting (a --timeout, Ctrl-C), not which URL.
			return nil, fmt.Errorf("gave up waiting for the daemon: %w", context.Cause(ctx))
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("daemon at %s did not answer: %w", strings.TrimPrefix(c.base, "http://"), err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("daemon answered %s", resp.Status)
	}
	return resp, nil
}

// ID returns the daemon's identity.
func (c *Client) ID(ctx context.Context) (Identity, error) {
	var id Identity
	return id, c.do(ctx, http.MethodGet, "/v1/id", nil, &id)
}

// Peers lists the peers the daemon is connected to.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var peers []Peer
	return peers, c.do(ctx, http.MethodGet, "/v1/peers", nil, &peers)
}

// Connect connects the daemon to peer.
func (c *Client) Connect(ctx context.Context, peer string) (ConnectResponse, error) {
	var out ConnectResponse
	return out, c.do(ctx, http.MethodPost, "/v1/connect", ConnectRequest{Peer: peer}, &out)
}

// Tools lists peer's tools.
func (c *Client) Tools(ctx context.Context, peer string) ([]Tool, error) {
	var out []Tool
	return out, c.do(ctx, http.MethodPost, "/v1/tools", ToolsRequest{Peer: peer}, &out)
}

// Call calls tool on peer with args (a JSON object, or nil).
func (c *Client) Call(ctx context.Context, peer, tool string, args json.RawMessage) (CallResponse, error) {
	var out CallResponse
	return out, c.do(ctx, http.MethodPost, "/v1/call", CallRequest{Peer: peer, Tool: tool, Args: args}, &out)
}

// CallProgress calls tool on peer as Call does, and hands progress each
// progress notification of the call as it comes, on the calling goroutine.
func (c *Client) CallProgress(ctx context.Context, peer, tool string, args json.RawMessage, progress func(Progress)) (CallResponse, error) {
	return c.CallWith(ctx, peer, tool, args, CallHooks{Progress: progress})
}

// CallHooks are what the caller of CallWith hears of the call as it runs,
// each on the calling goroutine.
type CallHooks struct {
	// Progress, if set, gets each progress notification of the call.
	Progress func(Progress)
	// Question, if set, gets each question the call's tools ask its user
	// and answers it: the answer goes back to the tool (Answer.Question is
	// filled in). An error ends the call. A sampling request comes declined
	// already (Question.Declined), to be shown; its answer is not used.
	// Without Question the daemon refuses the questions.
	Question func(context.Context, Question) (Answer, error)
}

// callStopped says why the caller stopped waiting for a call the daemon
// had taken on: ctx's cause if it has one of its own (a timeout that
// names itself), else ctx's error.
func callStopped(ctx context.Context) error {
	cause := context.Cause(ctx)
	if cause != ctx.Err() {
		return cause
	}
	return fmt.Errorf("the call was cancelled before it ended: %w", cause)
}

// CallWith calls tool on peer as Call does, with hooks.
func (c *Client) CallWith(ctx context.Context, peer, tool string, args json.RawMessage, hooks CallHooks) (CallResponse, error) {
	resp, err := c.request(ctx, http.MethodPost, "/v1/call", CallRequest{Peer: peer, Tool: tool, Args: args, Progress: true, Questions: hooks.Question != nil})
	if err != nil {
		return CallResponse{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-ndjson") {
		// A daemon that streams no progress answers as Call.
		var out CallResponse
		return out, dec.Decode(&out)
	}
	for {
		var ev CallEvent
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				// The daemon answered: the call is what had not ended
				// (a slow tool). The request's end cancels it, on the
				// peer too.
				return CallResponse{}, callStopped(ctx)
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return CallResponse{}, fmt.Errorf("read the call's answer from the daemon: %w", err)
		}
		switch {
		case ev.Error != "":
			return CallResponse{}, errors.New(ev.Error)
		case ev.Result != nil:
			return *ev.Result, nil
		case ev.Progress != nil && hooks.Progress != nil:
			hooks.Progress(*ev.Progress)
		case ev.Question != nil && hooks.Question != nil:
			a, err := hooks.Question(ctx, *ev.Question)
			if err != nil {
				return CallResponse{}, err
			}
			if ev.Question.Declined != "" || ev.Question.ID == "" {
				continue
			}
			a.Question = ev.Question.ID
			if err := c.Answer(ctx, a); err != nil {
				return CallResponse{}, fmt.Errorf("answer the question: %w", err)
			}
		}
	}
}

// Answer answers an open question of a call (see CallHooks.Question).
func (c *Client) Answer(ctx context.Context, a Answer) error {
	var out struct{}
	return c.do(ctx, http.MethodPost, "/v1/call/answer", a, &out)
}

// Card returns peer's verified card.
func (c *Client) Card(ctx context.Context, peer string) (CardResponse, error) {
	var out CardResponse
	return out, c.do(ctx, http.MethodPost, "/v1/card", CardRequest{Peer: peer}, &out)
}

// Find looks up the providers of query and calls found for each as the
// daemon verifies them, until the lookup ends (within timeout).
func (c *Client) Find(ctx context.Context, query string, timeout time.Duration, found func(FindResult)) error {
	resp, err := c.request(ctx, http.MethodPost, "/v1/find", FindRequest{Query: query, Timeout: timeout})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var r FindResult
		if err := dec.Decode(&r); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read lookup results: %w", err)
		}
		if r.Error != "" {
			return errors.New(r.Error)
		}
		found(r)
	}
}

// OpenGateway asks the daemon to serve one MCP session on a connection of
// its own (mesh mode, or relayed to req.To) and returns that connection:
// newline-delimited JSON-RPC both ways, the daemon serving.
func (c *Client) OpenGateway(ctx context.Context, req GatewayRequest) (io.ReadWriteCloser, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	addr := strings.TrimPrefix(c.base, "http://")
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("reach daemon at %s: %w", addr, err)
	}
	hreq, err := http.NewRequest(http.MethodPost, c.base+"/v1/mcp", bytes.NewReader(body))
	if err != nil {
		conn.Close()
		return nil, err
	}
	hreq.Header.Set("Authorization", "Bearer "+c.token)
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", UpgradeProtocol)
	if err := hreq.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ask daemon for a session: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ask daemon for a session: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("daemon answered %s", resp.Status)
	}
	return &upgraded{Reader: br, Conn: conn, session: resp.Header.Get(SessionHeader)}, nil
}

// upgraded reads through the buffer that read the 101 answer.
type upgraded struct {
	*bufio.Reader
	net.Conn
	session string // the daemon's ID of the session, if it has pins (see PinReports)
}

func (u *upgraded) Read(p []byte) (int, error) { return u.Reader.Read(p) }
