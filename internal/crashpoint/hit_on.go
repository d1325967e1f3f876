//go:build bangercrash

package crashpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Enabled is whether this build can crash at a point: true.
const Enabled = true

var (
	armed = parse(os.Getenv(EnvVar)) // point: the hit to die at (1: the first)

	mu   sync.Mutex
	hits = map[Point]int{}
)

// Hit kills this process with SIGKILL, as a crash would (no deferred
// call, no cleanup), when BANGER_CRASH_AT names p and this is the hit of
// p it asked for.
func Hit(p Point) {
	at, ok := armed[p]
	if !ok {
		return
	}
	mu.Lock()
	hits[p]++
	n := hits[p]
	mu.Unlock()
	if n != at {
		return
	}
	fmt.Fprintf(os.Stderr, "crashpoint: killed at %s (hit %d)\n", p, n)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way; never return into the next step
}

// parse reads "a,b@2": the points to die at, each at its Nth hit. A name
// that is not a point is refused loudly, so a typo in a test cannot pass
// for a point that was never reached.
func parse(s string) map[Point]int {
	out := map[Point]int{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		name, nth, _ := strings.Cut(f, "@")
		n := 1
		if nth != "" {
			var err error
			if n, err = strconv.Atoi(nth); err != nil || n < 1 {
				panic(fmt.Sprintf("%s=%q: %q is not a hit count (want point@N, N >= 1)", EnvVar, s, nth))
			}
		}
		if !Known(Point(name)) {
			panic(fmt.Sprintf("%s=%q: %q is no crash point (see internal/crashpoint)", EnvVar, s, name))
		}
		out[Point(name)] = n
	}
	return out
}
