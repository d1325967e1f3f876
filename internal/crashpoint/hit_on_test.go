//go:build bangercrash

package crashpoint

import (
	"strings"
	"testing"
)

// In a bangercrash build a child dies by SIGKILL at the point named, at
// the hit asked for, and not before; points not named pass.
func TestCrashBuildKills(t *testing.T) {
	a, b := string(VMCreateAfterTap), string(ImageLayerCached)
	for _, tc := range []struct {
		name, points, crashAt string
		die                   bool
	}{
		{"named point", a, a, true},
		{"one of a list", a, b + "," + a, true},
		{"other point", a, b, false},
		{"unset", a, "", false},
		{"second hit, hit once", b, b + "@2", false},
		{"second hit, hit twice", b + "," + b, b + "@2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, out := child(t, tc.points, tc.crashAt)
			if killed(ps) != tc.die {
				t.Fatalf("hitting %s with %s=%q: %v, want killed=%v\n%s", tc.points, EnvVar, tc.crashAt, ps, tc.die, out)
			}
			if tc.die && !strings.Contains(out, "crashpoint: killed at") {
				t.Errorf("no note of the crash on stderr: %q", out)
			}
		})
	}
}

// A name that is no point (a typo in a test) is refused, not ignored.
func TestCrashBuildRefusesUnknown(t *testing.T) {
	for _, bad := range []string{"vm.create.after-tpa", string(VMCreateAfterTap) + "@0", string(VMCreateAfterTap) + "@x"} {
		ps, out := child(t, string(VMCreateAfterTap), bad)
		if ps.Success() || killed(ps) || !strings.Contains(out, EnvVar) {
			t.Errorf("%s=%q: %v, want a clear refusal\n%s", EnvVar, bad, ps, out)
		}
	}
}
