package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/crashpoint"
)

// lossyDisk is a state directory on an ext4 of its own, in a loop file,
// mounted with a journal commit every 10 minutes: what banger did not
// sync is then almost surely not in the file yet. A copy of the file
// taken right after the daemon is killed is what the disk would hold had
// the host lost power there.
type lossyDisk struct {
	img, mnt string
}

func newLossyDisk(t *testing.T, e *env) *lossyDisk {
	t.Helper()
	d := &lossyDisk{img: filepath.Join(t.TempDir(), "state.img"), mnt: filepath.Join(e.home, "state")}
	if err := os.MkdirAll(d.mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "truncate", "-s", "8G", d.img)
	run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", d.img)
	d.mount(t, e, d.img, "commit=600")
	return d
}

// mount mounts img (the state's file system, or a copy of it) as e's
// state directory, with no daemon running: the next one sees it.
func (d *lossyDisk) mount(t *testing.T, e *env, img, opts string) {
	t.Helper()
	run(t, "mount", "-o", "loop,"+opts, img, d.mnt)
	e.mounts = []string{d.mnt}
	t.Cleanup(func() {
		// Before the env's teardown: its VMs and daemon live on this.
		e.banger("daemon", "stop")
		exec.Command("umount", "-l", d.mnt).Run()
	})
}

// cut copies the state's file system as it is on its disk now, without
// a sync: a power loss at this moment.
func (d *lossyDisk) cut(t *testing.T, name string) string {
	t.Helper()
	cp := filepath.Join(filepath.Dir(d.img), name+".img")
	run(t, "cp", "--sparse=always", d.img, cp)
	return cp
}

// Power loss during an image pull, a vm create and a snapshot: the
// daemon is killed at the point (the bangercrash build) and the state's
// disk copied as it stands, unsynced; a daemon started on each copy
// finds the state and the files agreeing, everything acknowledged before
// there and usable, and the half-made object complete or gone. (Issue
// 16, "Power loss".)
func TestPowerLoss(t *testing.T) {
	e := newEnv(t)
	e.bin = crashBins(t)
	d := newLossyDisk(t, e)
	e.ok("kernel", "import", "--deb", fixtureDeb(t), "--name", "fixture-k")
	e.ok("image", "register", "--name", "fixture", "--rootfs", filepath.Join(fixtures(t), "rootfs.ext4"), "--kernel-ref", "fixture-k")
	startRegistry(t, e)
	push := exec.Command("ip", "netns", "exec", e.ns, os.Args[0], "-test.run=^TestHelperPushCrashImage$", "-test.v")
	push.Env = append(os.Environ(), "BANGER_E2E_PUSH_CRASH="+registryAddr)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("pushing test/crash:1: %v\n%s", err, out)
	}
	e.ok("vm", "create", "--image", "fixture", "--name", "a", "--no-start")
	e.ok("vm", "create", "--image", "fixture", "--name", "src", "--memory", "512M")
	e.ok("vm", "exec", "src", "--", "sh", "-c", "echo before-snapshot > /root/mark; sync")

	type lossCase struct {
		point crashpoint.Point
		op    []string
		after func(t *testing.T)
	}
	cases := []lossCase{
		{crashpoint.ImageAfterCommit, []string{"image", "pull", registryAddr + "/test/crash:1", "--name", "crash", "--kernel-ref", "fixture-k"},
			func(t *testing.T) {
				// Committed (synced, renamed, its directory synced) before
				// the kill: it must be there, whole.
				if im := e.imageNamed("crash"); im.Rootfs == "" {
					t.Error("image crash has no rootfs")
				}
			}},
		{crashpoint.VMCreateAfterDisk, []string{"vm", "create", "--image", "fixture", "--name", "b", "--no-start"},
			func(t *testing.T) {
				if st := e.vmState("b"); st != "" {
					t.Errorf("vm b, half made at the power loss, is listed: %s", st)
				}
			}},
		{crashpoint.SnapshotAfterFreeze, []string{"vm", "snapshot", "src", "--name", "s1"},
			func(t *testing.T) {
				// Recorded ready before the kill: it must restore.
				e.ok("vm", "create", "--from-snapshot", "s1", "--name", "r1", "--memory", "512M")
				if got := e.ok("vm", "exec", "r1", "--", "cat", "/root/mark"); got != "before-snapshot\n" {
					t.Errorf("the vm restored from s1 after the power loss: /root/mark is %q", got)
				}
				e.ok("vm", "delete", "--force", "r1")
			}},
	}
	var copies []string
	for _, c := range cases {
		e.ok("daemon", "stop")
		e.extra = []string{crashpoint.EnvVar + "=" + string(c.point)}
		r := e.banger(c.op...)
		e.extra = nil
		if r.code == 0 {
			t.Fatalf("%s: banger %s succeeded: the daemon was never killed there", c.point, strings.Join(c.op, " "))
		}
		copies = append(copies, d.cut(t, strings.ReplaceAll(string(c.point), ".", "-")))
		t.Logf("%s: power cut (banger %s: %s)", c.point, strings.Join(c.op, " "), firstLine([]byte(r.stderr)))
		e.ok("vm", "list") // here the host goes on: a daemon starts and recovers
	}
	// The power is gone for the VMMs too.
	e.ok("vm", "stop", "--force", "src")
	e.ok("daemon", "stop")
	run(t, "umount", d.mnt)

	for i, c := range cases {
		t.Run(string(c.point), func(t *testing.T) {
			e.t = t
			start := time.Now()
			d.mount(t, e, copies[i], "errors=remount-ro")
			checkNoLeaks(t, e, 2)
			checkStateAgrees(t, e)
			if st := e.vmState("a"); st != "created" {
				t.Errorf("vm a, made before the power loss, is %q", st)
			}
			var vs []struct{ Name, Disk string }
			json.Unmarshal([]byte(e.ok("vm", "list", "--json")), &vs)
			e.imageNamed("fixture")
			c.after(t)
			t.Logf("%s: the next start is consistent (%d vms listed), checked in %s", c.point, len(vs), time.Since(start).Round(100*time.Millisecond))
			e.ok("daemon", "stop")
			run(t, "umount", d.mnt)
		})
	}
	e.t = t
}
