package main

import (
	"os/exec"
	"strings"
	"testing"

	"banger/internal/prereq"
)

// TestCLIDeps keeps the CLI a thin client of bangerd: it must not link
// the daemon, the image and kernel builders, the store (sqlite), the host
// network, the VMM drivers or the web UI.
func TestCLIDeps(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		prereq.Missing(t, "go tool not in PATH: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", "banger/cmd/banger").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"banger/internal/daemon", "banger/internal/image", "banger/internal/kernel",
		"banger/internal/store", "banger/internal/network",
		"banger/internal/vmm/qemu", "banger/internal/vmm/firecracker",
		"banger/internal/web", "github.com/coder/websocket", "github.com/chromedp",
	}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("banger depends on %s", d)
			}
		}
		if strings.HasPrefix(d, "modernc.org/") { // the store's sqlite
			t.Errorf("banger depends on %s", d)
		}
	}
	if len(deps) == 0 {
		t.Error("go list printed no dependencies")
	}
}
