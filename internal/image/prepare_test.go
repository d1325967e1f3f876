package image

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPrepare(t *testing.T) {
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
			layers := memLayers(layer(t, tt.ents...))
			r, err := build(t, Limits{}, layers)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.prepare(context.Background(), agent)
			if err != nil {
				t.Fatal(err)
			}
			files := filesOf(t, r, layers)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("TreeInfo (-want +got):\n%s", diff)
			}
			for _, f := range tt.files {
				if _, ok := files[f]; !ok {
					t.Errorf("%s missing", f)
				}
			}
			if !strings.Contains(files["etc/inittab"], tt.inittab) {
				t.Errorf("inittab = %q, want it to contain %q", files["etc/inittab"], tt.inittab)
			}
			if _, ok := files["etc/inittab"]; tt.want.Init == "" && ok {
				t.Errorf("an image without init got an inittab")
			}
		})
	}
}

// Hostile shapes: banger's edits follow an image's symlinks only inside
// the image, files it reads must be small regular files, and nothing on
// the host is read or written.
func TestPrepareHostileImages(t *testing.T) {
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("agent"), 0o755)
	busybox := []ent{{name: "bin/busybox", body: "x"}, {name: "sbin/init", typ: tar.TypeSymlink, link: "/bin/busybox"}}
	tests := []struct {
		name  string
		ents  []ent
		err   string            // "" when it must succeed
		files map[string]string // path -> listing line after the name
	}{
		{"inittab symlinked to the host's shadow", append(busybox, ent{name: "etc/inittab", typ: tar.TypeSymlink, link: "/etc/shadow"}), "",
			map[string]string{"etc/inittab": "-rw-r--r-- 0:0 ::sysinit:/etc/init.d/rcS\n"}},
		{"inittab symlinked inside the image", append(busybox, ent{name: "etc/inittab", typ: tar.TypeSymlink, link: "../real"}, ent{name: "real", body: "::sysinit:/x\n"}), "",
			map[string]string{"etc/inittab": "Lrwxrwxrwx 0:0 -> ../real", "real": "-rw-r--r-- 0:0 ::sysinit:/x\n::respawn:"}},
		{"inittab as a char device", append(busybox, ent{name: "etc/inittab", typ: tar.TypeChar, major: 1, minor: 5}), "/etc/inittab is not a regular file", nil},
		{"inittab as a fifo", append(busybox, ent{name: "etc/inittab", typ: tar.TypeFifo}), "/etc/inittab is not a regular file", nil},
		{"huge inittab", append(busybox, ent{name: "etc/inittab", body: strings.Repeat("#", captureMax+1)}), "larger than 64 KiB", nil},
		{"os-release as a char device", append(busybox, ent{name: "etc/os-release", typ: tar.TypeChar, major: 1, minor: 5}), "",
			map[string]string{"etc/os-release": "Dcrw-r--r-- 0:0 1:5"}},
		{"os-release as a block device", append(busybox, ent{name: "etc/os-release", typ: tar.TypeBlock, major: 8, minor: 0}), "", nil},
		{"wants dir symlinked to a host dir", []ent{{name: "lib/systemd/systemd", body: "x"},
			{name: "etc/systemd/system/multi-user.target.wants", typ: tar.TypeSymlink, link: "/hostdir"}}, "",
			map[string]string{"hostdir/banger-agent.service": "Lrwxrwxrwx 0:0 -> /etc/systemd/system/banger-agent.service"}},
		{"usr/lib symlinked out of the root", []ent{{name: "usr/lib", typ: tar.TypeSymlink, link: "../../../../tmp"}}, "goes through symlink", nil},
		{"sshd_config without include", []ent{{name: "usr/sbin/sshd", body: "x"}, {name: "etc/ssh/sshd_config", body: "PermitRootLogin yes\n"}}, "",
			map[string]string{"etc/ssh/sshd_config": "-rw-r--r-- 0:0 # added by banger: per-VM settings live in sshd_config.d\n" + sshdInclude + "\n\nPermitRootLogin yes\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			layers := memLayers(layer(t, tt.ents...))
			r, err := build(t, Limits{}, layers)
			if err == nil {
				_, err = r.prepare(context.Background(), agent)
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			files := filesOf(t, r, layers)
			for p, want := range tt.files {
				if got := files[p]; !strings.HasPrefix(got, want) {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
		})
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

// filesOf is listing as a map from path to the rest of its line.
func filesOf(t *testing.T, r *rootfs, layers []layerSource) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, l := range listing(t, r, layers) {
		name, rest, _ := strings.Cut(l, " ")
		files[name] = rest
	}
	return files
}
