// Package linger is a map whose entries outlive their release by a grace
// period, for routes that late messages may still need (progress sent after
// a result, a task's state polled after it ended). Expired entries are
// swept as entries come and go: no timer and no goroutine is left behind.
package linger

import (
	"sync"
	"time"
)

// Map holds values by key. A released value stays findable for the map's
// grace period, then goes. It is safe for concurrent use.
type Map[K comparable, V any] struct {
	grace time.Duration

	mu    sync.Mutex
	m     map[K]entry[V]
	swept time.Time
}

type entry[V any] struct {
	v     V
	until time.Time // zero while not released
}

// New returns an empty map whose released values stay for grace.
func New[K comparable, V any](grace time.Duration) *Map[K, V] {
	return &Map[K, V]{grace: grace, m: map[K]entry[V]{}}
}

// Put holds v under k until Release(k) and the grace period after it, or
// Delete(k).
func (m *Map[K, V]) Put(k K, v V) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(now)
	m.m[k] = entry[V]{v: v}
}

// Get returns the value under k, if it is held and not expired.
func (m *Map[K, V]) Get(k K) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.m[k]
	if !ok || (!e.until.IsZero() && time.Now().After(e.until)) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Release starts k's grace period: Get finds it until the period ends.
func (m *Map[K, V]) Release(k K) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.m[k]; ok && e.until.IsZero() {
		e.until = now.Add(m.grace)
		m.m[k] = e
	}
}

// Delete drops k at once.
func (m *Map[K, V]) Delete(k K) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, k)
}

// Len returns the number of entries held, expired ones not yet swept
// included.
func (m *Map[K, V]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.m)
}

// sweepLocked drops the expired entries, at most once per grace period, so
// that a sweep costs O(1) per Put on average.
func (m *Map[K, V]) sweepLocked(now time.Time) {
	if now.Sub(m.swept) < m.grace {
		return
	}
	m.swept = now
	for k, e := range m.m {
		if !e.until.IsZero() && now.After(e.until) {
			delete(m.m, k)
		}
	}
}
