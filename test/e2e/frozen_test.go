package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// frozenBound is how long any command against a VM whose VMM is stopped
// (SIGSTOP: the guest and QEMU's monitor both stop answering) may take.
const frozenBound = 90 * time.Second

// Every command against a frozen VM returns within frozenBound, and one
// that needs the guest or the VMM fails naming the VM. Other VMs keep
// working meanwhile. (Issue 16, "Hangs".)
func TestFrozenGuestCommandsReturn(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "fz", "--memory", "512M")
	e.ok("vm", "create", "--image", "fixture", "--name", "ok1", "--memory", "512M")
	e.ok("vm", "session", "start", "fz", "--name", "s0", "--", "sleep", "100000")
	ws := t.TempDir()
	os.WriteFile(filepath.Join(ws, "a.txt"), []byte("work"), 0o644)
	pid := e.vmmPID("fz")
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("x"), 0o644)

	type row struct {
		cmd    string
		took   time.Duration
		code   int
		stderr string
	}
	var rows []row
	for _, args := range [][]string{
		{"vm", "list"},
		{"vm", "inspect", "fz"},
		{"vm", "logs", "fz"},
		{"vm", "exec", "fz", "--", "true"},
		{"vm", "ssh", "fz", "--", "true"},
		{"vm", "cp", src, "fz:/tmp/f"},
		{"vm", "session", "start", "fz", "--name", "s", "--", "sleep", "100"},
		{"vm", "session", "list", "fz"},
		{"vm", "session", "attach", "fz", "s0"},
		{"vm", "workspace", "prepare", "fz", ws},
		{"vm", "workspace", "export", "fz", "--guest-path", "/root", "-o", filepath.Join(t.TempDir(), "out")},
		{"vm", "port", "add", "fz", "127.0.0.1:18190:80"},
		{"vm", "pause", "fz"},
		{"vm", "snapshot", "fz", "--name", "fzs"},
		{"vm", "stop", "fz", "--timeout", "5"},
		{"vm", "delete", "--force", "fz"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), frozenBound+30*time.Second)
		start := time.Now()
		c := e.cmd(ctx, args...)
		var stderr strings.Builder
		c.Stderr = &stderr
		if len(args) > 2 && args[2] == "attach" {
			// A stdin that stays open: closing it would detach at once.
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			defer r.Close()
			c.Stdin = r
		}
		err := c.Run()
		cancel()
		code := 0
		if err != nil {
			code = -1
			if c.ProcessState != nil {
				code = c.ProcessState.ExitCode()
			}
		}
		rows = append(rows, row{strings.Join(args, " "), time.Since(start), code, strings.TrimSpace(stderr.String())})
		if out := e.ok("vm", "exec", "ok1", "--", "echo", "ok"); out != "ok\n" {
			t.Errorf("another vm during %q: exec said %q", strings.Join(args, " "), out)
		}
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-60s %8s exit %d  %s\n", r.cmd, r.took.Round(100*time.Millisecond), r.code, firstLine([]byte(r.stderr)))
		if r.took > frozenBound {
			t.Errorf("%s took %s against a frozen vm (bound %s)", r.cmd, r.took.Round(time.Second), frozenBound)
		}
		if r.code != 0 && !strings.Contains(r.stderr, "fz") {
			t.Errorf("%s failed without naming the vm: %s", r.cmd, r.stderr)
		}
	}
	t.Logf("commands against a frozen vm:\n%s", b.String())
}
