//go:build race

package main

// raceEnabled: built with -race, under which the simulation runs several
// times slower, so that lookups time out for the machine's sake, not the DHT's.
const raceEnabled = true
