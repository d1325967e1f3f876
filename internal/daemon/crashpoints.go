package daemon

import "banger/internal/crashpoint"

// startPoint is the crash point of a start's step: create when the start
// is a create's first (first), else start. Outside bangercrash builds it
// is the empty point, and the call folds away.
func startPoint(first bool, create, start crashpoint.Point) crashpoint.Point {
	if !crashpoint.Enabled {
		return ""
	}
	if first {
		return create
	}
	return start
}
