package owner

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCloseWaitsForTheGroupAndRefusesNewGoroutines(t *testing.T) {
	var g Group
	release := make(chan struct{})
	ended := make(chan struct{})
	if !g.Go(func() { <-release; close(ended) }) {
		t.Fatal("an open group refused a goroutine")
	}
	if !g.Enter() {
		t.Fatal("an open group refused a handler")
	}
	g.Stop()
	if g.Go(func() { t.Error("a stopped group ran a goroutine") }) || g.Enter() {
		t.Fatal("a stopped group took a new goroutine")
	}
	waited := make(chan struct{})
	go func() { g.Wait(); close(waited) }()
	close(release)
	<-ended
	select {
	case <-waited:
		t.Fatal("Wait returned while a handler was still in the group")
	default:
	}
	g.Leave()
	<-waited
	if !g.Stop() {
		t.Fatal("a second Stop did not report the first")
	}
}
