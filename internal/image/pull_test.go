package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/prereq"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// testRegistry is an in-memory registry on 127.0.0.1. corrupt, when set,
// names a blob digest whose bytes are served altered.
type testRegistry struct {
	host    string
	mu      sync.Mutex
	corrupt string
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		bad := tr.corrupt
		tr.mu.Unlock()
		if bad != "" && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+bad) {
			rec := httptest.NewRecorder()
			reg.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			b[len(b)/2] ^= 0xff
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(b)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

func ociLayer(t *testing.T, ents ...ent) v1.Layer {
	t.Helper()
	b := layer(t, ents...).Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testImage(t *testing.T, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func (tr *testRegistry) push(t *testing.T, repo string, img v1.Image) string {
	t.Helper()
	ref := tr.host + "/" + repo
	r, err := ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

func needTools(t *testing.T) {
	t.Helper()
	needRoot(t)
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			prereq.Missing(t, "%s missing: install e2fsprogs", tool)
		}
	}
}

func testStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	os.WriteFile(agent, []byte("#!/bin/sh\n"), 0o755)
	return &Store{Dir: filepath.Join(dir, "images"), AgentBin: agent}, filepath.Join(dir, "cache")
}

// noLeftovers fails if the store holds anything but committed images.
func noLeftovers(t *testing.T, s *Store, cache string) {
	t.Helper()
	ents, _ := os.ReadDir(s.Dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind in the store: %s", e.Name())
		}
	}
	filepath.Walk(cache, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), ".tmp-") {
			t.Errorf("partial blob left in the cache: %s", p)
		}
		return nil
	})
}

func TestPullOCI(t *testing.T) {
	needTools(t)
	reg := newTestRegistry(t)
	base := ociLayer(t,
		ent{name: "etc/", typ: tar.TypeDir},
		ent{name: "etc/os-release", body: "ID=alpine\nVERSION_ID=3.20.3\n"},
		ent{name: "bin/", typ: tar.TypeDir},
		ent{name: "bin/busybox", body: "bb", mode: 0o755},
		ent{name: "sbin/init", typ: tar.TypeSymlink, link: "/bin/busybox"},
		ent{name: "gone", body: "x"},
	)
	top := ociLayer(t, ent{name: ".wh.gone"}, ent{name: "home/u/f", body: "mine", uid: 1000, gid: 1000})
	ref := reg.push(t, "team/dev:1", testImage(t, "amd64", base, top))
	s, cache := testStore(t)
	var phases []string
	var mu sync.Mutex
	im, err := s.PullOCI(context.Background(), PullOptions{Ref: ref, Name: "dev-1", KernelRef: "generic-6.1", CacheDir: cache,
		Progress: func(p string, _, _ int64) { mu.Lock(); phases = append(phases, p); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if im.Name != "dev-1" || im.Distro != "alpine-3.20.3" || im.HasSSHD || !im.Injected || !strings.HasPrefix(im.Digest, "sha256:") {
		t.Errorf("image = %+v", im)
	}
	inittab := debugfsCat(t, im.Rootfs, "/etc/inittab")
	for _, want := range []string{"::respawn:/usr/lib/banger/banger-agent", "::once:" + SSHDInstaller} {
		if !strings.Contains(inittab, want) {
			t.Errorf("inittab lacks %q:\n%s", want, inittab)
		}
	}
	if got := debugfsCat(t, im.Rootfs, "/gone"); got != "" {
		t.Errorf("whiteout ignored: /gone = %q", got)
	}
	if got := debugfsCat(t, im.Rootfs, "/home/u/f"); got != "mine" {
		t.Errorf("/home/u/f = %q", got)
	}
	checkExt4(t, im.Rootfs)
	noLeftovers(t, s, cache)
}

func debugfsCat(t *testing.T, img, p string) string {
	t.Helper()
	out, _ := exec.Command("debugfs", "-R", "cat "+p, img).Output()
	return string(out)
}

func TestPullOCIBadInput(t *testing.T) {
	needTools(t)
	reg := newTestRegistry(t)
	good := ociLayer(t, ent{name: "a", body: "a"})
	evil := ociLayer(t, ent{name: "up", typ: tar.TypeSymlink, link: "../.."}, ent{name: "up/evil", body: "x"})
	ref := reg.push(t, "ok:1", testImage(t, "amd64", good))
	armIdx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: testImage(t, "arm64", good), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: testImage(t, "s390x", good), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}})
	armRef, _ := name.ParseReference(reg.host+"/arm:1", name.Insecure)
	if err := remote.WriteIndex(armRef, armIdx); err != nil {
		t.Fatal(err)
	}
	evilRef := reg.push(t, "evil:1", testImage(t, "amd64", good, evil))
	badLayer := ociLayer(t, ent{name: "b", body: strings.Repeat("b", 4096)})
	badRef := reg.push(t, "bad:1", testImage(t, "amd64", good, badLayer))
	badDigest, _ := badLayer.Digest()

	tests := []struct {
		name, ref string
		want      error
		msg       string
	}{
		{"missing image", reg.host + "/nope:1", ErrNoImage, "nope"},
		{"missing tag", reg.host + "/ok:2", ErrNoImage, "ok:2"},
		{"other platform", armRef.String(), ErrPlatform, "linux/arm64, linux/s390x"},
		{"escaping entry", evilRef, ErrUnsafeEntry, "up/evil"},
		{"digest mismatch", badRef, ErrDigest, badDigest.Hex[:12]},
		{"unreachable", "127.0.0.1:1/x:1", nil, "127.0.0.1:1"},
		{"not a reference", "UPPER CASE", ErrInvalid, "not an image reference"},
	}
	reg.corrupt = badDigest.String()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, cache := testStore(t)
			_, err := s.PullOCI(context.Background(), PullOptions{Ref: tt.ref, Name: "bad", KernelRef: "k", CacheDir: cache})
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
			if ims, _ := s.List(); len(ims) != 0 {
				t.Errorf("images after a failed pull: %v", ims)
			}
			noLeftovers(t, s, cache)
		})
	}
	_ = ref
}

// Cancelling mid-pull leaves nothing behind but verified blobs, and the
// next pull uses them.
func TestPullOCICanceled(t *testing.T) {
	needTools(t)
	reg := newTestRegistry(t)
	l1, l2 := ociLayer(t, ent{name: "a", body: "a"}), ociLayer(t, ent{name: "b", body: "b"})
	ref := reg.push(t, "c:1", testImage(t, "amd64", l1, l2))
	s, cache := testStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := s.PullOCI(ctx, PullOptions{Ref: ref, Name: "img", KernelRef: "k", CacheDir: cache, Progress: func(p string, _, _ int64) {
		if p == "reading layers" {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if ims, _ := s.List(); len(ims) != 0 {
		t.Errorf("images after a cancelled pull: %v", ims)
	}
	noLeftovers(t, s, cache)
	for _, l := range []v1.Layer{l1, l2} {
		if h, _ := l.Digest(); !(BlobCache{Dir: cache}).Has(h) {
			t.Errorf("verified layer %s not kept in the cache", h)
		}
	}
	reg.corrupt = "everything" // the next pull must not need the registry's blobs
	if _, err := s.PullOCI(context.Background(), PullOptions{Ref: ref, Name: "img", KernelRef: "k", CacheDir: cache}); err != nil {
		t.Fatalf("pull after cancel: %v", err)
	}
}

func TestBundleRoundTrip(t *testing.T) {
	needTools(t)
	reg := newTestRegistry(t)
	ref := reg.push(t, "b:1", testImage(t, "amd64", ociLayer(t, ent{name: "a", body: "a"})))
	s, cache := testStore(t)
	im, err := s.PullOCI(context.Background(), PullOptions{Ref: ref, Name: "img", KernelRef: "k", CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "b.tar.zst")
	sum, err := s.ExportBundle(context.Background(), im.Name, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportURL(context.Background(), out, ImportOptions{Name: "copy", SHA256: strings.Repeat("0", 64)}); !errors.Is(err, ErrDigest) {
		t.Errorf("import with a wrong sha256: %v, want ErrDigest", err)
	}
	noLeftovers(t, s, cache)
	cp, err := s.ImportURL(context.Background(), out, ImportOptions{Name: "copy", SHA256: sum})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := fileSHA(t, im.Rootfs), fileSHA(t, cp.Rootfs); a != b {
		t.Errorf("rootfs sha256 %s after import, want %s", b, a)
	}
	if cp.KernelRef != "k" || cp.Distro != im.Distro {
		t.Errorf("imported manifest = %+v", cp)
	}
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))[0]
}

// A disk that fills while an image is built gives ErrNoSpace and leaves
// nothing behind.
func TestPullOCIDiskFull(t *testing.T) {
	needTools(t)
	reg := newTestRegistry(t)
	big := ociLayer(t, ent{name: "big", body: strings.Repeat("x", 24<<20)})
	ref := reg.push(t, "big:1", testImage(t, "amd64", big))
	for _, tt := range []struct {
		name string
		size string
	}{
		{"while unpacking", "16m"},
		{"before mkfs", "40m"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, cache := testStore(t)
			os.MkdirAll(s.Dir, 0o755)
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+tt.size, "tmpfs", s.Dir).CombinedOutput(); err != nil {
				prereq.Missing(t, "cannot mount a small tmpfs: %v %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", s.Dir).Run() })
			_, err := s.PullOCI(context.Background(), PullOptions{Ref: ref, Name: "img", KernelRef: "k", CacheDir: cache})
			if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), s.Dir) {
				t.Fatalf("err = %v, want ErrNoSpace naming %s", err, s.Dir)
			}
			noLeftovers(t, s, cache)
		})
	}
}

// A refresh swaps the new image in; a daemon killed mid-replace (the old
// image moved aside, the new one not yet in place) gets the old one back
// at its next start.
func TestReplaceAndCrashRecovery(t *testing.T) {
	needTools(t)
	reg := newTestRegistry(t)
	ref := reg.push(t, "r:1", testImage(t, "amd64", ociLayer(t, ent{name: "a", body: "a"})))
	s, cache := testStore(t)
	old, err := s.PullOCI(context.Background(), PullOptions{Ref: ref, Name: "img", KernelRef: "k", CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	ref2 := reg.push(t, "r:1", testImage(t, "amd64", ociLayer(t, ent{name: "b", body: "b"})))
	im, err := s.PullOCI(context.Background(), PullOptions{Ref: ref2, Name: old.Name, KernelRef: "k", CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if im.Digest == old.Digest || debugfsCat(t, im.Rootfs, "/b") != "b" {
		t.Errorf("refresh kept the old image: %+v", im)
	}
	noLeftovers(t, s, cache)

	trash := filepath.Join(s.Dir, ".trash-"+im.Name+"-0badc0de")
	if err := os.Rename(filepath.Join(s.Dir, im.Name), trash); err != nil {
		t.Fatal(err)
	}
	s.RemoveStale(time.Now(), cache)
	if got, err := s.Get(im.Name); err != nil || got.Digest != im.Digest {
		t.Fatalf("after recovery: %+v, %v; want the image moved aside back", got, err)
	}
	noLeftovers(t, s, cache)
}

// checkExt4 checks a built image is a clean, writable ext4 with a journal,
// spare inodes and no trace of the inode reserve.
func checkExt4(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	out, _ := exec.Command("dumpe2fs", "-h", img).Output()
	sb := string(out)
	for _, want := range []string{"has_journal", "extent", "volume name:   rootfs"} {
		if !strings.Contains(sb, want) {
			t.Errorf("superblock lacks %q:\n%s", want, sb)
		}
	}
	if strings.Contains(sb, "read-only") {
		t.Errorf("image is read-only:\n%s", sb)
	}
	var free int
	for _, l := range strings.Split(sb, "\n") {
		if v, ok := strings.CutPrefix(l, "Free inodes:"); ok {
			free, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if free < 16384 {
		t.Errorf("%d free inodes, want at least 16384", free)
	}
	if got := debugfsCat(t, img, "/"+padDir+"/0"); got != "" {
		t.Errorf("inode reserve left in the image")
	}
	if out, _ := exec.Command("debugfs", "-R", "ls /", img).CombinedOutput(); strings.Contains(string(out), padDir) {
		t.Errorf("inode reserve directory left in the image:\n%s", out)
	}
}
