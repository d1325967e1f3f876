package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReapOrphans(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	mine := exec.Command("tail", "-F", filepath.Join(dir, "x"))
	theirs := exec.Command("tail", "-F", filepath.Join(other, "x"))
	for _, c := range []*exec.Cmd{mine, theirs} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	defer theirs.Process.Kill()
	// Until execve is done, /proc shows the test binary's command line.
	for _, c := range []*exec.Cmd{mine, theirs} {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c.Process.Pid))
			if strings.HasPrefix(string(b), "tail") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	killed := reapOrphans(dir)
	if len(killed) != 1 || killed[0] != mine.Process.Pid {
		t.Fatalf("killed %v, want [%d]", killed, mine.Process.Pid)
	}
	// It has exited by the time reapOrphans returns: a zombie, as the
	// test (its parent) has not reaped it yet.
	if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", mine.Process.Pid)); !strings.Contains(string(st), ") Z ") {
		t.Errorf("reapOrphans returned before the process exited: %s", st)
	}
	done := make(chan error, 1)
	go func() { done <- mine.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("orphan not killed")
	}
	if theirs.ProcessState != nil {
		t.Fatal("an unrelated process was killed")
	}
}
