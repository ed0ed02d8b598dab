package upstream

import (
	"context"
	"errors"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink counts the sessions it is given.
type sink struct{ attached, detached atomic.Int32 }

func (s *sink) Attach(context.Context, *sdkmcp.ClientSession) error { s.attached.Add(1); return nil }
func (s *sink) Detach(*sdkmcp.ClientSession)                        { s.detached.Add(1) }
func (s *sink) Counts() (int, int, int)                             { return 0, 0, 0 }

// server returns an Open that connects to a fresh in-memory SDK server;
// each session ends after life, as a program that exits.
func server(t *testing.T, opened *atomic.Int32, life time.Duration) Open {
	return func() (sdkmcp.Transport, *exec.Cmd, func()) {
		opened.Add(1)
		st, ct := sdkmcp.NewInMemoryTransports()
		srv := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "up", Version: "1"}, nil)
		ss, err := srv.Connect(context.Background(), st, nil)
		if err != nil {
			t.Error(err)
		}
		timer := time.AfterFunc(life, func() { ss.Close() })
		return ct, nil, func() { timer.Stop(); ss.Close() }
	}
}

func newClient() *sdkmcp.Client {
	return sdkmcp.NewClient(&sdkmcp.Implementation{Name: "node", Version: "1"}, nil)
}

// A session that ends is opened again, after a backoff, until Stop; Stop
// waits for the supervisor's goroutine (goleak checks none is left).
func TestSupervisorReopensTheUpstreamUntilStopped(t *testing.T) {
	var opened atomic.Int32
	k := &sink{}
	s := New("up", Command{Line: "in memory", MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		server(t, &opened, 200*time.Millisecond), newClient(), k)
	s.Start()
	if err := s.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for k.attached.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the sink got %d sessions in 10s, want 3 (one per restart)", k.attached.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Stop()
	if st := s.Status(); st.Restarts < 2 {
		t.Errorf("status after two restarts: %+v", st)
	}
	if k.detached.Load() != k.attached.Load() {
		t.Errorf("after Stop, %d sessions attached and %d detached", k.attached.Load(), k.detached.Load())
	}
	s.Stop() // a second Stop is harmless
}

// A supervisor stopped before it started starts nothing, and Ready says so.
func TestSupervisorStoppedBeforeItStarted(t *testing.T) {
	var opened atomic.Int32
	s := New("up", Command{}, server(t, &opened, time.Hour), newClient(), &sink{})
	s.Stop()
	s.Start()
	if err := s.Ready(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Ready = %v, want ErrStopped", err)
	}
	if opened.Load() != 0 {
		t.Fatal("a stopped supervisor opened the upstream")
	}
}
