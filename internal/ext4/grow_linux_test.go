package ext4

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/prereq"
)

// loopMount mounts img on a loop device (needs root) and returns the
// mount point and the device.
func loopMount(t *testing.T, img string) (dir, dev string) {
	t.Helper()
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root to mount an image on a loop device")
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		prereq.Missing(t, "no loop device (losetup --find: %v: %s)", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	dir = t.TempDir()
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		t.Fatalf("mounting %s: %v", dev, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, 0) })
	return dir, dev
}

// The guest's grow, on the host's kernel: a mounted mkfs.ext4 filesystem
// in a file grown from 64 MiB to 1 GiB fills it, keeps its files, and a
// second call has nothing to do.
func TestGrowMounted(t *testing.T) {
	if !hasCapSysResource() {
		prereq.ByDesign(t, "growing a mounted ext4 needs CAP_SYS_RESOURCE, which this sandbox withholds (the e2e tests grow a booted guest's root)")
	}
	img := mkfs(t, "64M")
	if err := os.Truncate(img, 1<<30); err != nil {
		t.Fatal(err)
	}
	dir, _ := loopMount(t, img)
	os.WriteFile(filepath.Join(dir, "keep"), []byte("data"), 0o644)
	from, to, err := GrowMounted(dir, "") // the device found from dir
	if err != nil {
		t.Fatal(err)
	}
	if from != 64<<20 || to != 1<<30 {
		t.Errorf("grew from %d to %d, want %d to %d", from, to, 64<<20, 1<<30)
	}
	var st unix.Statfs_t
	unix.Statfs(dir, &st)
	if size := int64(st.Blocks) * st.Bsize; size < 900<<20 {
		t.Errorf("statfs after the grow: %d bytes, want about 1 GiB", size)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keep")); err != nil || string(b) != "data" {
		t.Errorf("file after the grow: %q, %v", b, err)
	}
	if from, to, err := GrowMounted(dir, ""); err != nil || from != to {
		t.Errorf("second grow: %d -> %d, %v; want nothing done", from, to, err)
	}
}

// A sparse_super2 filesystem (tar2ext4's) is left alone, with no error:
// the host grows those offline.
func TestGrowMountedSkipsSparseSuper2(t *testing.T) {
	img := tarExt4(t)
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	dir, dev := loopMount(t, img)
	from, to, err := GrowMounted(dir, dev)
	if err != nil || from != to || to >= 256<<20 {
		t.Fatalf("GrowMounted = %d, %d, %v; want it left as it was", from, to, err)
	}
}

func hasCapSysResource() bool {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}
