package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"
)

// diskInfo is what vm inspect says of a VM's resources.
type diskInfo struct {
	VCPUs      int    `json:"vcpus"`
	MemoryMiB  int    `json:"memory_mib"`
	DiskBytes  int64  `json:"disk_bytes"`
	Dir        string `json:"dir"`
	ConsoleLog string `json:"console_log"`
	Disk       string `json:"disk"`
	DiskMethod string `json:"disk_method"`
}

func (e *env) diskInfo(name string) diskInfo {
	e.t.Helper()
	var d diskInfo
	if err := json.Unmarshal([]byte(e.ok("vm", "inspect", name)), &d); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// guestDF returns the size and free bytes of / in the guest, from df.
func guestDF(t *testing.T, out string) (size, avail int64) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) != 2 {
		t.Fatalf("df output:\n%s", out)
	}
	size, _ = strconv.ParseInt(f[0], 10, 64)
	avail, _ = strconv.ParseInt(f[1], 10, 64)
	return size, avail
}

// allocated is the bytes a file takes on the host's disk.
func allocated(t *testing.T, path string) (size, used int64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

// A fresh default VM has a 16 GiB root disk, at least 10 GiB free on /,
// grown online by the guest at boot; the file on the host is sparse;
// vm run --disk sizes it; a --disk below the image's size is refused
// with the minimum and leaves no VM behind.
func TestDiskDefaultAndGrow(t *testing.T) {
	e := bootEnv(t)
	var im struct {
		SizeBytes int64 `json:"size_bytes"`
	}
	json.Unmarshal([]byte(e.ok("image", "inspect", "fixture", "--json")), &im)
	minimum := strconv.FormatInt((im.SizeBytes+1<<20-1)>>20, 10) + "M"

	for _, args := range [][]string{
		{"vm", "create", "--image", "fixture", "--name", "small", "--disk", "100M"},
		{"vm", "run", "--image", "fixture", "--name", "small", "--disk", "100M", "--", "true"},
	} {
		msg := e.fails(args...)
		mustContain(t, args[1]+" --disk 100M", msg, "--disk 100M is smaller than image fixture", "at least "+minimum, "use --disk "+minimum+" or more")
	}
	if out := e.ok("vm", "list", "--json"); strings.Contains(out, "small") {
		t.Fatalf("a refused create left a VM:\n%s", out)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.home, "state", "vms")); len(ents) != 0 {
		t.Fatalf("a refused create left %d VM directories", len(ents))
	}

	out := e.ok("vm", "run", "--image", "fixture", "--name", "big", "--", "df", "-B1", "--output=size,avail", "/")
	size, avail := guestDF(t, out)
	t.Logf("default VM: / is %d MiB, %d MiB free", size>>20, avail>>20)
	if size < 15<<30 || avail < 10<<30 {
		t.Errorf("default VM: / is %d bytes with %d free, want about 16 GiB with at least 10 GiB free", size, avail)
	}
	d := e.diskInfo("big")
	if d.DiskBytes != 16<<30 || d.VCPUs != 2 || d.MemoryMiB != 1024 {
		t.Errorf("default VM: disk %d, %d vCPUs, %d MiB; want 16 GiB, 2, 1024", d.DiskBytes, d.VCPUs, d.MemoryMiB)
	}
	// The disk is a qcow2 layer over the image: the guest's writes only.
	fsize, used := allocated(t, d.Disk)
	t.Logf("host disk file (%s): %d MiB long, %d MiB allocated", d.DiskMethod, fsize>>20, used>>20)
	if d.DiskMethod != "qcow2-overlay" || !strings.HasPrefix(d.Disk, filepath.Join(e.home, "state", "layers")+"/") {
		t.Errorf("disk %s by %q, want a qcow2 layer in the layer store", d.Disk, d.DiskMethod)
	}
	if vsize := qcow2Size(t, d.Disk); vsize != 16<<30 || used > 1<<30 {
		t.Errorf("host disk is %d bytes (virtual) with %d allocated, want 16 GiB and thin (under 1 GiB)", vsize, used)
	}
	logs := e.ok("vm", "logs", "big")
	mustContain(t, "console log", logs, "root filesystem grown from "+strconv.FormatInt(im.SizeBytes>>20, 10)+" MiB to 16384 MiB")
	e.ok("vm", "delete", "--force", "big")

	out = e.ok("vm", "run", "--image", "fixture", "--name", "four", "--disk", "4G", "--cpus", "1", "--memory", "768M", "--rm",
		"--", "sh", "-c", "df -B1 --output=size,avail / && nproc && head -1 /proc/meminfo")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	size, _ = guestDF(t, strings.Join(lines[:2], "\n"))
	if size < 3<<30 || size > 4<<30 {
		t.Errorf("--disk 4G: / is %d bytes, want about 4 GiB\n%s", size, out)
	}
	if lines[2] != "1" {
		t.Errorf("--cpus 1: nproc says %s", lines[2])
	}
}

// An image built by tar2ext4 (as every pulled image is) has sparse_super2,
// which the kernel cannot grow online: the host grows it with resize2fs
// at create, and the default VM still has the whole disk on /.
func TestDiskGrowSparseSuper2Image(t *testing.T) {
	e := bootEnv(t)
	img := tar2ext4Fixture(t)
	e.ok("image", "register", "--name", "t2e", "--rootfs", img, "--kernel-ref", "generic-6.1")
	e.ok("vm", "create", "--image", "t2e", "--name", "t2e")
	out := e.ok("vm", "exec", "t2e", "--", "df", "-B1", "--output=size,avail", "/")
	size, avail := guestDF(t, out)
	t.Logf("sparse_super2 image: / is %d MiB, %d MiB free", size>>20, avail>>20)
	if size < 15<<30 || avail < 10<<30 {
		t.Errorf("/ is %d bytes with %d free, want about 16 GiB with at least 10 GiB free", size, avail)
	}
	d := e.diskInfo("t2e")
	if _, used := allocated(t, d.Disk); used > 1<<30 {
		t.Errorf("host disk file has %d bytes allocated, want it thin", used)
	}
	// The grown base is built once per (image, size): a second VM of it
	// adds a layer, not another base.
	bases := func() []string {
		m, _ := filepath.Glob(filepath.Join(e.home, "state", "layers", "base", "t2e@*"))
		return m
	}
	before := bases()
	e.ok("vm", "create", "--no-start", "--image", "t2e", "--name", "t2e-2")
	if after := bases(); len(after) != 1 || len(before) != 1 || !strings.HasSuffix(after[0], "-17179869184.raw") {
		t.Errorf("bases of t2e: %v then %v; want one grown to 16 GiB, unchanged by a second VM", before, after)
	}
}

// qcow2Size is the virtual size of a qcow2 file, from qemu-img.
func qcow2Size(t *testing.T, path string) int64 {
	t.Helper()
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "-U", "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	return info.VirtualSize
}

// tar2ext4Fixture rebuilds the fixture rootfs the way image pulls build
// theirs (internal/image buildExt4): tar2ext4 from a tar of its tree,
// then writable, 1200 MiB, with a journal.
func tar2ext4Fixture(t testing.TB) string {
	t.Helper()
	mnt := t.TempDir()
	run(t, "mount", "-o", "loop,ro", filepath.Join(fixtures(t), "rootfs.ext4"), mnt)
	defer run(t, "umount", mnt)
	img := filepath.Join(t.TempDir(), "t2e.ext4")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tarc := exec.Command("tar", "-C", mnt, "-cf", "-", ".")
	stdout, _ := tarc.StdoutPipe()
	if err := tarc.Start(); err != nil {
		t.Fatal(err)
	}
	if err := tar2ext4.ConvertTarToExt4(stdout, f, tar2ext4.MaximumDiskSize(4<<40)); err != nil {
		t.Fatal(err)
	}
	if err := tarc.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"tune2fs", "-O", "^read-only", img}, {"e2fsck", "-fy", img},
		{"resize2fs", img, "1200M"}, {"tune2fs", "-O", "has_journal", "-L", "rootfs", img}} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) && args[0] == "e2fsck" && ee.ExitCode() == 1 {
			err = nil // errors corrected
		}
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	if out := run(t, "dumpe2fs", "-h", img); !strings.Contains(out, "sparse_super2") {
		t.Fatalf("the tar2ext4 rebuild has no sparse_super2:\n%s", out)
	}
	return img
}
