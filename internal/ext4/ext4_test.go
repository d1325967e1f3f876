package ext4

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"

	"banger/internal/prereq"
)

// mkfs makes an ext4 image of size with mkfs.ext4, as the e2e fixture
// and image register's users make theirs.
func mkfs(t *testing.T, size string, opts ...string) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		prereq.Missing(t, "mkfs.ext4 not installed (apt-get install e2fsprogs)")
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	args := append([]string{"-q", "-F"}, opts...)
	if out, err := exec.Command("mkfs.ext4", append(args, img, size)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// tarExt4 builds an image the way banger's pulls do: tar2ext4, then a
// journal (internal/image finishExt4).
func tarExt4(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("tune2fs"); err != nil {
		prereq.Missing(t, "tune2fs not installed (apt-get install e2fsprogs)")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello"))
	tw.Close()
	img := filepath.Join(t.TempDir(), "t2e.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := tar2ext4.ConvertTarToExt4(&buf, f, tar2ext4.MaximumDiskSize(64<<30)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, args := range [][]string{{"tune2fs", "-O", "^read-only", img}, {"e2fsck", "-fy", img},
		{"resize2fs", img, "64M"}, {"tune2fs", "-O", "has_journal", img}} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok && args[0] == "e2fsck" && ee.ExitCode() == 1 {
			err = nil // errors corrected
		}
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	return img
}

func TestReadSuper(t *testing.T) {
	img := mkfs(t, "64M", "-b", "4096")
	s, err := ReadSuperFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if s.BlockSize != 4096 || s.Size() != 64<<20 {
		t.Errorf("block size %d, size %d; want 4096 and %d", s.BlockSize, s.Size(), 64<<20)
	}
	if err := s.OnlineGrowable(); err != nil {
		t.Errorf("a mkfs.ext4 filesystem is not online-growable: %v", err)
	}
	if s.NeedsCheck() {
		t.Error("a fresh, never-mounted filesystem needs a check")
	}
	s.MountTime = s.CheckTime + 1
	if !s.NeedsCheck() {
		t.Error("a filesystem mounted after its last check needs none")
	}
}

func TestTar2ext4IsNotOnlineGrowable(t *testing.T) {
	s, err := ReadSuperFile(tarExt4(t))
	if err != nil {
		t.Fatal(err)
	}
	err = s.OnlineGrowable()
	if err == nil || !strings.Contains(err.Error(), "sparse_super2") {
		t.Fatalf("OnlineGrowable of a tar2ext4 filesystem = %v, want a sparse_super2 refusal", err)
	}
	if s.NeedsCheck() {
		t.Error("a fresh tar2ext4 filesystem needs a check")
	}
}

func TestNoJournalIsNotOnlineGrowable(t *testing.T) {
	s, err := ReadSuperFile(mkfs(t, "64M", "-O", "^has_journal"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.OnlineGrowable(); err == nil || !strings.Contains(err.Error(), "journal") {
		t.Fatalf("OnlineGrowable without a journal = %v", err)
	}
}

func TestReadSuperRejects(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{"short": []byte("tiny"), "zeros": make([]byte, 4096)} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		if _, err := ReadSuperFile(p); !errors.Is(err, ErrNotExt4) {
			t.Errorf("%s: err %v, want ErrNotExt4", name, err)
		}
	}
}
