package disk

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"banger/internal/ext4"
	"banger/internal/prereq"
)

func mkfs(t *testing.T, size string) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		prereq.Missing(t, "mkfs.ext4 not installed (apt-get install e2fsprogs)")
	}
	img := filepath.Join(t.TempDir(), "img.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, out)
	}
	return img
}

func TestCloneKeepsContentAndHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, _ := os.Create(src)
	f.Truncate(64 << 20)
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("middle"), 32<<20)
	f.WriteAt([]byte("tail"), 64<<20-4)
	f.Close()

	dst := filepath.Join(dir, "dst")
	method, err := Clone(context.Background(), src, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatalf("clone (%s) differs from source", method)
	}
	if method == MethodSparse {
		var st, dt = statBlocks(t, src), statBlocks(t, dst)
		if dt > st+64 {
			t.Fatalf("sparse copy allocated %d blocks, source %d", dt, st)
		}
	}
	if _, err := Clone(context.Background(), src, dst, nil); err == nil {
		t.Fatal("clone over an existing file succeeded")
	}
}

func statBlocks(t *testing.T, p string) int64 {
	t.Helper()
	out, err := exec.Command("stat", "-c", "%b", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, c := range bytes.TrimSpace(out) {
		n = n*10 + int64(c-'0')
	}
	return n
}

func TestIsExt4(t *testing.T) {
	img := mkfs(t, "8M")
	if err := IsExt4(img); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, bytes.Repeat([]byte{1}, 4096), 0o644)
	if err := IsExt4(junk); err == nil {
		t.Fatal("junk accepted as ext4")
	}
}

func TestCopyInAndGrow(t *testing.T) {
	ctx := context.Background()
	img := mkfs(t, "16M")
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "usr/lib/banger"), 0o755)
	os.WriteFile(filepath.Join(tree, "usr/lib/banger/agent"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("/usr/lib/banger/agent", filepath.Join(tree, "usr/lib/banger/link"))
	if err := CopyIn(ctx, img, tree); err != nil {
		t.Fatal(err)
	}
	// A second copy replaces files in place.
	os.WriteFile(filepath.Join(tree, "usr/lib/banger/agent"), []byte("v2"), 0o755)
	if err := CopyIn(ctx, img, tree); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(ctx, img, "/usr/lib/banger/agent")
	if err != nil || string(got) != "v2" {
		t.Fatalf("read back %q, %v", got, err)
	}
	if !Exists(ctx, img, "/usr/lib/banger/link") {
		t.Fatal("symlink missing")
	}
	if Exists(ctx, img, "/nope") {
		t.Fatal("missing path reported present")
	}
	// mkfs.ext4's filesystem grows online in the guest: here only the
	// file grows.
	if how, err := Grow(ctx, img, 64<<20); err != nil || how != GrowGuest {
		t.Fatalf("Grow = %q, %v; want %q", how, err, GrowGuest)
	}
	if st, _ := os.Stat(img); st.Size() != 64<<20 {
		t.Fatalf("size after grow = %d", st.Size())
	}
	if sb, _ := ext4.ReadSuperFile(img); sb.Size() != 16<<20 {
		t.Fatalf("filesystem after a guest-side grow is %d bytes, want it untouched (16M)", sb.Size())
	}
	if got, _ := ReadFile(ctx, img, "/usr/lib/banger/agent"); string(got) != "v2" {
		t.Fatal("content lost by grow")
	}
	if how, err := Grow(ctx, img, 32<<20); err != nil || how != GrowNone {
		t.Fatalf("shrinking Grow = %q, %v; want nothing done", how, err)
	}
}

// A filesystem the kernel cannot grow online (here: no journal) is grown
// by resize2fs on the host, without e2fsck when it was never mounted, and
// after e2fsck when it was mounted since its last check. The file stays
// sparse and the content stays.
func TestGrowOffline(t *testing.T) {
	ctx := context.Background()
	for _, mounted := range []bool{false, true} {
		img := filepath.Join(t.TempDir(), "img.ext4")
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "^has_journal", img, "32M").CombinedOutput(); err != nil {
			prereq.Missing(t, "mkfs.ext4 (e2fsprogs): %v: %s", err, out)
		}
		if err := debugfs(ctx, img, "write /etc/hostname /keep\n"); err != nil {
			t.Fatal(err)
		}
		if mounted {
			// As if mounted after its last check: resize2fs wants e2fsck.
			if err := debugfs(ctx, img, "ssv mtime 20990101\n"); err != nil {
				t.Fatal(err)
			}
		}
		how, err := Grow(ctx, img, 1<<30)
		if err != nil || how != GrowOffline {
			t.Fatalf("mounted %t: Grow = %q, %v; want %q", mounted, how, err, GrowOffline)
		}
		sb, _ := ext4.ReadSuperFile(img)
		if sb.Size() != 1<<30 {
			t.Errorf("mounted %t: filesystem is %d bytes, want 1 GiB", mounted, sb.Size())
		}
		var st syscall.Stat_t
		syscall.Stat(img, &st)
		if st.Blocks*512 > 64<<20 {
			t.Errorf("mounted %t: %d bytes allocated for a 1 GiB disk, want it sparse", mounted, st.Blocks*512)
		}
		if !Exists(ctx, img, "/keep") {
			t.Errorf("mounted %t: content lost by grow", mounted)
		}
	}
}

// debugfs exits 0 when a command fails; CopyIn must not.
func TestDebugfsFailureIsAnError(t *testing.T) {
	img := mkfs(t, "8M")
	err := debugfs(context.Background(), img, "write /nonexistent/file /x\n")
	if err == nil {
		t.Fatal("a failed debugfs write was not reported")
	}
	if err := debugfs(context.Background(), img, "mkdir /lost+found\nrm /nope\n"); err != nil {
		t.Fatalf("the expected complaints of an idempotent copy are errors: %v", err)
	}
}

func TestCloneIsPrivate(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst")
	if _, err := Clone(context.Background(), src, dst, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("clone mode %04o, want 0600", fi.Mode().Perm())
	}
}
