package doctor

import (
	"bytes"
	"path/filepath"
	"testing"

	"banger/internal/config"
)

// TestRunRealHost runs every check against this machine with the real
// probes (device nodes, PATH, statfs, netlink) and checks the report's
// invariants. Run with -v to see the report.
func TestRunRealHost(t *testing.T) {
	r := Run(t.Context(), Options{
		Config:   config.Default(),
		StateDir: filepath.Join(t.TempDir(), "state"),
	})
	for _, c := range r.Checks {
		if c.Name == "" || c.Detail == "" {
			t.Errorf("check without name or detail: %+v", c)
		}
		switch c.Status {
		case StatusOK:
			if c.Fix != "" {
				t.Errorf("%s is ok but has a fix %q", c.Name, c.Fix)
			}
		case StatusWarn, StatusFail:
			if c.Fix == "" {
				t.Errorf("%s is %s without a fix: %q", c.Name, c.Status, c.Detail)
			}
		default:
			t.Errorf("%s has status %q", c.Name, c.Status)
		}
	}
	if r.VMM == "" || r.Accel == "" || r.VMMReason == "" {
		t.Errorf("no VMM choice: %+v", r)
	}
	var b bytes.Buffer
	if err := Render(&b, r); err != nil {
		t.Fatal(err)
	}
	t.Logf("report for this host:\n%s", b.String())
}
