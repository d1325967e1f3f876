package image

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPrepareTree(t *testing.T) {
	needRoot(t)
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("agent"), 0o755)
	osr := ent{name: "etc/os-release", body: "ID=debian\nVERSION_CODENAME=bookworm\n"}
	tests := []struct {
		name    string
		ents    []ent
		want    TreeInfo
		files   []string // must exist afterwards
		inittab string   // must be in /etc/inittab
	}{
		{"systemd with sshd", []ent{osr, {name: "usr/lib/systemd/systemd", body: "x"}, {name: "lib", typ: tar.TypeSymlink, link: "usr/lib"}, {name: "usr/sbin/sshd", body: "x"}},
			TreeInfo{Distro: "debian-bookworm", HasSSHD: true, Init: "systemd"},
			[]string{"usr/lib/banger/banger-agent", "etc/systemd/system/multi-user.target.wants/banger-agent.service"}, ""},
		{"systemd without sshd", []ent{{name: "lib/systemd/systemd", body: "x"}},
			TreeInfo{Init: "systemd"},
			[]string{"etc/systemd/system/multi-user.target.wants/" + sshdUnitName, "usr/lib/banger/install-sshd"}, ""},
		{"busybox init", []ent{{name: "bin/busybox", body: "x"}, {name: "sbin/init", typ: tar.TypeSymlink, link: "/bin/busybox"}},
			TreeInfo{Init: "busybox"}, []string{"usr/lib/banger/install-sshd"}, "::respawn:/usr/lib/banger/banger-agent\n::once:/usr/lib/banger/install-sshd\n"},
		{"sysvinit", []ent{{name: "sbin/init", body: "x"}, {name: "etc/inittab", body: "id:2:initdefault:"}},
			TreeInfo{Init: "sysvinit"}, nil, "id:2:initdefault:\nbgr:2345:respawn:/usr/lib/banger/banger-agent\n"},
		{"no init", []ent{{name: "bin/app", body: "x"}},
			TreeInfo{}, []string{"usr/lib/banger/banger-agent"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if err := Flatten(context.Background(), root, layer(t, tt.ents...)); err != nil {
				t.Fatal(err)
			}
			got, err := PrepareTree(root, agent)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("TreeInfo (-want +got):\n%s", diff)
			}
			for _, f := range tt.files {
				if _, err := os.Lstat(filepath.Join(root, f)); err != nil {
					t.Errorf("%s missing: %v", f, err)
				}
			}
			b, _ := os.ReadFile(filepath.Join(root, "etc/inittab"))
			if !strings.Contains(string(b), tt.inittab) {
				t.Errorf("inittab = %q, want it to contain %q", b, tt.inittab)
			}
			if tt.want.Init == "" {
				if _, err := os.Stat(filepath.Join(root, "etc/inittab")); err == nil {
					t.Errorf("an image without init got an inittab")
				}
			}
		})
	}
}

// An image whose /usr/lib is an absolute symlink must not make banger
// write to the host's /usr/lib.
func TestPrepareTreeRefusesHostSymlinks(t *testing.T) {
	needRoot(t)
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("agent"), 0o755)
	outside := t.TempDir()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr"), 0o755)
	os.Symlink(outside, filepath.Join(root, "usr/lib")) // what a hostile tree could hold
	_, err := PrepareTree(root, agent)
	if !errors.Is(err, ErrUnsafeEntry) {
		t.Fatalf("err = %v, want ErrUnsafeEntry", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("banger wrote outside the tree: %v", ents)
	}
}

func TestDefaultName(t *testing.T) {
	for _, tt := range []struct{ ref, want string }{
		{"docker.io/library/alpine:3.20", "alpine-3.20"},
		{"localhost:5000/team/dev:1", "dev-1"},
		{"ubuntu", "ubuntu-latest"},
		{"ghcr.io/o/img_x:V1.0", "img_x-v1.0"},
		{"alpine@sha256:" + strings.Repeat("ab", 32), "alpine-abababababab"},
	} {
		t.Run(tt.ref, func(t *testing.T) {
			r, err := ParseRef(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			if got := DefaultName(r); got != tt.want {
				t.Errorf("DefaultName(%s) = %q, want %q", tt.ref, got, tt.want)
			}
			if err := ValidName(DefaultName(r)); err != nil {
				t.Error(err)
			}
		})
	}
}
