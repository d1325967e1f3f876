package agent

import (
	"banger/internal/prereq"
	"os/exec"
	"strings"
	"testing"
)

// TestAgentDeps keeps banger-agent small: it must not pull in the
// daemon's packages, nor the VMM drivers (the guest contract lives in
// internal/guest).
func TestAgentDeps(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		prereq.Missing(t, "go tool not in PATH: %v", err)
	}
	cmd := exec.Command(gobin, "list", "-deps", "banger/cmd/banger-agent")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"banger/internal/image", "banger/internal/store", "banger/internal/web",
		"banger/internal/daemon", "banger/internal/config", "banger/internal/vmm",
	}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("banger-agent depends on %s", d)
			}
		}
		if strings.HasPrefix(d, "modernc.org/") {
			t.Errorf("banger-agent depends on %s", d)
		}
	}
	if len(deps) == 0 {
		t.Error("go list printed no dependencies")
	}
}
