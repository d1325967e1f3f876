package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchBaselines runs the bare side of each benchmark once on a small
// input, with the command lines built by the benchmarks' own code, so a
// baseline that cannot start (a bare QEMU missing a drive, a pipe that
// does not parse) fails here, in every CI run, rather than in make bench.
func TestBenchBaselines(t *testing.T) {
	e := bootEnv(t)
	t.Run("BootToAgentReady", func(t *testing.T) {
		var k struct{ Kernel, Initrd string }
		json.Unmarshal([]byte(e.ok("kernel", "inspect", "generic-6.1", "--json")), &k)
		t.Logf("bare qemu to a busybox init: %s", bareBoot(t, k.Kernel, k.Initrd, bareInitRoot(t)))
	})
	t.Run("SSHTrue and WorkspaceCopy", func(t *testing.T) {
		bv := newBareVM(t, e, "baseline")
		key := filepath.Join(e.home, "config", "ssh", "id_ed25519")
		d, stop := bv.sshTrue(t, key)
		defer stop()
		t.Logf("cp + bare qemu to sshd + ssh true: %s", d)
		repo := bigRepo(t, filepath.Join(t.TempDir(), "small"), 20, 64)
		ssh := fmt.Sprintf("ssh -i %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes root@%s", key, bv.ip)
		for _, withGit := range []bool{false, true} {
			dest := fmt.Sprintf("/root/copy-%t", withGit)
			run(t, "ip", "netns", "exec", e.ns, "sh", "-c", barePipe(repo, ssh, dest, withGit))
			n := strings.TrimSpace(run(t, "ip", "netns", "exec", e.ns, "sh", "-c", ssh+" 'find "+dest+" -name \"f*.txt\" | wc -l'"))
			if n != "20" {
				t.Errorf("bare workspace pipe (withGit %t) copied %s files, want 20", withGit, n)
			}
		}
	})
	t.Run("ImagePull", func(t *testing.T) {
		startRegistry(t, e)
		pushImages(t, e)
		dir := barePull(t, e, buildCrane(t), registryAddr+"/test/noinit:1", 64<<20)
		if _, err := os.Stat(filepath.Join(dir, "tree", "bin", "busybox")); err != nil {
			t.Errorf("bare crane export | tar left no bin/busybox: %v", err)
		}
	})
	t.Run("VMCreate2GiB", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "src.ext4")
		run(t, "truncate", "-s", "64M", src)
		dst := filepath.Join(t.TempDir(), "dst.ext4")
		run(t, "cp", "--reflink=auto", src, dst)
		run(t, "sh", "-c", "cp --sparse=always \"$0\" \"$1\" && sync -f \"$1\"", src, dst)
	})
}
