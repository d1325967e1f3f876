package vmm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckCmdline(t *testing.T) {
	self := os.Getpid()
	prog := filepath.Base(os.Args[0])
	tests := []struct {
		name           string
		pid            int
		program, arg   string
		wantNotRunning bool
	}{
		{"own argv[0]", self, prog, os.Args[0], false},
		{"any program", self, "", os.Args[0], false},
		{"another program", self, "qemu", os.Args[0], true},
		{"argument missing", self, prog, "/x/qmp.sock", true},
		{"prefix is not enough", self, "", os.Args[0][:len(os.Args[0])-1], true},
		{"no such pid", 1 << 30, "", "/x/qmp.sock", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCmdline(tt.pid, tt.program, tt.arg)
			if tt.wantNotRunning != errors.Is(err, ErrNotRunning) || (!tt.wantNotRunning && err != nil) {
				t.Errorf("CheckCmdline = %v, want ErrNotRunning: %v", err, tt.wantNotRunning)
			}
		})
	}
}

func TestLogTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vmm.log")
	var lines []string
	for i := 0; i < 500; i++ {
		lines = append(lines, strings.Repeat("x", 20))
	}
	lines = append(lines, "qemu: could not load kernel", "")
	os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644)
	got := LogTail(p, 3)
	if n := strings.Count(got, "\n"); n != 2 || !strings.HasSuffix(got, "qemu: could not load kernel") {
		t.Errorf("LogTail = %q", got)
	}
	if got := LogTail(filepath.Join(t.TempDir(), "missing"), 3); got != "" {
		t.Errorf("LogTail of a missing file = %q, want empty", got)
	}
}
