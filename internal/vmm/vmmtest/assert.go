package vmmtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/vmm"
)

// Echo is a Harness.Agent for a guest agent that echoes what it reads, as
// MemDriver's default agent and the Firecracker stand-in's do.
func Echo(_ context.Context, conn net.Conn) error {
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "ping\n" {
		return fmt.Errorf("echo through the agent channel = %q, %v; want ping", line, err)
	}
	return nil
}

// AssertGone fails t unless m's VMM has exited (Done closed, its PID no
// longer running) and left nothing behind (see AssertNoLeftovers).
func AssertGone(t *testing.T, m vmm.Machine, spec vmm.Spec, runFiles ...string) {
	t.Helper()
	WaitDone(t, m)
	if pid := m.Handle().PID; pidAlive(pid) {
		t.Errorf("vmm pid %d still running after Done", pid)
	}
	AssertNoLeftovers(t, spec.Dir, runFiles...)
}

// WaitDone fails t unless m's Done closes within 10 seconds.
func WaitDone(t *testing.T, m vmm.Machine) {
	t.Helper()
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed 10s after the vmm should have exited")
	}
}

// Start starts spec on d, fails t when it cannot, and kills the machine
// at cleanup.
func Start(ctx context.Context, t *testing.T, d vmm.Driver, spec vmm.Spec) vmm.Machine {
	t.Helper()
	m, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { m.Kill() })
	return m
}

// AssertNoLeftovers fails t when, after a short grace, a socket is still
// below dir, one of runFiles is in it, or a process has dir or a path in
// it on its command line.
func AssertNoLeftovers(t *testing.T, dir string, runFiles ...string) {
	t.Helper()
	if dir == "" {
		return
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		left := leftovers(dir, runFiles)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("left behind: %v", left)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leftovers(dir string, runFiles []string) []string {
	var left []string
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type()&fs.ModeSocket != 0 {
			left = append(left, "socket "+p)
		}
		return nil
	})
	for _, name := range runFiles {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			left = append(left, "file "+name)
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		// A zombie has an empty cmdline: what matches runs.
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && namesDir(string(b), dir) {
			left = append(left, "process "+p.Name())
		}
	}
	return left
}

// namesDir reports whether a NUL-separated command line has dir, or a
// path below it, in one of its arguments.
func namesDir(cmdline, dir string) bool {
	for _, a := range strings.Split(cmdline, "\x00") {
		if i := strings.Index(a, dir); i >= 0 {
			rest := a[i+len(dir):]
			if rest == "" || rest[0] == '/' || rest[0] == ',' {
				return true
			}
		}
	}
	return false
}

// pidAlive reports whether a process with pid runs (a zombie does not).
func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}
