package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/mcpmesh/mcpmesh/gateway"
)

// SessionHeader, in the daemon's 101 answer to POST /v1/mcp with pins,
// names the session, so that whoever opened it can read what becomes of
// its pins: GET /v1/mcp/{session}/pins.
const SessionHeader = "Mcpmesh-Session"

// PinReport is one line of GET /v1/mcp/{session}/pins: what became of a
// pin of that session (gateway.PinEvent).
type PinReport struct {
	Pin     string `json:"pin"`
	Name    string `json:"name,omitempty"`
	Error   string `json:"error,omitempty"`
	Renamed string `json:"renamed,omitempty"`
}

// Event returns r as the gateway's PinEvent, which says it in words.
func (r PinReport) Event() gateway.PinEvent {
	e := gateway.PinEvent{Pin: r.Pin, Name: r.Name, Renamed: r.Renamed}
	if r.Error != "" {
		e.Err = errors.New(r.Error)
	}
	return e
}

// maxPinReports bounds what one session keeps of its pins' reports (each
// is said once per pin and reason).
const maxPinReports = 256

// pinSessions keeps the pin reports of the host sessions that have pins,
// until each ends.
type pinSessions struct {
	mu sync.Mutex
	m  map[string]*pinLog
}

type pinLog struct {
	reports []PinReport
	changed chan struct{} // closed, and replaced, at each report and at the end
	ended   bool
}

// open starts the log of a new session and returns its ID.
func (p *pinSessions) open() string {
	b := make([]byte, 16)
	rand.Read(b)
	id := hex.EncodeToString(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]*pinLog{}
	}
	p.m[id] = &pinLog{changed: make(chan struct{})}
	return id
}

func (p *pinSessions) add(id string, e gateway.PinEvent) {
	r := PinReport{Pin: e.Pin, Name: e.Name, Renamed: e.Renamed}
	if e.Err != nil {
		r.Error = e.Err.Error()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.m[id]
	if l == nil {
		return
	}
	if len(l.reports) == maxPinReports {
		l.reports = l.reports[1:]
	}
	l.reports = append(l.reports, r)
	close(l.changed)
	l.changed = make(chan struct{})
}

// close ends the session's log: its readers get what is left and stop.
func (p *pinSessions) close(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.m[id]; l != nil {
		l.ended = true
		close(l.changed)
		delete(p.m, id)
	}
}

// since returns the reports after the first n, whether the session has
// ended, and a channel closed at the next change; ok is false for a
// session unknown (or over).
func (p *pinSessions) since(id string, n int) (reports []PinReport, ended bool, changed <-chan struct{}, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.m[id]
	if l == nil {
		return nil, true, nil, false
	}
	if n < len(l.reports) {
		reports = append(reports, l.reports[n:]...)
	}
	return reports, l.ended, l.changed, true
}

// handlePins streams a session's pin reports, one JSON object per line,
// from the first, until the session ends.
func (s *Server) handlePins(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("session")
	if _, _, _, ok := s.pins.since(id, 0); !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no host session %q with pins (it has ended, or had no pins)", id))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	sent := 0
	for {
		reports, ended, changed, ok := s.pins.since(id, sent)
		for _, rep := range reports {
			enc.Encode(rep)
		}
		sent += len(reports)
		if flusher != nil && len(reports) > 0 {
			flusher.Flush()
		}
		if !ok || ended {
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// PinReports calls fn with what becomes of the pins of the host session
// conn (from OpenGateway), as the daemon reports them, until the session
// ends or ctx does. A session without pins has none to report.
func (c *Client) PinReports(ctx context.Context, conn io.ReadWriteCloser, fn func(PinReport)) error {
	u, ok := conn.(*upgraded)
	if !ok || u.session == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/mcp/"+u.session+"/pins", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pin reports: daemon answered %s", resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var r PinReport
		if err := dec.Decode(&r); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		fn(r)
	}
}
