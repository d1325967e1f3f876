package kernel

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/prereq"
	"github.com/google/go-cmp/cmp"
)

func TestCpioRoundTrip(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		prereq.Missing(t, "cpio not installed (apt-get install cpio)")
	}
	var buf bytes.Buffer
	w := newCpioWriter(&buf)
	big := bytes.Repeat([]byte("0123456789abcdef"), 70001) // odd size, not 4-aligned
	steps := []error{
		w.Dir("dev", 0o755),
		w.CharDev("dev/console", 0o600, 5, 1),
		w.Dir("lib", 0o755),
		w.File("lib/a.ko", 0o644, strings.NewReader("abc"), 3),
		w.File("/init", 0o755, bytes.NewReader(big[:len(big)-3]), int64(len(big)-3)),
		w.File("empty", 0o600, nil, 0),
		w.Symlink("sbin", "lib"),
		w.Close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-aligned", buf.Len())
	}

	t.Run("verify", func(t *testing.T) {
		dir := t.TempDir()
		good := filepath.Join(dir, "good")
		os.WriteFile(good, buf.Bytes(), 0o644)
		if err := VerifyInitrd(good); err != nil {
			t.Fatalf("VerifyInitrd(good) = %v", err)
		}
		for _, n := range []int{5, 110, 300, buf.Len() / 2, buf.Len() - 8} {
			bad := filepath.Join(dir, "bad")
			os.WriteFile(bad, buf.Bytes()[:n], 0o644)
			if err := VerifyInitrd(bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("truncated to %d bytes: err = %v, want ErrInvalid", n, err)
			}
		}
	})

	list := exec.Command("cpio", "-it", "--quiet")
	list.Stdin = bytes.NewReader(buf.Bytes())
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v: %s", err, out)
	}
	want := []string{"dev", "dev/console", "lib", "lib/a.ko", "init", "empty", "sbin"}
	if diff := cmp.Diff(want, strings.Fields(string(out))); diff != "" {
		t.Errorf("cpio -it listing (-want +got)\n%s", diff)
	}

	dir := t.TempDir()
	ext := exec.Command("cpio", "-i", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/console")
	ext.Dir = dir
	ext.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := ext.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "init"))
	if !bytes.Equal(got, big[:len(big)-3]) {
		t.Errorf("init content differs after round trip (%d bytes, want %d)", len(got), len(big)-3)
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("init mode: %v %v", st.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "sbin")); err != nil || l != "lib" {
		t.Errorf("sbin link = %q, %v", l, err)
	}
	if a, _ := os.ReadFile(filepath.Join(dir, "lib/a.ko")); string(a) != "abc" {
		t.Errorf("lib/a.ko = %q", a)
	}
}

func TestCpioShortReader(t *testing.T) {
	w := newCpioWriter(&bytes.Buffer{})
	if err := w.File("x", 0o644, strings.NewReader("ab"), 10); err == nil {
		t.Fatal("a reader shorter than the size must fail")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed write must report the error")
	}
}
