//go:build race

package bench

// raceEnabled: built with -race, under which allocations differ (sync.Pool
// drops items at random, instrumentation moves values to the heap).
const raceEnabled = true
