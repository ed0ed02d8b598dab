package sessions_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/mcp/sessions"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is a real SDK server that the pool's dial function opens in-memory
// sessions to, recording each one.
type server struct {
	t      *testing.T
	srv    *sdkmcp.Server
	client *sdkmcp.Client

	dials atomic.Int32
	gate  chan struct{} // if not nil, each dial waits for it
	fail  atomic.Bool   // the next dials fail

	mu       sync.Mutex
	sessions []*sdkmcp.ServerSession
}

func newServer(t *testing.T) *server {
	s := &server{
		t:      t,
		srv:    sdkmcp.NewServer(&sdkmcp.Implementation{Name: "test", Version: "1"}, nil),
		client: sdkmcp.NewClient(&sdkmcp.Implementation{Name: "pool", Version: "1"}, nil),
	}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, ss := range s.sessions {
			ss.Close()
		}
	})
	return s
}

func (s *server) dial(ctx context.Context, _ lpeer.ID, _ string) (*sdkmcp.ClientSession, error) {
	s.dials.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if s.fail.Load() {
		return nil, errors.New("dial refused by test")
	}
	ct, st := sdkmcp.NewInMemoryTransports()
	ss, err := s.srv.Connect(context.Background(), st, nil)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.sessions = append(s.sessions, ss)
	s.mu.Unlock()
	return s.client.Connect(ctx, ct, nil)
}

func (s *server) lastSession() *sdkmcp.ServerSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[len(s.sessions)-1]
}

func dialCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

func TestSessionsConcurrentGetsShareOneSession(t *testing.T) {
	srv := newServer(t)
	srv.gate = make(chan struct{})
	pool := sessions.NewPool(srv.dial, nil)
	defer pool.Close()
	key := sessions.Key{Peer: lpeer.ID("test-peer"), Server: "node"}

	const n = 20
	got := make([]*sdkmcp.ClientSession, n)
	errs := make([]error, n)
	waiting := make([]*waitingCtx, n)
	var wg sync.WaitGroup
	for i := range n {
		waiting[i] = newWaitingCtx()
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = pool.Get(waiting[i], key, dialCtx)
		}()
	}
	// Every caller queues up behind the one dial before it finishes.
	for i, w := range waiting {
		select {
		case <-w.waits:
		case <-time.After(5 * time.Second):
			t.Fatalf("caller %d not waiting for the dial after 5s", i)
		}
	}
	close(srv.gate)
	wg.Wait()

	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("caller %d got another session", i)
		}
	}
	if d := srv.dials.Load(); d != 1 {
		t.Errorf("%d dials for one key, want 1", d)
	}
	if err := got[0].Ping(context.Background(), nil); err != nil {
		t.Errorf("pooled session does not work: %v", err)
	}
	other, err := pool.Get(context.Background(), sessions.Key{Peer: key.Peer, Server: "other"}, dialCtx)
	if err != nil {
		t.Fatal(err)
	}
	if other == got[0] {
		t.Error("another server of the same peer shares the session")
	}
	if open := pool.Open(); len(open) != 2 {
		t.Errorf("Open() = %v, want 2 keys", open)
	}
}

func TestSessionsDialFailureIsNotCached(t *testing.T) {
	srv := newServer(t)
	pool := sessions.NewPool(srv.dial, nil)
	defer pool.Close()
	key := sessions.Key{Peer: lpeer.ID("test-peer"), Server: "node"}

	srv.fail.Store(true)
	if _, err := pool.Get(context.Background(), key, dialCtx); err == nil {
		t.Fatal("Get succeeded although the dial failed")
	}
	if open := pool.Open(); len(open) != 0 {
		t.Errorf("Open() = %v after a failed dial, want none", open)
	}
	srv.fail.Store(false)
	cs, err := pool.Get(context.Background(), key, dialCtx)
	if err != nil {
		t.Fatalf("Get after the peer came back: %v", err)
	}
	if err := cs.Ping(context.Background(), nil); err != nil {
		t.Error(err)
	}
	if d := srv.dials.Load(); d != 2 {
		t.Errorf("%d dials, want 2", d)
	}
}

func TestSessionsCallerGivingUpDoesNotFailTheOthers(t *testing.T) {
	srv := newServer(t)
	srv.gate = make(chan struct{})
	pool := sessions.NewPool(srv.dial, nil)
	defer pool.Close()
	key := sessions.Key{Peer: lpeer.ID("test-peer"), Server: "node"}

	impatient, cancel := context.WithCancel(context.Background())
	impatientErr := make(chan error, 1)
	go func() {
		_, err := pool.Get(impatient, key, dialCtx)
		impatientErr <- err
	}()
	patient := make(chan error, 1)
	go func() {
		cs, err := pool.Get(context.Background(), key, dialCtx)
		if err == nil {
			err = cs.Ping(context.Background(), nil)
		}
		patient <- err
	}()
	deadline := time.Now().Add(2 * time.Second)
	for srv.dials.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-impatientErr:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("impatient caller: %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a caller that gave up is still waiting for the dial")
	}
	close(srv.gate)
	if err := <-patient; err != nil {
		t.Errorf("the other caller failed with the one that gave up: %v", err)
	}
}

func TestSessionsEndedSessionIsForgottenAndRedialed(t *testing.T) {
	srv := newServer(t)
	ended := make(chan sessions.Key, 1)
	pool := sessions.NewPool(srv.dial, func(k sessions.Key, _ *sdkmcp.ClientSession) { ended <- k })
	defer pool.Close()
	key := sessions.Key{Peer: lpeer.ID("test-peer"), Server: "node"}

	first, err := pool.Get(context.Background(), key, dialCtx)
	if err != nil {
		t.Fatal(err)
	}
	srv.lastSession().Close() // the peer ends the session
	select {
	case k := <-ended:
		if k != key {
			t.Errorf("onEnd got %v, want %v", k, key)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("onEnd not called after the peer closed the session")
	}
	if open := pool.Open(); len(open) != 0 {
		t.Errorf("Open() = %v after the session ended", open)
	}
	second, err := pool.Get(context.Background(), key, dialCtx)
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("Get returned the ended session")
	}
	if err := second.Ping(context.Background(), nil); err != nil {
		t.Error(err)
	}
}

func TestSessionsDropClosesOnlyTheNamedSession(t *testing.T) {
	srv := newServer(t)
	pool := sessions.NewPool(srv.dial, nil)
	defer pool.Close()
	key := sessions.Key{Peer: lpeer.ID("test-peer"), Server: "node"}

	first, err := pool.Get(context.Background(), key, dialCtx)
	if err != nil {
		t.Fatal(err)
	}
	pool.Drop(key, first)
	if err := first.Ping(context.Background(), nil); err == nil {
		t.Error("dropped session still works")
	}
	second, err := pool.Get(context.Background(), key, dialCtx)
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("Get after Drop returned the dropped session")
	}
	pool.Drop(key, first) // stale: must not touch the new session
	if err := second.Ping(context.Background(), nil); err != nil {
		t.Errorf("a stale Drop closed the new session: %v", err)
	}
}

func TestSessionsCloseEndsSessionsAndRefusesGets(t *testing.T) {
	srv := newServer(t)
	pool := sessions.NewPool(srv.dial, nil)
	key := sessions.Key{Peer: lpeer.ID("test-peer"), Server: "node"}
	if _, err := pool.Get(context.Background(), key, dialCtx); err != nil {
		t.Fatal(err)
	}
	ss := srv.lastSession()

	// A dial in flight when Close starts: Close waits for it, and its
	// session is closed, not handed out.
	srv.gate = make(chan struct{})
	late := sessions.Key{Peer: key.Peer, Server: "late"}
	lateErr := make(chan error, 1)
	go func() {
		_, err := pool.Get(context.Background(), late, dialCtx)
		lateErr <- err
	}()
	deadline := time.Now().Add(2 * time.Second)
	for srv.dials.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- pool.Close() }()
	// Close has started once a Get is refused (a Get that does not wait:
	// its context is done, so it dials nothing).
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := pool.Get(done, late, dialCtx); errors.Is(err, sessions.ErrClosed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Close did not start within 5s")
		}
	}
	close(srv.gate)
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := <-lateErr; !errors.Is(err, sessions.ErrClosed) {
		t.Errorf("Get whose dial ended after Close: %v, want ErrClosed", err)
	}

	waited := make(chan struct{})
	go func() { ss.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(2 * time.Second):
		t.Error("the peer's end of a pooled session still open after Close")
	}
	if _, err := pool.Get(context.Background(), key, dialCtx); !errors.Is(err, sessions.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if err := pool.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// waitingCtx is a context that tells when its caller starts waiting on it:
// Get asks for Done only once it waits for a dial.
type waitingCtx struct {
	context.Context
	once  sync.Once
	waits chan struct{} // closed at the first Done
}

func newWaitingCtx() *waitingCtx {
	return &waitingCtx{Context: context.Background(), waits: make(chan struct{})}
}

func (c *waitingCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waits) })
	return c.Context.Done()
}
