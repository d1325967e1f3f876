//go:build !bangercrash

package crashpoint

// Enabled is whether this build can crash at a point: false, so callers'
// `if crashpoint.Enabled` blocks are compiled out.
const Enabled = false

// Hit does nothing: this build is not a bangercrash one.
func Hit(Point) {}
