package e2e

import (
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
