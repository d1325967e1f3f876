package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// entries lists dir, so a test sees every temp file left behind.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestWriteFileCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, tc := range []struct {
		data string
		mode fs.FileMode
	}{
		{"first", 0o600},
		{"second, longer", 0o644},
		{"x", 0o755 | fs.ModeSetgid},
	} {
		if err := WriteFile(p, []byte(tc.data), tc.mode); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != tc.data {
			t.Errorf("content = %q, %v; want %q", b, err, tc.data)
		}
		if fi, _ := os.Stat(p); fi.Mode() != tc.mode {
			t.Errorf("mode = %v, want %v (exact, whatever the umask)", fi.Mode(), tc.mode)
		}
	}
	if diff := cmp.Diff([]string{"state.json"}, entries(t, dir)); diff != "" {
		t.Errorf("directory (-want +got):\n%s", diff)
	}
}

// A failed fill leaves the old file as it was and no temp file behind.
func TestWriteFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := Write(p, 0o644, func(f *os.File) error {
		f.WriteString("half")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write = %v, want %v", err, boom)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("content = %q, want the old one", b)
	}
	if diff := cmp.Diff([]string{"f"}, entries(t, dir)); diff != "" {
		t.Errorf("directory (-want +got):\n%s", diff)
	}
}

// A symlink planted at path is replaced, not written through.
func TestWriteReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "f")
	if err := os.Symlink(victim, p); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if fi, _ := os.Lstat(p); !fi.Mode().IsRegular() {
		t.Errorf("%s is %v, want a regular file", p, fi.Mode())
	}
}

func TestWriteMissingDir(t *testing.T) {
	p := filepath.Join(t.TempDir(), "no", "f")
	if err := WriteFile(p, []byte("x"), 0o644); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WriteFile = %v, want fs.ErrNotExist", err)
	}
}

// The temp file is named .tmp-<base>-*: the image store's sweep of
// partial blobs after a crash relies on it.
func TestTempName(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "blob")
	var tmp string
	Write(p, 0o600, func(f *os.File) error {
		tmp = filepath.Base(f.Name())
		return errors.New("stop")
	})
	if ok, _ := filepath.Match(".tmp-blob-*", tmp); !ok {
		t.Errorf("temp file %q does not match .tmp-blob-*", tmp)
	}
}

// Replace gives what WriteFile does, bar the syncs: new content and mode,
// the old file replaced rather than written through, no temp file left.
func TestReplace(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "hostname")
	if err := os.WriteFile(p, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(dir, "link")
	if err := os.Link(p, keep); err != nil {
		t.Fatal(err)
	}
	if err := Replace(p, []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "new\n" {
		t.Errorf("content = %q, %v", b, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", st.Mode())
	}
	if b, _ := os.ReadFile(keep); string(b) != "old\n" {
		t.Errorf("the old file was written through: %q", b)
	}
	if diff := cmp.Diff([]string{"hostname", "link"}, entries(t, dir)); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if err := Replace(filepath.Join(dir, "no-such-dir", "f"), nil, 0o644); err == nil {
		t.Error("Replace into a missing directory succeeded")
	}
}
