package daemon

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestReapOrphans(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	mine := exec.Command("sleep", "60", filepath.Join(dir, "x"))
	theirs := exec.Command("sleep", "60", filepath.Join(other, "x"))
	for _, c := range []*exec.Cmd{mine, theirs} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	defer theirs.Process.Kill()
	killed := reapOrphans(dir)
	if len(killed) != 1 || killed[0] != mine.Process.Pid {
		t.Fatalf("killed %v, want [%d]", killed, mine.Process.Pid)
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
