package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/prereq"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// ent is one tar entry for a test layer.
type ent struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
	xattrs           map[string]string
	major, minor     int64
}

var mtime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

func layer(t *testing.T, ents ...ent) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Uid: e.uid, Gid: e.gid, Size: int64(len(e.body)),
			Linkname: e.link, ModTime: mtime, Devmajor: e.major, Devminor: e.minor, Format: tar.FormatPAX}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords[xattrPAX+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return &buf
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		prereq.Missing(t, "flattening needs root (chown, mknod, security xattrs)")
	}
}

// tree lists root as "path type mode uid:gid [-> link | body]" lines.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(root, p)
		line := rel + " " + fi.Mode().String() + " " + itoa(st.Uid) + ":" + itoa(st.Gid)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		out = append(out, line)
		return nil
	})
	return out
}

func itoa(u uint32) string { return strconv.FormatUint(uint64(u), 10) }

func TestFlattenEntries(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	l1 := layer(t,
		ent{name: "etc/", typ: tar.TypeDir},
		ent{name: "etc/passwd", body: "root"},
		ent{name: "bin/", typ: tar.TypeDir},
		ent{name: "bin/su", body: "su", mode: 0o4755},
		ent{name: "bin/wall", body: "wall", mode: 0o2755, gid: 5},
		ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "home/u/", typ: tar.TypeDir, uid: 1000, gid: 1000},
		ent{name: "home/u/f", body: "mine", uid: 1000, gid: 1000, mode: 0o600},
		ent{name: "bin/ping", body: "ping", mode: 0o755, xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
		ent{name: "bin/sh-hard", typ: tar.TypeLink, link: "bin/su"},
		ent{name: "abs", typ: tar.TypeSymlink, link: "/etc/passwd"},
		ent{name: "bin/rel", typ: tar.TypeSymlink, link: "../etc"},
		ent{name: "dev/", typ: tar.TypeDir},
		ent{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3, mode: 0o666},
		ent{name: "dev/loop9", typ: tar.TypeBlock, major: 7, minor: 9, mode: 0o660},
		ent{name: "run/fifo", typ: tar.TypeFifo, mode: 0o644},
		ent{name: "old/", typ: tar.TypeDir},
		ent{name: "old/a", body: "a"},
		ent{name: "opq/", typ: tar.TypeDir},
		ent{name: "opq/lower", body: "lower"},
		ent{name: "opq/sub/", typ: tar.TypeDir},
		ent{name: "opq/sub/lower", body: "lower"},
		ent{name: "usr/lib/", typ: tar.TypeDir},
		ent{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		ent{name: "opq2/", typ: tar.TypeDir},
		ent{name: "opq2/lower", body: "lower"},
	)
	l2 := layer(t,
		ent{name: "old/.wh.a"},
		ent{name: ".wh.old"},
		ent{name: "opq/upper", body: "upper"},
		ent{name: "opq/sub/", typ: tar.TypeDir},
		ent{name: "opq/.wh..wh..opq"},
		ent{name: "opq2/deep/file", body: "deep"}, // parents implied, then made opaque
		ent{name: "opq2/.wh..wh..opq"},
		ent{name: "etc/passwd", body: "root2"},
		ent{name: "lib/mod.ko", body: "ko"}, // through the symlink: lands in usr/lib
		ent{name: "bin/rel/hosts", body: "hosts"},
	)
	if err := Flatten(context.Background(), root, l1, l2); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"abs Lrwxrwxrwx 0:0 -> /etc/passwd",
		"bin drwxr-xr-x 0:0",
		"bin/ping -rwxr-xr-x 0:0 ping",
		"bin/rel Lrwxrwxrwx 0:0 -> ../etc",
		"bin/sh-hard urwxr-xr-x 0:0 su",
		"bin/su urwxr-xr-x 0:0 su",
		"bin/wall grwxr-xr-x 0:5 wall",
		"dev drwxr-xr-x 0:0",
		"dev/loop9 Drw-rw---- 0:0",
		"dev/null Dcrw-rw-rw- 0:0",
		"etc drwxr-xr-x 0:0",
		"etc/hosts -rw-r--r-- 0:0 hosts",
		"etc/passwd -rw-r--r-- 0:0 root2",
		"home drwxr-xr-x 0:0",
		"home/u drwxr-xr-x 1000:1000",
		"home/u/f -rw------- 1000:1000 mine",
		"lib Lrwxrwxrwx 0:0 -> usr/lib",
		"opq drwxr-xr-x 0:0",
		"opq/sub drwxr-xr-x 0:0",
		"opq/upper -rw-r--r-- 0:0 upper",
		"opq2 drwxr-xr-x 0:0",
		"opq2/deep drwxr-xr-x 0:0",
		"opq2/deep/file -rw-r--r-- 0:0 deep",
		"run drwxr-xr-x 0:0",
		"run/fifo prw-r--r-- 0:0",
		"tmp dtrwxrwxrwx 0:0",
		"usr drwxr-xr-x 0:0",
		"usr/lib drwxr-xr-x 0:0",
		"usr/lib/mod.ko -rw-r--r-- 0:0 ko",
	}
	if diff := cmp.Diff(want, tree(t, root)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(root, "bin/su"), &a)
	unix.Lstat(filepath.Join(root, "bin/sh-hard"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hardlink: inodes %d/%d nlink %d, want the same inode, nlink 2", a.Ino, b.Ino, a.Nlink)
	}
	if st, _ := os.Stat(filepath.Join(root, "dev/null")); st != nil {
		if rdev := st.Sys().(*syscall.Stat_t).Rdev; unix.Major(rdev) != 1 || unix.Minor(rdev) != 3 {
			t.Errorf("dev/null is %d:%d, want 1:3", unix.Major(rdev), unix.Minor(rdev))
		}
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(root, "bin/ping"), "security.capability", buf); err != nil || n != 20 {
		t.Errorf("security.capability on bin/ping: %d bytes, %v", n, err)
	}
	for _, p := range []string{"etc", "home/u/f", "bin/su"} {
		if st, _ := os.Lstat(filepath.Join(root, p)); st == nil || !st.ModTime().Equal(mtime) {
			t.Errorf("%s mtime = %v, want %v", p, st.ModTime(), mtime)
		}
	}
}

func TestFlattenRejectsEscapes(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name  string
		ents  []ent
		entry string
	}{
		{"dotdot", []ent{{name: "../evil", body: "x"}}, "../evil"},
		{"dotdot inside", []ent{{name: "a/../../evil", body: "x"}}, "a/../../evil"},
		{"relative symlink dir", []ent{{name: "up", typ: tar.TypeSymlink, link: "../../.."}, {name: "up/evil", body: "x"}}, "up/evil"},
		{"chained symlinks", []ent{{name: "a", typ: tar.TypeSymlink, link: "b/.."}, {name: "b", typ: tar.TypeSymlink, link: ".."}, {name: "a/evil", body: "x"}}, "a/evil"},
		{"absolute symlink dotdot", []ent{{name: "abs", typ: tar.TypeSymlink, link: "/../tmp"}, {name: "abs/evil", body: "x"}}, "abs/evil"},
		{"hardlink out", []ent{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}}, "../../etc/passwd"},
		{"hardlink through symlink", []ent{{name: "up", typ: tar.TypeSymlink, link: ".."}, {name: "h", typ: tar.TypeLink, link: "up/etc/passwd"}}, "up/etc/passwd"},
		{"whiteout through symlink", []ent{{name: "up", typ: tar.TypeSymlink, link: "../.."}, {name: "up/.wh.passwd"}}, "up/.wh.passwd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			root := filepath.Join(parent, "a", "root")
			os.MkdirAll(root, 0o755)
			err := Flatten(context.Background(), root, layer(t, tt.ents...))
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Fatalf("err = %v, want ErrUnsafeEntry", err)
			}
			if !strings.Contains(err.Error(), tt.entry) {
				t.Errorf("error %q does not name entry %q", err, tt.entry)
			}
			ents, _ := os.ReadDir(filepath.Join(parent, "a"))
			if len(ents) != 1 {
				t.Errorf("something was written outside the root: %v", ents)
			}
		})
	}
}

func TestFlattenAbsoluteSymlinkStaysInRoot(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	l := layer(t, ent{name: "etc", typ: tar.TypeSymlink, link: "/real"}, ent{name: "real/", typ: tar.TypeDir}, ent{name: "etc/x", body: "x"})
	if err := Flatten(context.Background(), root, l); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "real/x")); err != nil || string(b) != "x" {
		t.Errorf("real/x = %q, %v; want x", b, err)
	}
}

func TestFlattenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Flatten(ctx, t.TempDir(), layer(t, ent{name: "a", body: "a"}))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
