package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/prereq"
	"github.com/google/go-cmp/cmp"
)

// fixtureRepo makes a git repository with tracked, untracked and ignored
// files, a symlink, an executable script and a name with spaces and
// unicode.
func fixtureRepo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		prereq.Missing(t, "git is not installed")
	}
	dir := filepath.Join(t.TempDir(), "repo")
	files := map[string]string{
		"README.md":           "hello\n",
		".gitignore":          "*.log\nbuild/\n",
		"src/main.go":         "package main\n",
		"run.sh":              "#!/bin/sh\necho ran\n",
		"naïve file ü.txt":    "unicode\n",
		"untracked.txt":       "new\n",
		"debug.log":           "ignored\n",
		"build/out.bin":       "ignored\n",
		"docs/spaced name.md": "doc\n",
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "run.sh"), 0o755)
	os.Symlink("README.md", filepath.Join(dir, "link"))
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	git("add", "README.md", ".gitignore", "src", "run.sh", "naïve file ü.txt", "link", "docs")
	git("commit", "-qm", "init")
	return dir
}

func TestCollectGit(t *testing.T) {
	dir := fixtureRepo(t)
	s, err := Collect(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Git || s.Name != "repo" {
		t.Fatalf("set = %+v", s)
	}
	var got []string
	for _, f := range s.Files {
		if !strings.HasPrefix(f, ".git/") && f != ".git" {
			got = append(got, f)
		}
	}
	want := []string{".gitignore", "README.md", "docs/spaced name.md", "link", "naïve file ü.txt", "run.sh", "src/main.go", "untracked.txt"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if !contains(s.Files, ".git/HEAD") {
		t.Errorf(".git/HEAD missing from %v", s.Files)
	}
}

func TestCollectErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	// A .git that git cannot read: the copy must fail, not come out empty.
	broken := filepath.Join(dir, "broken")
	os.MkdirAll(filepath.Join(broken, ".git"), 0o755)
	os.WriteFile(filepath.Join(broken, "f"), []byte("x"), 0o644)
	for _, tc := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "nope"), "does not exist"},
		{"not a dir", file, "is not a directory"},
		{"broken git", broken, "git"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Collect(context.Background(), tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCollectPlainDir(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a/empty"), 0o755)
	os.WriteFile(filepath.Join(dir, "a/x"), []byte("x"), 0o644)
	s, err := Collect(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "a/empty", "a/x"}, s.Files); diff != "" || s.Git {
		t.Errorf("git=%v files (-want +got):\n%s", s.Git, diff)
	}
}

// A workspace survives a tar round trip: contents, modes, symlinks.
func TestTarRoundTrip(t *testing.T) {
	dir := fixtureRepo(t)
	s, err := Collect(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.WriteTar(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Fatalf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
	}
	out := t.TempDir()
	if err := Extract(context.Background(), &buf, out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"run.sh", "naïve file ü.txt", "docs/spaced name.md", "untracked.txt"} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: %v, content %q vs %q", f, err, a, b)
		}
	}
	if fi, _ := os.Stat(filepath.Join(out, "run.sh")); fi == nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("run.sh mode = %v, want 0755", fi)
	}
	if l, err := os.Readlink(filepath.Join(out, "link")); err != nil || l != "README.md" {
		t.Errorf("link = %q, %v", l, err)
	}
	if _, err := os.Stat(filepath.Join(out, "debug.log")); err == nil {
		t.Error("ignored debug.log was copied")
	}
}

func TestExtractRejectsEscapes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []tar.Header
	}{
		{"dotdot", []tar.Header{{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"absolute", []tar.Header{{Name: "/etc/evil", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"through symlink", []tar.Header{
			{Name: "out", Typeflag: tar.TypeSymlink, Linkname: "/tmp"},
			{Name: "out/evil", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"hardlink out", []tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range tc.entries {
				tw.WriteHeader(&h)
			}
			tw.Close()
			dest := filepath.Join(t.TempDir(), "d")
			if err := Extract(context.Background(), &buf, dest); err == nil {
				t.Fatal("escape was not rejected")
			}
			if _, err := os.Stat("/tmp/evil"); err == nil {
				t.Fatal("/tmp/evil was written")
			}
		})
	}
}

func TestCheckReadable(t *testing.T) {
	if os.Geteuid() == 0 {
		prereq.ByDesign(t, "root reads every file; run as a normal user")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "secret"), []byte("x"), 0o000)
	s, err := Collect(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckReadable(); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("err = %v, want one naming secret", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// CheckoutArgv does what --from and --branch promise; it runs here on the
// host's sh and git, as it would in a guest.
func TestCheckoutArgv(t *testing.T) {
	for _, tc := range []struct {
		name, from, branch, wantRef, wantReadme string
	}{
		{"from tag", "v1", "", "HEAD", "hello\n"},
		{"branch from tag", "v1", "feature", "feature", "hello\n"},
		{"branch from HEAD", "", "feature", "feature", "hello again\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := fixtureRepo(t)
			gitIn(t, dir, "tag", "v1")
			os.WriteFile(filepath.Join(dir, "README.md"), []byte("hello again\n"), 0o644)
			gitIn(t, dir, "commit", "-qam", "second")
			argv := CheckoutArgv(dir, tc.from, tc.branch)
			if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if got := strings.TrimSpace(gitIn(t, dir, "rev-parse", "--abbrev-ref", "HEAD")); got != tc.wantRef {
				t.Errorf("HEAD = %q, want %q", got, tc.wantRef)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "README.md")); string(b) != tc.wantReadme {
				t.Errorf("README = %q, want %q", b, tc.wantReadme)
			}
		})
	}
}

func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// A guest cannot plant world-writable (or setuid) files or directories on
// the host: export applies the umask.
func TestExtractAppliesUmask(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "open", Typeflag: tar.TypeDir, Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "open/f", Typeflag: tar.TypeReg, Mode: 0o4777, Size: 1})
	tw.Write([]byte("x"))
	tw.Close()
	dest := filepath.Join(t.TempDir(), "d")
	if err := Extract(context.Background(), &buf, dest); err != nil {
		t.Fatal(err)
	}
	mask := umask()
	if mask&0o002 == 0 {
		prereq.ByDesign(t, "umask %04o lets others write anyway", mask)
	}
	for _, p := range []string{"open", "open/f"} {
		fi, err := os.Stat(filepath.Join(dest, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&mask != 0 || fi.Mode()&os.ModeSetuid != 0 {
			t.Errorf("%s: mode %v, want the umask %04o applied", p, fi.Mode(), mask)
		}
	}
}
