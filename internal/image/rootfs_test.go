package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/prereq"
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
		prereq.Missing(t, "reading a host tree needs root (ownership, device nodes, security xattrs)")
	}
}

// memLayer is a layer held in memory.
type memLayer []byte

func (m memLayer) each(ctx context.Context, fn func(int, *tar.Header, io.Reader) error) error {
	return tarLayer{open: func() (io.Reader, func() error, func(), error) {
		return bytes.NewReader(m), nil, func() {}, nil
	}}.each(ctx, fn)
}

func memLayers(bufs ...*bytes.Buffer) []layerSource {
	out := make([]layerSource, len(bufs))
	for i, b := range bufs {
		out[i] = memLayer(b.Bytes())
	}
	return out
}

// build reads layers into a tree with limits.
func build(t *testing.T, l Limits, layers []layerSource) (*rootfs, error) {
	t.Helper()
	r := newRootfs(l)
	return r, r.readLayers(context.Background(), layers, func(string, int64, int64) {})
}

// listing emits the tree as the tar stream tar2ext4 gets and lists it
// as "path mode uid:gid [-> link | body]" lines, hardlinks as "=> target".
// It also checks the stream's order: parents first, link targets first.
func listing(t *testing.T, r *rootfs, layers []layerSource) []string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := r.emit(context.Background(), tw, layers); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	tr := tar.NewReader(&buf)
	seen := map[string]bool{"": true}
	var out []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(hdr.Name, "./"), "/")
		if name == "" {
			continue
		}
		if dir := filepath.Dir(name); dir != "." && !seen[dir] && hdr.Typeflag == tar.TypeDir {
			t.Errorf("%s comes before its parent", name)
		}
		if hdr.Typeflag == tar.TypeLink && !seen[hdr.Linkname] {
			t.Errorf("hardlink %s comes before its target %s", name, hdr.Linkname)
		}
		seen[name] = true
		line := name + " " + hdr.FileInfo().Mode().String() + " " + strconv.Itoa(hdr.Uid) + ":" + strconv.Itoa(hdr.Gid)
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			line += " -> " + hdr.Linkname
		case tar.TypeLink:
			line = name + " => " + hdr.Linkname
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			line += " " + string(b)
		case tar.TypeChar, tar.TypeBlock:
			line += " " + strconv.FormatInt(hdr.Devmajor, 10) + ":" + strconv.FormatInt(hdr.Devminor, 10)
		}
		if hdr.PAXRecords[xattrPAX+"security.capability"] != "" {
			line += " +cap"
		}
		if !hdr.ModTime.Equal(mtime) && hdr.Typeflag != tar.TypeLink {
			line += " mtime=" + hdr.ModTime.String()
		}
		out = append(out, line)
	}
	sort.Strings(out)
	return out
}

func TestRootfsLayers(t *testing.T) {
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
	layers := memLayers(l1, l2)
	r, err := build(t, Limits{}, layers)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"abs Lrwxrwxrwx 0:0 -> /etc/passwd",
		"bin drwxr-xr-x 0:0",
		"bin/ping -rwxr-xr-x 0:0 ping +cap",
		"bin/rel Lrwxrwxrwx 0:0 -> ../etc",
		"bin/sh-hard urwxr-xr-x 0:0 su",
		"bin/su => bin/sh-hard",
		"bin/wall grwxr-xr-x 0:5 wall",
		"dev drwxr-xr-x 0:0",
		"dev/loop9 Drw-rw---- 0:0 7:9",
		"dev/null Dcrw-rw-rw- 0:0 1:3",
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
	if diff := cmp.Diff(want, listing(t, r, layers)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
}

func TestRootfsRejectsEscapes(t *testing.T) {
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
			_, err := build(t, Limits{}, memLayers(layer(t, tt.ents...)))
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Fatalf("err = %v, want ErrUnsafeEntry", err)
			}
			if !strings.Contains(err.Error(), tt.entry) {
				t.Errorf("error %q does not name entry %q", err, tt.entry)
			}
		})
	}
}

func TestRootfsAbsoluteSymlinkStaysInRoot(t *testing.T) {
	layers := memLayers(layer(t, ent{name: "etc", typ: tar.TypeSymlink, link: "/real"}, ent{name: "real/", typ: tar.TypeDir}, ent{name: "etc/x", body: "x"}))
	r, err := build(t, Limits{}, layers)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"etc Lrwxrwxrwx 0:0 -> /real", "real drwxr-xr-x 0:0", "real/x -rw-r--r-- 0:0 x"}
	if diff := cmp.Diff(want, listing(t, r, layers)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
}

// A hardlink keeps the content of the file it named even when a later
// layer replaces that file; the replaced name gets the new content.
func TestRootfsHardlinkToReplacedFile(t *testing.T) {
	layers := memLayers(
		layer(t, ent{name: "a", body: "old"}, ent{name: "b", typ: tar.TypeLink, link: "a"}),
		layer(t, ent{name: "a", body: "new"}),
	)
	r, err := build(t, Limits{}, layers)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a -rw-r--r-- 0:0 new", "b -rw-r--r-- 0:0 old"}
	if diff := cmp.Diff(want, listing(t, r, layers)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
}

func TestRootfsLimits(t *testing.T) {
	big := layer(t, ent{name: "bomb", body: strings.Repeat("\x00", 1<<20)})
	many := layer(t, ent{name: "a", body: "a"}, ent{name: "b", body: "b"}, ent{name: "c", body: "c"})
	for _, tt := range []struct {
		name   string
		limits Limits
		layers []layerSource
		msg    string
	}{
		{"bytes", Limits{Bytes: 1 << 19}, memLayers(big), "512KiB of file data at \"bomb\""},
		{"bytes over layers", Limits{Bytes: 3 << 19}, memLayers(big, big), "layer 2: image exceeds the pull limits"},
		{"entries", Limits{Entries: 2}, memLayers(many), "more than 2 entries"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := build(t, tt.limits, tt.layers)
			if !errors.Is(err, ErrTooBig) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want ErrTooBig mentioning %q", err, tt.msg)
			}
		})
	}
}

func TestRootfsCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := newRootfs(Limits{})
	err := r.readLayers(ctx, memLayers(layer(t, ent{name: "a", body: "a"})), func(string, int64, int64) {})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// A host tree (what debootstrap leaves) is read without following its
// symlinks, with hardlinks, modes and ownership kept.
func TestRootfsHostTree(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret"), 0o600)
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root"), 0o644)
	os.Link(filepath.Join(dir, "etc/passwd"), filepath.Join(dir, "etc/passwd-"))
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "etc/os-release"))
	os.Mkdir(filepath.Join(dir, "tmp"), 0o755)
	os.Chmod(filepath.Join(dir, "tmp"), os.ModeSticky|0o777)
	os.Chown(filepath.Join(dir, "tmp"), 0, 5)
	ts := time.Unix(1700000000, 0)
	for _, p := range []string{"", "etc", "etc/passwd", "tmp"} {
		os.Chtimes(filepath.Join(dir, p), ts, ts)
	}
	r := newRootfs(Limits{})
	if err := r.addHostTree(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if d := r.osRelease(context.Background()); d != "" {
		t.Errorf("os-release through a host symlink read as %q", d)
	}
	got := listing(t, r, nil)
	got[1], _, _ = strings.Cut(got[1], " mtime=") // a symlink's mtime is when the test made it
	want := []string{
		"etc drwxr-xr-x 0:0 mtime=" + ts.UTC().String(),
		"etc/os-release Lrwxrwxrwx 0:0 -> " + filepath.Join(outside, "secret"),
		"etc/passwd -rw-r--r-- 0:0 root mtime=" + ts.UTC().String(),
		"etc/passwd- => etc/passwd",
		"tmp dtrwxrwxrwx 0:5 mtime=" + ts.UTC().String(),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
}
