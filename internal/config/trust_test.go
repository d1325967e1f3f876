package config

import (
	"banger/internal/prereq"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckTrustedDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := mk("good", 0o755)
	groupW := mk("groupw", 0o775)
	otherW := mk("otherw", 0o757)
	sticky := mk("sticky", 0o1777)
	link := filepath.Join(base, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	underSticky := filepath.Join(sticky, "state")
	if err := os.Mkdir(underSticky, 0o711); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		want      []string // substrings of the error; nil: no error
	}{
		{"private dir", good, nil},
		{"group writable", groupW, []string{"writable by group or others", "chmod go-w " + groupW}},
		{"other writable", otherW, []string{"writable by group or others", "mode 0757"}},
		{"under group writable", filepath.Join(groupW, "x"), []string{groupW + " is writable"}},
		{"symlink", link, []string{link + " is a symlink", "BANGER_HOME to the real path: " + good}},
		{"under symlink", filepath.Join(link, "state"), []string{link + " is a symlink"}},
		{"sticky itself", sticky, []string{"writable by group or others"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := MkdirTrusted(tc.dir, 0o711)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("MkdirTrusted(%s) = %v, want nil", tc.dir, err)
				}
				return
			}
			if !errors.Is(err, ErrUntrusted) {
				t.Fatalf("MkdirTrusted(%s) = %v, want ErrUntrusted", tc.dir, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if os.Getuid() == 0 && isRootStickyOK(t, sticky) {
		if err := CheckTrustedDir(underSticky); err != nil {
			t.Errorf("a dir under a root-owned sticky dir: %v, want nil", err)
		}
	}
	// Nothing was created under the refused directories.
	for _, p := range []string{filepath.Join(groupW, "x"), filepath.Join(good, "state")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created under a refused directory", p)
		}
	}
}

func isRootStickyOK(t *testing.T, dir string) bool {
	t.Helper()
	fi, err := os.Stat(dir)
	return err == nil && fi.Mode()&os.ModeSticky != 0
}

func TestCheckTrustedDirOwner(t *testing.T) {
	if os.Getuid() != 0 {
		prereq.Missing(t, "needs root to give a directory to another uid")
	}
	t.Setenv("SUDO_UID", "")
	dir := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 54321, 54321); err != nil {
		t.Fatal(err)
	}
	err := CheckTrustedDir(dir)
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "owned by uid 54321") {
		t.Fatalf("CheckTrustedDir of a dir owned by uid 54321 = %v", err)
	}
	t.Setenv("SUDO_UID", "54321")
	if err := CheckTrustedDir(dir); err != nil {
		t.Fatalf("the sudo user's own dir: %v, want nil", err)
	}
}

func TestLoadRefusesUntrustedConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(p, []byte("vmm = \"qemu\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(p); err != nil {
		t.Fatalf("a private config: %v", err)
	}
	for _, mode := range []os.FileMode{0o620, 0o602, 0o666} {
		os.Chmod(p, mode)
		_, _, err := Load(p)
		if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "chmod go-w "+p) {
			t.Errorf("config mode %04o: Load = %v, want a refusal saying chmod go-w", mode, err)
		}
	}
	if os.Getuid() == 0 {
		os.Chmod(p, 0o644)
		t.Setenv("SUDO_UID", "")
		os.Chown(p, 54321, 54321)
		if _, _, err := Load(p); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "owned by uid 54321") {
			t.Errorf("config owned by another uid: Load = %v", err)
		}
	}
}
