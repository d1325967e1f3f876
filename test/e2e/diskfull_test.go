package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A disk that fills is met with a small tmpfs over one directory of the
// state, mounted while no daemon runs: the next one (started by ip netns
// exec, in a mount namespace copied from this one) sees it, and a
// remount that makes room is seen by all.
func fullTmpfs(t *testing.T, e *env, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	e.ok("daemon", "stop")
	run(t, "mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "banger-e2e-full", dir)
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

// An image pull onto a full file system: a clear error naming it and
// its free space, no image listed or left in the store, the daemon
// serving; with room made, the same pull works.
func TestPullDiskFull(t *testing.T) {
	e := newEnv(t)
	e.ok("kernel", "import", "--deb", fixtureDeb(t), "--name", "generic-6.1")
	startRegistry(t, e)
	pushImages(t, e)
	images := filepath.Join(e.home, "state", "images")
	fullTmpfs(t, e, images, "1m")
	pull := []string{"image", "pull", registryAddr + "/test/bbinit:1", "--name", "bb", "--kernel-ref", "generic-6.1"}

	msg := e.fails(pull...)
	t.Logf("pull onto a full file system: %s", strings.TrimSpace(msg))
	mustContain(t, "pull on a full file system", msg, images, "the file system at "+images+" (tmpfs,", "MiB free", "free some space",
		"hint: free space there")
	if strings.Contains(e.ok("image", "list", "--json"), `"bb"`) {
		t.Error("the image of the failed pull is listed")
	}
	if ents, _ := os.ReadDir(images); len(ents) != 0 {
		t.Errorf("left in %s: %v", images, ents)
	}
	e.ok("vm", "list") // the daemon serves on

	run(t, "mount", "-o", "remount,size=512m", images)
	e.ok(pull...)
	if im := e.imageNamed("bb"); !strings.HasPrefix(im.Rootfs, images) {
		t.Errorf("bb's rootfs %s is not in the store %s", im.Rootfs, images)
	}
}

// vm create onto a full file system (the VMs' directory full to the last
// block): a clear error naming it, no VM listed, no directory, tap or
// lease left; with room made, the same create boots. Then a session's
// output fills its directory: the session runs on, attach works, its
// list entry and logs say why the host copy waits; with room made, the
// copy catches up to the byte and the session's end is recorded.
func TestCreateAndSessionLogsDiskFull(t *testing.T) {
	e := bootEnv(t)
	vms := filepath.Join(e.home, "state", "vms")
	fullTmpfs(t, e, vms, "1m")
	exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(vms, ".fill"), "bs=4k", "status=none").Run() // to the last block: ENOSPC

	msg := e.fails("vm", "create", "--image", "fixture", "--name", "full")
	t.Logf("create onto a full file system: %s", strings.TrimSpace(msg))
	mustContain(t, "create on a full file system", msg, "the file system at "+vms+" (tmpfs,", "MiB free", "is full",
		"nothing of the vm was kept", "free space there")
	if e.vmState("full") != "" {
		t.Errorf("vm full is listed after the failed create: %s", e.vmState("full"))
	}
	if ents, _ := os.ReadDir(vms); len(ents) != 1 {
		t.Errorf("left in %s: %v", vms, ents)
	}
	os.Remove(filepath.Join(vms, ".fill"))
	checkNoLeaks(t, e, 2)

	// Room for the guest's memory file too (1 GiB, sparse).
	run(t, "mount", "-o", "remount,size=2g", vms)
	e.ok("vm", "create", "--image", "fixture", "--name", "full")
	if got := e.ok("vm", "exec", "full", "--", "echo", "ok"); got != "ok\n" {
		t.Fatalf("exec in the vm made once there was room: %q", got)
	}

	// The session's directory gets a file system of its own, 1 MiB, and
	// the session writes 3 MiB, then waits for a line on stdin.
	sdir := filepath.Join(vms, e.inspect("full").ID, "sessions")
	fullTmpfs(t, e, sdir, "1m")
	const total = 3 << 20
	e.ok("vm", "session", "start", "full", "--name", "big", "--",
		"sh", "-c", "head -c 3145728 /dev/zero | tr '\\0' x; read line; echo \"got $line\"")
	var s sessionInfo
	waitFor(t, 60*time.Second, "the session's warning of a full disk", func() bool {
		s = e.sessions("full")["big"]
		return s.Warning != ""
	})
	t.Logf("session on a full disk: state %s, %d bytes mirrored, warning: %s", s.State, s.StdoutBytes, s.Warning)
	if s.State != "running" {
		t.Errorf("the session on a full disk is %s (%s), want running", s.State, s.Reason)
	}
	mustContain(t, "the session's warning", s.Warning, "the file system at "+sdir+" (tmpfs,", "is full", "the guest keeps the output")
	r := e.banger("vm", "session", "logs", "full", "big", "--stream", "stdout")
	if r.code != 0 || !strings.Contains(r.stderr, "warning: session big of vm full:") {
		t.Errorf("session logs on a full disk: exit %d, stderr %q", r.code, r.stderr)
	}
	if got := e.ok("vm", "exec", "full", "--", "echo", "ok"); got != "ok\n" {
		t.Errorf("exec while the session's disk is full: %q", got)
	}

	// Room again: the copy catches up, the session goes on and ends.
	run(t, "mount", "-o", "remount,size=64m", sdir)
	e.bangerIn([]byte("hello\n"), "vm", "session", "attach", "full", "big")
	waitFor(t, 60*time.Second, "the session to end, recorded", func() bool {
		s = e.sessions("full")["big"]
		return s.State != "running"
	})
	if s.State != "exited" || s.Warning != "" {
		t.Errorf("the session once there was room: %+v", s)
	}
	out := e.ok("vm", "session", "logs", "full", "big", "--stream", "stdout")
	if want := strings.Repeat("x", total) + "got hello\n"; out != want {
		t.Errorf("the session's logs: %d bytes (ends %q), want %d", len(out), out[max(0, len(out)-20):], len(want))
	}
}
