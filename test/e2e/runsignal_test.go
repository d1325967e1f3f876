package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// output collects what a command prints, safe to read while it runs.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// wait fails the test unless s appears within d.
func (o *output) wait(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(o.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %s; output:\n%s", s, d, o.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exitCode waits for c and returns its exit code, failing after d.
func exitCode(t *testing.T, c *exec.Cmd, d time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(d):
		c.Process.Kill()
		t.Fatalf("%v still running after %s", c.Args, d)
		return -1
	}
}

// startPTY starts c on a new terminal and copies what it prints to out.
func startPTY(t *testing.T, c *exec.Cmd, out *output) *os.File {
	t.Helper()
	tty, err := pty.StartWithSize(c, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := tty.Read(b)
			out.Write(b[:n])
			if err != nil {
				return
			}
		}
	}()
	return tty
}

// trapINT prints ready, then got-INT on each SIGINT; with exitOnINT it
// exits 3 on the first.
func trapINT(exitOnINT bool) []string {
	action := "echo got-INT"
	if exitOnINT {
		action = "echo got-INT; exit 3"
	}
	return []string{"sh", "-c", "trap '" + action + "' INT; echo ready; while :; do sleep 1; done"}
}

// Ctrl-C in vm run and vm exec reaches the guest command, on a terminal
// (the ^C byte through the guest's tty) and without one (SIGINT
// forwarded); a second Ctrl-C detaches, exit 130, and the VM keeps
// running.
func TestRunCtrlC(t *testing.T) {
	e := bootEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("vm run on a terminal: Ctrl-C ends the command", func(t *testing.T) {
		var out output
		c := e.cmd(ctx, append([]string{"vm", "run", "--image", "fixture", "--name", "cc", "--"}, trapINT(true)...)...)
		tty := startPTY(t, c, &out)
		out.wait(t, "ready", 3*time.Minute)
		tty.Write([]byte{3})
		out.wait(t, "got-INT", 30*time.Second)
		if code := exitCode(t, c, 30*time.Second); code != 3 {
			t.Fatalf("vm run exit %d, want the command's 3; output:\n%s", code, out.String())
		}
	})
	if v := e.inspect("cc"); v.State != "running" {
		t.Fatalf("vm cc after its command ended: %+v", v)
	}

	t.Run("vm exec -t: a second Ctrl-C detaches", func(t *testing.T) {
		var out output
		c := e.cmd(ctx, append([]string{"vm", "exec", "-t", "cc", "--"}, trapINT(false)...)...)
		tty := startPTY(t, c, &out)
		out.wait(t, "ready", 60*time.Second)
		tty.Write([]byte{3})
		out.wait(t, "got-INT", 30*time.Second)
		tty.Write([]byte{3})
		if code := exitCode(t, c, 30*time.Second); code != 130 {
			t.Fatalf("exit %d after a second Ctrl-C, want 130 (detached); output:\n%s", code, out.String())
		}
		mustContain(t, "detach message", out.String(), "detached from the command in vm cc")
	})

	t.Run("vm exec without a terminal: SIGINT forwarded, then detach", func(t *testing.T) {
		var stdout, stderr output
		c := e.cmd(ctx, append([]string{"vm", "exec", "cc", "--"}, trapINT(false)...)...)
		c.Stdout, c.Stderr = &stdout, &stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		stdout.wait(t, "ready", 60*time.Second)
		c.Process.Signal(syscall.SIGINT)
		stdout.wait(t, "got-INT", 30*time.Second)
		c.Process.Signal(syscall.SIGINT)
		if code := exitCode(t, c, 30*time.Second); code != 130 {
			t.Fatalf("exit %d after a second SIGINT, want 130; stderr:\n%s", code, stderr.String())
		}
		mustContain(t, "detach message", stderr.String(), "detached from the command in vm cc")
	})
	if v := e.inspect("cc"); v.State != "running" {
		t.Fatalf("vm cc after detaching: %+v", v)
	}
}
