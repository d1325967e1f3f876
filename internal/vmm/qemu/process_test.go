package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/vmm"
)

func TestCheckCmdlineRejectsOtherProcesses(t *testing.T) {
	tests := []struct {
		name string
		pid  int
	}{
		{"not qemu", os.Getpid()},
		{"no such pid", 1 << 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkCmdline(tt.pid, "/x/qmp.sock"); !errors.Is(err, vmm.ErrNotRunning) {
				t.Errorf("checkCmdline = %v, want ErrNotRunning", err)
			}
		})
	}
}

func TestLogTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "qemu.log")
	var lines []string
	for i := 0; i < 500; i++ {
		lines = append(lines, strings.Repeat("x", 20))
	}
	lines = append(lines, "qemu: could not load kernel", "")
	os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644)
	got := logTail(p, 3)
	if n := strings.Count(got, "\n"); n != 2 || !strings.HasSuffix(got, "qemu: could not load kernel") {
		t.Errorf("logTail = %q", got)
	}
}
