package linger

import (
	"testing"
	"time"
)

func TestReleasedEntriesStayForTheGracePeriodThenGo(t *testing.T) {
	m := New[string, int](time.Hour)
	m.Put("a", 1)
	m.Put("b", 2)
	m.Release("a")
	if v, ok := m.Get("a"); !ok || v != 1 {
		t.Fatalf("released entry gone within its grace period: %v %v", v, ok)
	}
	// Expire "a" by hand: the sweep of the next Put drops it, "b" (not
	// released) stays whatever its age.
	m.mu.Lock()
	e := m.m["a"]
	e.until = time.Now().Add(-time.Second)
	m.m["a"] = e
	m.swept = time.Time{}
	m.mu.Unlock()
	if _, ok := m.Get("a"); ok {
		t.Fatal("expired entry still found")
	}
	m.Put("c", 3)
	if m.Len() != 2 {
		t.Fatalf("after the sweep, %d entries held, want 2 (b, c)", m.Len())
	}
	if v, ok := m.Get("b"); !ok || v != 2 {
		t.Fatal("an entry never released was swept")
	}
	m.Delete("b")
	if _, ok := m.Get("b"); ok {
		t.Fatal("deleted entry still found")
	}
}
