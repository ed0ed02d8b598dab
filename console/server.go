package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"

	"github.com/mcpmesh/mcpmesh/internal/loopback"
	"github.com/mcpmesh/mcpmesh/internal/owner"
)

var log = logging.Logger("mcpmesh/console")

//go:embed web
var webFiles embed.FS

// Options tune a Server. Zero values take the defaults.
type Options struct {
	// Interval is how often the daemon looks for changes while a page is
	// open (tasks, audit; peers and policy every fourth time). Default
	// 500 ms.
	Interval time.Duration
	// MaxCalls bounds the calls started from pages and still running.
	// Default 16.
	MaxCalls int
	// AskWait is how long a question asked of a call started from a page
	// waits for a page to follow the call before it is declined (the page
	// was closed, say). Default 10 s.
	AskWait time.Duration
}

// Server serves the console. It is an http.Handler; Listen serves it on a
// loopback address of its own. Close ends its event streams and the calls
// started from it.
type Server struct {
	n       Node
	opts    Options
	token   string // the login token, part of the printed URL
	session string // the session cookie's value
	static  http.Handler
	cards   *cardCache

	ctx    context.Context // ends on Close: streams, calls, card fetches
	cancel context.CancelFunc
	group  owner.Group   // the server's goroutine, calls, card fetches
	calls  chan struct{} // a slot per running call
	asked  calls         // the questions of the running calls

	mu  sync.Mutex
	srv *http.Server
	ln  net.Listener
}

// New returns a console for n.
func New(n Node, opts Options) *Server {
	if opts.Interval <= 0 {
		opts.Interval = 500 * time.Millisecond
	}
	if opts.MaxCalls <= 0 {
		opts.MaxCalls = 16
	}
	if opts.AskWait <= 0 {
		opts.AskWait = 10 * time.Second
	}
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded folder is there by construction
	}
	s := &Server{
		n:       n,
		opts:    opts,
		token:   randomHex(32),
		session: randomHex(32),
		static:  http.FileServerFS(sub),
		calls:   make(chan struct{}, opts.MaxCalls),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.cards = newCardCache(s)
	return s
}

// Token returns the login token: a browser that opens the console with
// ?token=TOKEN is signed in.
func (s *Server) Token() string { return s.token }

// Listen serves the console on addr, a loopback HOST:PORT (port 0 picks a
// free one), and returns the URL to open, login token included.
func (s *Server) Listen(addr string) (string, error) {
	if host, _, err := net.SplitHostPort(addr); err != nil || !loopback.Host(host) {
		return "", fmt.Errorf("console: %q: want a loopback HOST:PORT (127.0.0.1, ::1, localhost): the console listens on loopback only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("console: %w", err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.srv, s.ln = srv, ln
	s.mu.Unlock()
	if !s.group.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Errorw("console stopped", "error", err)
		}
	}) {
		ln.Close()
		return "", errors.New("console: closed")
	}
	return s.URL(), nil
}

// URL returns the login URL of a listening console ("" before Listen).
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String() + "/?token=" + s.token
}

// Close ends the event streams and the calls started from pages, stops
// listening, and waits for all of it.
func (s *Server) Close() error {
	s.group.Stop()
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	s.cancel() // first: event streams never go idle, so Shutdown would wait for them
	var err error
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err = srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}
	s.group.Wait()
	return err
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	if err := loopback.CheckRequest(r); err != nil {
		http.Error(w, "Forbidden: "+err.Error(), http.StatusForbidden)
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/api/"):
		if err := checkSite(r); err != nil {
			writeError(w, http.StatusForbidden, err)
			return
		}
		if !s.authenticated(r) {
			writeError(w, http.StatusUnauthorized, errors.New("not signed in: open the URL the daemon printed, or run 'mcpmesh ui'"))
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		s.api(w, r)
	case r.URL.Path == "/" || r.URL.Path == "/index.html":
		if tok := r.URL.Query().Get("token"); tok != "" {
			s.login(w, r, tok)
			return
		}
		if !s.authenticated(r) {
			s.loginPage(w, http.StatusUnauthorized, "")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, webFiles, "web/index.html")
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && !strings.HasSuffix(r.URL.Path, "/"):
		// The page's scripts and styles: the same in every binary, no
		// secret in them. (No folder listings.)
		s.static.ServeHTTP(w, r)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		http.NotFound(w, r)
	default:
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	}
}

// maxBody bounds a request body: tool arguments are the only large part.
const maxBody = 1 << 20

var loginTmpl = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mcpmesh console: sign in</title><link rel="stylesheet" href="/style.css"></head>
<body><main class="signin"><h1>mcpmesh console</h1>
{{if .}}<p role="alert" class="bad">{{.}}</p>{{end}}
<p>Open the console with the URL its daemon printed when it started (it ends in <code>?token=…</code>), or run</p>
<pre><code>mcpmesh ui</code></pre>
<p>on the machine of the daemon, with the same <code>--home</code>.</p></main></body></html>
`))

func (s *Server) loginPage(w http.ResponseWriter, code int, why string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	loginTmpl.Execute(w, why)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Debugw("write answer", "error", err)
	}
}

// apiError is the body of every non-2xx answer under /api/.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, apiError{Error: err.Error()})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
		return false
	}
	return true
}
