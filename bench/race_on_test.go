//go:build race

package bench

// raceEnabled: the race detector's instrumentation allocates more (a
// relayed call about +13 allocations and +4 KB), so allocation budgets
// allow for it (CI runs the tests with -race).
const raceEnabled = true
