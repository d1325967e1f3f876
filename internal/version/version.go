// Package version is the build version of banger's binaries. The Makefile
// sets Version with -ldflags; CLI and daemon compare theirs.
package version

import "runtime/debug"

// Version is set at link time: -X banger/internal/version.Version=...
var Version = ""

// String returns the build version: the link-time value, else the VCS
// revision recorded by the go tool, else "dev".
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			return rev + dirty
		}
	}
	return "dev"
}
