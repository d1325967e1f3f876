package untar

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/prereq"
)

var mtime = time.Unix(1700000000, 0)

// tarOf builds a tar stream of the given headers; regular files get their
// Linkname as content.
func tarOf(t *testing.T, hdrs ...tar.Header) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		var body []byte
		if h.Typeflag == tar.TypeReg {
			body, h.Linkname = []byte(h.Linkname), ""
			h.Size = int64(len(body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = mtime
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// tree describes dir: each entry's mode, with a symlink's target or a
// regular file's content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := st.Mode().String()
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case st.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			desc += " " + string(b)
		}
		got[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestExtract(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ws")
	uid, gid := os.Getuid(), os.Getgid()
	stream := tarOf(t,
		tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700, Uid: uid, Gid: gid},
		tar.Header{Name: "src/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: uid, Gid: gid},
		tar.Header{Name: "src/main.go", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "package main\n", Uid: uid, Gid: gid},
		tar.Header{Name: "./deep/er/run.sh", Typeflag: tar.TypeReg, Mode: 0o755, Linkname: "#!/bin/sh\n", Uid: uid, Gid: gid},
		tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "src/main.go", Uid: uid, Gid: gid},
		tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "src/main.go"},
		tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o644},
	)
	if err := Extract(context.Background(), stream, dir, Options{Owners: true}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		".":              "drwxr-xr-x", // created 0755; the archive's "./" is ignored
		"src":            "drwxr-x---",
		"src/main.go":    "-rw-r--r-- package main\n",
		"deep":           "drwxr-xr-x",
		"deep/er":        "drwxr-xr-x",
		"deep/er/run.sh": "-rwxr-xr-x #!/bin/sh\n",
		"link":           "Lrwxrwxrwx -> src/main.go",
		"hard":           "-rw-r--r-- package main\n",
	}
	if diff := cmp.Diff(want, tree(t, dir)); diff != "" {
		t.Errorf("extracted tree (-want +got):\n%s", diff)
	}
	for _, p := range []string{"src", "src/main.go"} {
		if st, _ := os.Stat(filepath.Join(dir, p)); !st.ModTime().Equal(mtime) {
			t.Errorf("%s: mtime = %v, want %v", p, st.ModTime(), mtime)
		}
	}
}

func TestExtractRefusesEscapes(t *testing.T) {
	tests := []struct {
		name string
		hdrs func(outside string) []tar.Header
	}{
		{"dotdot", func(string) []tar.Header {
			return []tar.Header{{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}
		}},
		{"dotdot inside", func(string) []tar.Header {
			return []tar.Header{{Name: "a/../../evil", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}
		}},
		{"absolute", func(outside string) []tar.Header {
			return []tar.Header{{Name: filepath.Join(outside, "evil"), Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}
		}},
		{"through absolute symlink", func(outside string) []tar.Header {
			return []tar.Header{
				{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside},
				{Name: "out/evil", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}
		}},
		{"through relative symlink", func(string) []tar.Header {
			return []tar.Header{
				{Name: "out", Typeflag: tar.TypeSymlink, Linkname: ".."},
				{Name: "out/evil", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}
		}},
		{"hard link out", func(string) []tar.Header {
			return []tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}
		}},
		{"hard link to an absolute path", func(outside string) []tar.Header {
			return []tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: filepath.Join(outside, "victim")}}
		}},
		{"file naming the directory", func(string) []tar.Header {
			return []tar.Header{{Name: ".", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outside := t.TempDir()
			victim := filepath.Join(outside, "victim")
			if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(outside, "ws")
			if err := Extract(context.Background(), tarOf(t, tt.hdrs(outside)...), dir, Options{}); err == nil {
				t.Error("Extract succeeded")
			}
			if _, err := os.Lstat(filepath.Join(outside, "evil")); err == nil {
				t.Error("a file was written outside the directory")
			}
			if b, _ := os.ReadFile(victim); string(b) != "untouched" {
				t.Errorf("the file outside now holds %q", b)
			}
			if ents, _ := os.ReadDir(outside); len(ents) > 2 {
				t.Errorf("the directory outside now holds %d entries", len(ents))
			}
		})
	}
}

// Names that are refused come back as ErrUnsafe, so the agent can tell
// the host its request was invalid.
func TestExtractErrUnsafe(t *testing.T) {
	dir := t.TempDir()
	err := Extract(context.Background(), tarOf(t, tar.Header{Name: "../x", Typeflag: tar.TypeDir, Mode: 0o755}), dir, Options{})
	if !errors.Is(err, ErrUnsafe) {
		t.Errorf("Extract = %v, want ErrUnsafe", err)
	}
	err = Extract(context.Background(), tarOf(t, tar.Header{Name: "x", Typeflag: tar.TypeReg, Mode: 0o755}), filepath.Join(dir, "f", "\x00"), Options{})
	if err == nil || errors.Is(err, ErrUnsafe) {
		t.Errorf("Extract into a bad directory = %v, want an error that is not ErrUnsafe", err)
	}
}

// A symlink already in the directory is not followed either.
func TestExtractSymlinkAlreadyThere(t *testing.T) {
	outside := t.TempDir()
	dir := filepath.Join(outside, "ws")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	err := Extract(context.Background(), tarOf(t, tar.Header{Name: "out/evil", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}), dir, Options{})
	if err == nil {
		t.Error("Extract succeeded")
	}
	if _, err := os.Lstat(filepath.Join(outside, "evil")); err == nil {
		t.Error("a file was written through the symlink")
	}
}

// The archive wins over what the directory holds, without writing
// through what was there.
func TestExtractReplaces(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(outside, "ws")
	for _, p := range []string{"dir-to-file/sub", "dir-stays"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, content := range map[string]string{"file": "old", "file-to-dir": "old", "dir-stays/keep": "kept", "shared": "shared"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(dir, "shared"), filepath.Join(dir, "hardlinked")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "symlinked")); err != nil {
		t.Fatal(err)
	}
	stream := tarOf(t,
		tar.Header{Name: "file", Typeflag: tar.TypeReg, Mode: 0o600, Linkname: "new"},
		tar.Header{Name: "hardlinked", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "new"},
		tar.Header{Name: "symlinked", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "new"},
		tar.Header{Name: "dir-to-file", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "new"},
		tar.Header{Name: "file-to-dir", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "dir-stays", Typeflag: tar.TypeDir, Mode: 0o700},
	)
	if err := Extract(context.Background(), stream, dir, Options{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		".":              "drwxr-xr-x",
		"file":           "-rw------- new",
		"hardlinked":     "-rw-r--r-- new",
		"shared":         "-rw-r--r-- shared",
		"symlinked":      "-rw-r--r-- new",
		"dir-to-file":    "-rw-r--r-- new",
		"file-to-dir":    "drwxr-xr-x",
		"dir-stays":      "drwx------",
		"dir-stays/keep": "-rw-r--r-- kept",
	}
	if diff := cmp.Diff(want, tree(t, dir)); diff != "" {
		t.Errorf("extracted tree (-want +got):\n%s", diff)
	}
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Errorf("a symlink in the directory was written through: victim holds %q", b)
	}
}

// Without Owners the setuid, setgid and sticky bits go, and Umask is
// cleared from every mode; with Owners the bits and the owner stay.
func TestExtractModes(t *testing.T) {
	uid, gid := os.Getuid(), os.Getgid()
	hdrs := []tar.Header{
		{Name: "open", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: uid, Gid: gid},
		{Name: "open/f", Typeflag: tar.TypeReg, Mode: 0o6777, Linkname: "x", Uid: uid, Gid: gid},
	}
	tests := []struct {
		name      string
		opts      Options
		dir, file fs.FileMode
	}{
		{"umask", Options{Umask: 0o022}, fs.ModeDir | 0o755, 0o755},
		{"owners", Options{Owners: true}, fs.ModeDir | fs.ModeSticky | 0o777, fs.ModeSetuid | fs.ModeSetgid | 0o777},
		{"owners and umask", Options{Owners: true, Umask: 0o077}, fs.ModeDir | fs.ModeSticky | 0o700, fs.ModeSetuid | fs.ModeSetgid | 0o700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			if err := Extract(context.Background(), tarOf(t, hdrs...), dir, tt.opts); err != nil {
				t.Fatal(err)
			}
			for p, want := range map[string]fs.FileMode{"open": tt.dir, "open/f": tt.file} {
				fi, err := os.Stat(filepath.Join(dir, p))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != want {
					t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
				}
			}
		})
	}
}

// As root, Owners gives each entry the archive's owner.
func TestExtractOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root to give files to another uid")
	}
	hdrs := []tar.Header{
		{Name: "d", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1234, Gid: 2345},
		{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o4755, Linkname: "x", Uid: 1234, Gid: 2345},
		{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "d/f", Uid: 1234, Gid: 2345},
	}
	for _, owners := range []bool{true, false} {
		dir := filepath.Join(t.TempDir(), "d")
		if err := Extract(context.Background(), tarOf(t, hdrs...), dir, Options{Owners: owners}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"d", "d/f", "l"} {
			fi, err := os.Lstat(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			wantUID, wantGID := uint32(0), uint32(0)
			if owners {
				wantUID, wantGID = 1234, 2345
			}
			if st.Uid != wantUID || st.Gid != wantGID {
				t.Errorf("owners=%v: %s owned by %d:%d, want %d:%d", owners, p, st.Uid, st.Gid, wantUID, wantGID)
			}
		}
		if fi, _ := os.Stat(filepath.Join(dir, "d/f")); (fi.Mode()&fs.ModeSetuid != 0) != owners {
			t.Errorf("owners=%v: d/f mode %v", owners, fi.Mode())
		}
	}
}

func TestExtractStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := filepath.Join(t.TempDir(), "d")
	err := Extract(ctx, tarOf(t, tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}), dir, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Extract = %v, want context.Canceled", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "f")); err == nil {
		t.Error("an entry was extracted after the context was done")
	}
}

func TestExtractBadStream(t *testing.T) {
	stream := tarOf(t, tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "some content"})
	truncated := bytes.NewReader(stream.Bytes()[:520])
	if err := Extract(context.Background(), truncated, t.TempDir(), Options{}); err == nil {
		t.Error("Extract of a truncated stream succeeded")
	}
}
