package diskspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/prereq"
)

func TestIsFull(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{syscall.ENOSPC, true},
		{&fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, true},
		{fmt.Errorf("saving: %w", syscall.EDQUOT), true},
		{errors.New("migration: write failed: No space left on device"), true},
		{syscall.EIO, false},
		{fs.ErrNotExist, false},
	} {
		if got := IsFull(tc.err); got != tc.want {
			t.Errorf("IsFull(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestDescribeNamesTheMount(t *testing.T) {
	if os.Geteuid() != 0 {
		prereq.Missing(t, "mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "a mount")
	os.Mkdir(mnt, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "banger-test", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	sub := filepath.Join(mnt, "sub")
	os.Mkdir(sub, 0o700)
	got := Describe(sub)
	if want := "the file system at " + mnt + " (tmpfs, 8 MiB free)"; got != want {
		t.Errorf("Describe(%s) = %q, want %q", sub, got, want)
	}
	if got, want := Describe(filepath.Join(sub, "gone", "too")), "the file system at "+mnt+" (tmpfs, 8 MiB free)"; got != want {
		t.Errorf("Describe of a path that is not there = %q, want %q", got, want)
	}
	if got := Describe(dir); strings.Contains(got, mnt) || !strings.Contains(got, "MiB free") {
		t.Errorf("Describe(%s) = %q: names the mount below it, or no free space", dir, got)
	}
}

func TestDir(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&fs.PathError{Op: "write", Path: "/state/vms/x/root.qcow2", Err: syscall.ENOSPC}, "/state/vms/x"},
		{fmt.Errorf("making the disk: %w", &os.LinkError{Op: "rename", Old: "/a/.tmp", New: "/a/b", Err: syscall.ENOSPC}), "/a"},
		{&fs.PathError{Op: "write", Path: "relative", Err: syscall.ENOSPC}, "/fallback"},
		{errors.New("qemu-img: No space left on device"), "/fallback"},
	} {
		if got := Dir(tc.err, "/fallback"); got != tc.want {
			t.Errorf("Dir(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
