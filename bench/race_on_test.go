//go:build race

package bench

// raceEnabled: the race detector's instrumentation allocates more (about
// +20 allocations and +5 KB a relayed call), so allocation budgets allow
// for it.
const raceEnabled = true
