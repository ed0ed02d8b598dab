//go:build !unix

package main

import "time"

// cpuTime returns 0: the process CPU time is not read on this platform.
func cpuTime() time.Duration { return 0 }
