package agent

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/guest"
)

// randReader is a deterministic stream of pseudo-random bytes.
type randReader struct{ r *rand.ChaCha8 }

func (r randReader) Read(p []byte) (int, error) { return r.r.Read(p) }

func TestPutGet100MiB(t *testing.T) {
	ta := startAgent(t, 0)
	path := filepath.Join(t.TempDir(), "new", "sub", "blob")
	const size = 100 << 20
	src := io.LimitReader(randReader{rand.NewChaCha8([32]byte{1})}, size)
	sent := sha256.New()
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	start := time.Now()
	err := ta.client.PutFile(callCtx(t, 120*time.Second), guest.PutRequest{
		Path: path, Mode: 0o640, UID: os.Getuid(), GID: os.Getgid(), MTime: mtime}, io.TeeReader(src, sent))
	if err != nil {
		t.Fatal(err)
	}
	putTime := time.Since(start)
	got := sha256.New()
	info, err := ta.client.Get(callCtx(t, 120*time.Second), path, got)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("100 MiB put in %v, get in %v", putTime, time.Since(start)-putTime)
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Error("sha256 of the file got back differs from the one put")
	}
	want := guest.FileInfo{Size: size, Mode: 0o640, UID: os.Getuid(), GID: os.Getgid(), MTime: mtime}
	if diff := cmp.Diff(want, info, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("file info (-want +got):\n%s", diff)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*")); len(leftovers) > 0 {
		t.Errorf("temp files left behind: %v", leftovers)
	}
}

func TestPutModes(t *testing.T) {
	ta := startAgent(t, 0)
	dir := t.TempDir()
	tests := []struct {
		name string
		mode fs.FileMode
	}{
		{"plain", 0o644},
		{"executable", 0o755},
		{"setuid", 0o4755 | fs.ModeSetuid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			// An existing file is replaced.
			if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := ta.client.Put(callCtx(t, 10*time.Second), p, tt.mode, os.Getuid(), os.Getgid(), strings.NewReader("new"))
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(p)
			wantMode := tt.mode & (fs.ModePerm | fs.ModeSetuid)
			if st.Mode() != wantMode || string(b) != "new" {
				t.Errorf("file = %v %q, want %v %q", st.Mode(), b, wantMode, "new")
			}
		})
	}
}

func TestFileErrors(t *testing.T) {
	ta := startAgent(t, 0)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := func() io.Reader { return io.LimitReader(randReader{rand.NewChaCha8([32]byte{2})}, 20<<20) }
	tests := []struct {
		name    string
		call    func() error
		wantErr string
	}{
		{"put relative path", func() error {
			return ta.client.Put(callCtx(t, 10*time.Second), "rel/path", 0o644, 0, 0, strings.NewReader("x"))
		}, "not absolute"},
		{"put under a file, large content", func() error {
			return ta.client.Put(callCtx(t, 20*time.Second), filepath.Join(file, "sub", "x"), 0o644, 0, 0, big())
		}, "creating parent"},
		{"get missing", func() error {
			_, err := ta.client.Get(callCtx(t, 10*time.Second), filepath.Join(dir, "missing"), io.Discard)
			return err
		}, "no such file"},
		{"get directory", func() error {
			_, err := ta.client.Get(callCtx(t, 10*time.Second), dir, io.Discard)
			return err
		}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	_, err := ta.client.Get(callCtx(t, 10*time.Second), filepath.Join(dir, "missing"), io.Discard)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get of a missing file: %v does not match fs.ErrNotExist", err)
	}
	// The session is still usable after the failures.
	if _, err := ta.client.Hello(callCtx(t, 5*time.Second)); err != nil {
		t.Error(err)
	}
}

// tarOf builds a tar stream of the given headers; regular files get their
// Linkname as content.
func tarOf(t *testing.T, hdrs ...*tar.Header) *bytes.Buffer {
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
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(h); err != nil {
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

// TestPutTar sends a tree over the protocol; it lands with the archive's
// owners, modes (setuid included) and mtimes. internal/untar tests the
// extraction itself.
func TestPutTar(t *testing.T) {
	ta := startAgent(t, 0)
	dir := filepath.Join(t.TempDir(), "ws")
	uid, gid := os.Getuid(), os.Getgid()
	stream := tarOf(t,
		&tar.Header{Name: "src/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: uid, Gid: gid},
		&tar.Header{Name: "src/main.go", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "package main\n", Uid: uid, Gid: gid},
		&tar.Header{Name: "deep/er/run", Typeflag: tar.TypeReg, Mode: 0o4755, Linkname: "#!/bin/sh\n", Uid: uid, Gid: gid},
		&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "src/main.go", Uid: uid, Gid: gid},
	)
	if err := ta.client.PutTar(callCtx(t, 10*time.Second), dir, stream); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{
		"src":         fs.ModeDir | 0o750,
		"src/main.go": 0o644,
		"deep/er/run": fs.ModeSetuid | 0o755,
		"link":        fs.ModeSymlink | 0o777,
	} {
		st, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode() != want || int(sys.Uid) != uid || int(sys.Gid) != gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", p, st.Mode(), sys.Uid, sys.Gid, want, uid, gid)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "link")); string(b) != "package main\n" {
		t.Errorf("through the link: %q", b)
	}
	if st, _ := os.Stat(filepath.Join(dir, "src", "main.go")); !st.ModTime().Equal(time.Unix(1700000000, 0)) {
		t.Errorf("mtime = %v", st.ModTime())
	}
}

func TestPutTarRefusesEscapes(t *testing.T) {
	ta := startAgent(t, 0)
	base := t.TempDir()
	dir := filepath.Join(base, "ws")
	tests := []struct {
		name string
		hdrs []*tar.Header
	}{
		{"dotdot", []*tar.Header{{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}},
		{"absolute", []*tar.Header{{Name: filepath.Join(base, "evil"), Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}},
		{"through symlink", []*tar.Header{
			{Name: "out", Typeflag: tar.TypeSymlink, Linkname: base},
			{Name: "out/evil", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}}},
		{"hard link out", []*tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ta.client.PutTar(callCtx(t, 10*time.Second), dir, tarOf(t, tt.hdrs...))
			if err == nil {
				t.Error("PutTar succeeded")
			}
			var re *guest.RemoteError
			if tt.name != "through symlink" && (!errors.As(err, &re) || re.Kind != guest.KindInvalid) {
				t.Errorf("PutTar = %v, want a refusal of kind %q", err, guest.KindInvalid)
			}
			if _, err := os.Lstat(filepath.Join(base, "evil")); err == nil {
				t.Error("a file was written outside the directory")
			}
		})
	}
}
