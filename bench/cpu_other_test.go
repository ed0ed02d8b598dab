//go:build !unix

package bench

import "time"

// cpuTime returns 0: the process CPU time is not read on this platform, and
// no cpu-ns/op metric is reported.
func cpuTime() time.Duration { return 0 }
