package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The snapshot commands reach the daemon and refuse bad input clearly;
// nothing boots. (Snapshots of running VMs need the QEMU driver's
// snapshot support; their end-to-end tests come with it.)
func TestSnapshotCommandsBadInput(t *testing.T) {
	e := newEnv(t)
	if out := strings.TrimSpace(e.ok("snapshot", "list", "--json")); out != "[]" {
		t.Errorf("snapshot list --json with none: %q", out)
	}
	mustContain(t, "snapshot inspect", e.fails("snapshot", "inspect", "nope"), `snapshot "nope" does not exist`, "banger snapshot list")
	mustContain(t, "snapshot delete", e.fails("snapshot", "delete", "nope"), `snapshot "nope" does not exist`)
	mustContain(t, "vm snapshot", e.fails("vm", "snapshot", "nope"), `vm "nope" does not exist`)
	mustContain(t, "vm pause", e.fails("vm", "pause", "nope"), `vm "nope" does not exist`)
	mustContain(t, "vm fork", e.fails("vm", "fork", "nope"), "--name")
	mustContain(t, "vm create --from-snapshot", e.fails("vm", "create", "--from-snapshot", "nope", "--name", "x"), `snapshot "nope" does not exist`)
	if out := e.ok("vm", "list", "--json"); strings.Contains(out, `"x"`) {
		t.Errorf("a refused restore left a vm:\n%s", out)
	}
}

// vm pause stops a QEMU guest's clock-driven work and vm resume lets it
// go on: a counter the guest bumps every 0.1 s does not move while paused.
func TestPauseResumeQEMU(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "p", "--memory", "512M")
	e.ok("vm", "session", "start", "p", "--name", "counter", "--stdin-mode", "null", "--",
		"sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done")
	count := func() string {
		return strings.TrimSpace(e.ok("vm", "exec", "p", "--", "sh", "-c", "cat /tmp/n 2>/dev/null || echo 0"))
	}
	pollUntil(t, 20*time.Second, "the counter runs", func() bool { return count() != "0" })
	before := count()
	mustContain(t, "vm pause", e.ok("vm", "pause", "p"), "p paused")
	if st := e.inspect("p").State; st != "paused" {
		t.Errorf("state %q while paused", st)
	}
	mustContain(t, "pause of a paused vm", e.fails("vm", "pause", "p"), "only a running vm can pause")
	time.Sleep(2 * time.Second)
	mustContain(t, "vm resume", e.ok("vm", "resume", "p"), "p running")
	after := count()
	// 2 s paused are 20 ticks; the exec round trips around it add a few.
	b, _ := strconv.Atoi(before)
	a, _ := strconv.Atoi(after)
	t.Logf("counter %d before the pause, %d right after the resume", b, a)
	if a-b > 15 {
		t.Errorf("the counter went from %d to %d across a 2 s pause: the guest ran while paused", b, a)
	}
	time.Sleep(time.Second)
	if c, _ := strconv.Atoi(count()); c <= a {
		t.Errorf("the counter stays at %d after resume", c)
	}
}

// A snapshot that fills its file system (a 16 MiB tmpfs over the
// snapshots directory, so the VMs' own files have room): a clear error
// naming the file system, nothing listed or left behind, the VM runs on;
// with room made, the same command works and a VM made from it runs.
func TestSnapshotDiskFull(t *testing.T) {
	e := bootEnv(t)
	snaps := filepath.Join(e.home, "state", "snapshots")
	if err := os.MkdirAll(snaps, 0o700); err != nil {
		t.Fatal(err)
	}
	// Mounted with no daemon running: the next one (started by ip netns
	// exec, in a mount namespace copied from this one) sees it.
	e.ok("daemon", "stop")
	run(t, "mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "banger-e2e-full", snaps)
	t.Cleanup(func() { exec.Command("umount", "-l", snaps).Run() })
	e.ok("vm", "create", "--image", "fixture", "--name", "full")

	r := e.banger("vm", "snapshot", "full", "--name", "s-full")
	if r.code == 0 {
		t.Fatal("a snapshot of a 1 GiB vm onto a 16 MiB file system succeeded")
	}
	t.Logf("snapshot onto a full file system: %s", strings.TrimSpace(r.stderr))
	mustContain(t, "snapshot on a full file system", r.stderr, snaps, "is full", "MiB free", "nothing of the snapshot was kept", "free space there")
	if out := strings.TrimSpace(e.ok("snapshot", "list", "--json")); out != "[]" {
		t.Errorf("snapshots listed after the failure: %s", out)
	}
	if ents, _ := os.ReadDir(snaps); len(ents) != 0 {
		t.Errorf("left in %s: %v", snaps, ents)
	}
	if got := e.ok("vm", "exec", "full", "--", "echo", "ok"); got != "ok\n" || e.inspect("full").State != "running" {
		t.Errorf("the vm after the failed snapshot: exec %q, state %s", got, e.inspect("full").State)
	}

	run(t, "mount", "-o", "remount,size=2g", snaps)
	e.ok("vm", "snapshot", "full", "--name", "s-full")
	e.ok("vm", "create", "--from-snapshot", "s-full", "--name", "full2")
	if got := e.ok("vm", "exec", "full2", "--", "echo", "ok"); got != "ok\n" {
		t.Errorf("full2 (from the snapshot made once there was room): exec %q", got)
	}
}
