package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/prereq"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const registryAddr = "127.0.0.1:5000"

// startRegistry runs Debian's docker-registry inside e's namespace on
// 127.0.0.1:5000, storing into a temp dir it returns.
func startRegistry(t testing.TB, e *env) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		prereq.Missing(t, "docker-registry missing: apt-get install docker-registry")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: %s\n", dir, registryAddr)), 0o644)
	cmd := exec.Command("ip", "netns", "exec", e.ns, bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if exec.Command("ip", "netns", "exec", e.ns, "busybox", "wget", "-q", "-O", "/dev/null", "http://"+registryAddr+"/v2/").Run() == nil {
			break
		}
		if i > 50 {
			t.Fatal("registry did not come up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return filepath.Join(dir, "data")
}

// pushImages runs TestHelperPushImages inside e's namespace: it builds
// the test images and pushes them to the registry there.
func pushImages(t testing.TB, e *env) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", e.ns, os.Args[0], "-test.run=^TestHelperPushImages$", "-test.v")
	cmd.Env = append(os.Environ(), "BANGER_E2E_PUSH="+registryAddr, "BANGER_FIXTURES="+fixtures(t), "BANGER_E2E_EVIL="+evilName())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pushing test images: %v\n%s", err, out)
	}
}

// TestHelperPushImages is not a test: it pushes the test images
// (debian, noinit, armonly) to the registry named by BANGER_E2E_PUSH.
func TestHelperPushImages(t *testing.T) {
	reg := os.Getenv("BANGER_E2E_PUSH")
	if reg == "" {
		prereq.ByDesign(t, "helper process only")
	}
	push := func(repo string, img v1.Image) {
		ref, err := name.ParseReference(reg+"/"+repo, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatalf("pushing %s: %v", ref, err)
		}
	}
	busybox := memLayer(t,
		file{name: "bin/busybox", src: "/bin/busybox", mode: 0o755},
		file{name: "bin/sh", link: "busybox", typ: tar.TypeSymlink},
		file{name: "etc/os-release", body: "ID=tiny\nVERSION_ID=1\n"})
	push("test/noinit:1", platformImage(t, "amd64", busybox))
	push("test/bbinit:1", platformImage(t, "amd64", busybox, memLayer(t,
		file{name: "sbin/init", link: "/bin/busybox", typ: tar.TypeSymlink},
		file{name: "etc/init.d/rcS", body: "#!/bin/sh\n/bin/busybox mkdir -p /run\n/bin/busybox touch /run/rcS-ran\n", mode: 0o755})))
	arm := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: platformImage(t, "arm64", busybox),
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	ref, _ := name.ParseReference(reg+"/test/armonly:1", name.Insecure)
	if err := remote.WriteIndex(ref, arm); err != nil {
		t.Fatal(err)
	}
	evil := evilName()
	push("test/evil:1", platformImage(t, "amd64", busybox, memLayer(t,
		file{name: "etc/up", link: "../../..", typ: tar.TypeSymlink},
		file{name: "etc/up/tmp/" + evil, body: "escaped"})))
	// Deeper than any staging tree, and absolute (which inside the image
	// means the image's own root): neither may write on the host.
	push("test/evil2:1", platformImage(t, "amd64", busybox, memLayer(t,
		file{name: "etc/deep", link: strings.Repeat("../", 40), typ: tar.TypeSymlink},
		file{name: "etc/deep/tmp/" + evil, body: "escaped"})))
	push("test/evil3:1", platformImage(t, "amd64", busybox, memLayer(t,
		file{name: "etc/abs", link: "/", typ: tar.TypeSymlink},
		file{name: "etc/abs/tmp/" + evil, body: "escaped"})))
	push("test/debian:1", platformImage(t, "amd64", debianBase(t), debianLower(t), debianUpper(t)))
}

// evilName is the file the evil test images try to write outside their
// root: unique to this test process, so a find of it proves an escape.
func evilName() string {
	if n := os.Getenv("BANGER_E2E_EVIL"); n != "" {
		return n
	}
	return fmt.Sprintf("banger-evil-%d", os.Getpid())
}

// file is one entry of a test layer.
type file struct {
	name, body, src, link string
	typ                   byte
	mode                  int64
	uid, gid              int
	major, minor          int64
	xattrs                map[string]string
}

func memLayer(t testing.TB, files ...file) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		body := []byte(f.body)
		if f.src != "" {
			b, err := os.ReadFile(f.src)
			if err != nil {
				t.Fatal(err)
			}
			body = b
		}
		typ := f.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := f.mode
		if mode == 0 {
			mode = map[bool]int64{true: 0o755, false: 0o644}[typ == tar.TypeDir]
		}
		h := &tar.Header{Name: f.name, Typeflag: typ, Mode: mode, Uid: f.uid, Gid: f.gid, Linkname: f.link,
			Devmajor: f.major, Devminor: f.minor, ModTime: time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC), Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			h.Size = int64(len(body))
		}
		for k, v := range f.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func platformImage(t testing.TB, arch string, layers ...v1.Layer) v1.Image {
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

// debianBase is the fixture rootfs (Debian bookworm with systemd and
// openssh-server) as a gzip layer, made once into the fixtures dir.
func debianBase(t testing.TB) v1.Layer {
	t.Helper()
	dir := os.Getenv("BANGER_FIXTURES")
	out := filepath.Join(dir, "oci-debian-base.tar.gz")
	if _, err := os.Stat(out); err != nil {
		tree, err := os.MkdirTemp(dir, "oci-base-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tree)
		for _, c := range [][]string{
			{"debugfs", "-R", "rdump / " + tree, filepath.Join(dir, "rootfs.ext4")},
			{"tar", "--numeric-owner", "--xattrs", "-C", filepath.Join(tree), "--exclude=./lost+found", "-czf", out + ".tmp", "."},
		} {
			if b, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", c, err, b)
			}
		}
		if err := os.Rename(out+".tmp", out); err != nil {
			t.Fatal(err)
		}
	}
	l, err := tarball.LayerFromFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// capNetRaw is a security.capability xattr (v2) granting cap_net_raw+ep.
const capNetRaw = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

func debianLower(t testing.TB) v1.Layer {
	return memLayer(t,
		file{name: "opt/", typ: tar.TypeDir},
		file{name: "opt/opq/", typ: tar.TypeDir},
		file{name: "opt/opq/old", body: "old"},
		file{name: "opt/opq/sub/", typ: tar.TypeDir},
		file{name: "opt/opq/sub/old", body: "old"},
		file{name: "opt/gone", body: "gone"},
		file{name: "opt/suid", body: "#!/bin/sh\necho suid\n", mode: 0o4755},
		file{name: "opt/sgid/", typ: tar.TypeDir, mode: 0o2775, gid: 1000},
		file{name: "opt/sticky/", typ: tar.TypeDir, mode: 0o1777},
		file{name: "opt/hard1", body: "hardlinked"},
		file{name: "opt/hard2", typ: tar.TypeLink, link: "opt/hard1"},
		file{name: "opt/abs", typ: tar.TypeSymlink, link: "/etc/os-release"},
		file{name: "opt/rel", typ: tar.TypeSymlink, link: "../etc/os-release"},
		file{name: "opt/null", typ: tar.TypeChar, major: 1, minor: 3, mode: 0o666},
		file{name: "opt/fifo", typ: tar.TypeFifo},
		file{name: "opt/ping", src: "/bin/busybox", mode: 0o755, xattrs: map[string]string{"security.capability": capNetRaw}},
		file{name: "home/dev/", typ: tar.TypeDir, uid: 1000, gid: 1000},
		file{name: "home/dev/notes", body: "mine", mode: 0o640, uid: 1000, gid: 1000},
	)
}

func debianUpper(t testing.TB) v1.Layer {
	return memLayer(t,
		file{name: "etc/.wh.issue.net"},
		file{name: "opt/.wh.gone"},
		file{name: "opt/opq/.wh..wh..opq"},
		file{name: "opt/opq/new", body: "new"},
		file{name: "home/dev/more", body: "more", uid: 1000, gid: 1000},
	)
}

func imageEnv(t testing.TB) *env {
	t.Helper()
	e := newEnv(t)
	e.ok("kernel", "import", "--deb", fixtureDeb(t), "--name", "generic-6.1")
	return e
}

// Bad input fails clearly and leaves no image and no temp files.
func TestImagePullBadInput(t *testing.T) {
	e := imageEnv(t)
	storage := startRegistry(t, e)
	pushImages(t, e)
	for _, tc := range []struct{ name, ref, want string }{
		{"unknown catalog name", "no-such-image", "debian-bookworm"},
		{"unreachable registry", "127.0.0.1:1/x:1", "127.0.0.1:1"},
		{"missing image", registryAddr + "/test/missing:1", "not found"},
		{"missing tag", registryAddr + "/test/noinit:2", "not found"},
		{"other platform", registryAddr + "/test/armonly:1", "linux/arm64"},
		{"entry escaping the root", registryAddr + "/test/evil:1", `"etc/up/tmp/` + evilName() + `" goes through symlink /etc/up -> ../../.., out of the root`},
		{"entry escaping far above the root", registryAddr + "/test/evil2:1", "out of the root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := e.fails("image", "pull", tc.ref)
			t.Logf("banger image pull %s:\n%s", tc.ref, msg)
			mustContain(t, "stderr", msg, tc.want)
		})
	}
	// An absolute symlink points into the image itself: the pull may
	// succeed, with the file inside the image, never on the host.
	r := e.banger("image", "pull", registryAddr+"/test/evil3:1", "--name", "evil3")
	t.Logf("banger image pull test/evil3:1 (etc/abs -> /): exit %d %s", r.code, r.stderr)
	e.noEscape(evilName())
	if r.code == 0 {
		e.ok("image", "delete", "evil3")
	}

	// A registry serving a corrupt layer: the digest check catches it.
	// (The busybox layer is cached from the evil pull: drop the cache.)
	os.RemoveAll(filepath.Join(e.home, "cache", "oci"))
	blobs, _ := filepath.Glob(filepath.Join(storage, "docker/registry/v2/blobs/sha256/*/*/data"))
	for _, b := range blobs {
		if st, err := os.Stat(b); err == nil && st.Size() > 100<<10 {
			f, _ := os.OpenFile(b, os.O_RDWR, 0)
			f.WriteAt([]byte("corrupt"), st.Size()/2)
			f.Close()
		}
	}
	mustContain(t, "corrupt layer", e.fails("image", "pull", registryAddr+"/test/noinit:1"), "digest mismatch")
	e.noImageLeftovers(nil)
}

// noImageLeftovers checks that only the named images exist and that the
// image store and blob cache hold no temp files.
func (e *env) noImageLeftovers(want []string) {
	e.t.Helper()
	var ims []struct{ Name string }
	json.Unmarshal([]byte(e.ok("image", "list", "--json")), &ims)
	var got []string
	for _, im := range ims {
		got = append(got, im.Name)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		e.t.Errorf("images = %v, want %v", got, want)
	}
	for _, dir := range []string{filepath.Join(e.home, "state", "images"), filepath.Join(e.home, "cache", "oci")} {
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && strings.HasPrefix(fi.Name(), ".") {
				e.t.Errorf("temp file left behind: %s", p)
			}
			return nil
		})
	}
}

// A Debian-based multi-layer image keeps whiteouts, opaque directories,
// hardlinks, setuid bits, ownership, devices and capabilities; an image
// with no init and no sshd boots with the agent as PID 1. Ctrl-C mid-pull
// leaves nothing but verified blobs.
func TestImagePullAndBoot(t *testing.T) {
	e := imageEnv(t)
	storage := startRegistry(t, e)
	pushImages(t, e)

	e.ok("image", "pull", registryAddr+"/test/noinit:1", "--name", "noinit")
	var im struct {
		Distro  string
		HasSSHD bool `json:"has_sshd"`
		Rootfs  string
	}
	json.Unmarshal([]byte(e.ok("image", "inspect", "noinit", "--json")), &im)
	mustContain(t, "image inspect (human-readable)", e.ok("image", "inspect", "noinit"),
		"name:", "noinit", "distro:", "tiny-1", "rootfs:", im.Rootfs, "sshd:", "false")
	if im.Distro != "tiny-1" || im.HasSSHD {
		t.Errorf("noinit inspect: distro %q has_sshd %t, want tiny-1 false", im.Distro, im.HasSSHD)
	}
	e.ok("vm", "create", "--image", "noinit", "--name", "tiny", "--memory", "512M")
	if got := strings.TrimSpace(e.ok("vm", "exec", "tiny", "--", "/bin/busybox", "cat", "/proc/1/comm")); got != "banger-agent" {
		t.Errorf("PID 1 in the no-init guest is %q, want banger-agent", got)
	}
	mustContain(t, "exec", e.ok("vm", "exec", "tiny", "--", "/bin/sh", "-c", "echo hello from $(cat /etc/os-release | head -1)"), "hello from ID=tiny")
	e.ok("vm", "delete", "--force", "tiny")

	// busybox init (as in Alpine) starts the agent from /etc/inittab.
	e.ok("image", "pull", registryAddr+"/test/bbinit:1", "--name", "bbinit")
	e.ok("vm", "create", "--image", "bbinit", "--name", "bb", "--memory", "512M")
	got := e.ok("vm", "exec", "bb", "--", "/bin/sh", "-c", "cat /proc/1/comm; test -e /run/rcS-ran && echo rcS-ran; grep banger /etc/inittab")
	mustContain(t, "busybox init guest", got, "init\n", "rcS-ran", "::respawn:/usr/lib/banger/banger-agent")
	e.ok("vm", "delete", "--force", "bb")

	e.cancelPull(registryAddr+"/test/debian:1", "cancelled", layerDigests(t, storage, "test/debian", "1"))
	e.noImageLeftovers([]string{"bbinit", "noinit"})

	start := time.Now()
	e.ok("image", "pull", registryAddr+"/test/debian:1", "--name", "deb")
	t.Logf("pull of the debian image (layers cached by the interrupted pull): %s", time.Since(start).Round(time.Millisecond))
	json.Unmarshal([]byte(e.ok("image", "inspect", "deb", "--json")), &im)
	if im.Distro != "debian-bookworm" || !im.HasSSHD {
		t.Errorf("deb inspect: distro %q has_sshd %t, want debian-bookworm true", im.Distro, im.HasSSHD)
	}
	if out, _ := exec.Command("debugfs", "-R", "ea_get /opt/ping security.capability", im.Rootfs).CombinedOutput(); !strings.Contains(string(out), "01 00 00 02 00 20") && !strings.Contains(string(out), `\001\000\000\002\000 \000`) {
		t.Errorf("security.capability on /opt/ping not kept:\n%s", out)
	}
	e.ok("vm", "create", "--image", "deb", "--name", "deb1", "--memory", "1G")
	script := `set -e
cd /opt
stat -c '%n %a %u %g %h %F' suid sgid sticky hard1 hard2 null fifo /home/dev /home/dev/notes /home/dev/more
[ "$(stat -c %i hard1)" = "$(stat -c %i hard2)" ] && echo hardlink-shared
stat -c '%n %t:%T' null
readlink abs rel; cat abs | head -1
ls opq | tr '\n' ' '; echo
test ! -e gone && echo gone-whited-out
test ! -e /etc/issue.net && echo issue-whited-out
test -x /usr/sbin/sshd && echo has-sshd
systemctl is-enabled banger-agent.service`
	out := e.ok("vm", "exec", "deb1", "--", "sh", "-c", script)
	mustContain(t, "guest checks", out,
		"suid 4755 0 0 1 regular file", "sgid 2775 0 1000 ", "sticky 1777 0 0 ", "hard1 644 0 0 2 regular file",
		"null 666 0 0 1 character special file", "fifo 644 0 0 1 fifo", "/home/dev 755 1000 1000 ",
		"/home/dev/notes 640 1000 1000 1 regular file", "/home/dev/more 644 1000 1000 1", "hardlink-shared",
		"null 1:3", "/etc/os-release\n../etc/os-release\nPRETTY_NAME", "\nnew \n", "gone-whited-out",
		"issue-whited-out", "has-sshd", "enabled")
	e.ok("vm", "delete", "--force", "deb1")
}

// cancelPull starts a pull and interrupts it (SIGINT, as Ctrl-C does)
// once layers are being unpacked or fetched.
func (e *env) cancelPull(ref, name string, layers []string) {
	e.t.Helper()
	cmd := e.cmd(e.t.Context(), "image", "pull", ref, "--name", name)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "reading layers") {
			cmd.Process.Signal(syscall.SIGINT)
			break
		}
	}
	io.Copy(io.Discard, stderr)
	if err := cmd.Wait(); err == nil {
		e.t.Fatalf("interrupted pull succeeded; it printed %q", seen)
	}
	// The daemon notices the dropped request and cleans up.
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join(e.home, "state", "images", ".tmp-*"))
		if len(m) == 0 {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("20 s after Ctrl-C the pull's staging is still there: %v", m)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every layer was fetched before unpacking began: each is cached,
	// and every cached blob is what its name says.
	dir := filepath.Join(e.home, "cache", "oci", "sha256")
	for _, d := range layers {
		if _, err := os.Stat(filepath.Join(dir, d)); err != nil {
			e.t.Errorf("after Ctrl-C layer %s is not in the blob cache: %v", d, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, ent := range ents {
		if got := sha256File(e.t, filepath.Join(dir, ent.Name())); got != ent.Name() {
			e.t.Errorf("cached blob %s has sha256 %s", ent.Name(), got)
		}
	}
}

// layerDigests reads the layer digests (hex) of repo:tag from the
// registry's storage, without going through banger.
func layerDigests(t testing.TB, storage, repo, tag string) []string {
	t.Helper()
	blob := func(digest string) []byte {
		hex := strings.TrimPrefix(digest, "sha256:")
		b, err := os.ReadFile(filepath.Join(storage, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	link, err := os.ReadFile(filepath.Join(storage, "docker/registry/v2/repositories", repo, "_manifests/tags", tag, "current/link"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(blob(strings.TrimSpace(string(link))), &m); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, strings.TrimPrefix(l.Digest, "sha256:"))
	}
	if len(out) == 0 {
		t.Fatalf("%s:%s has no layers", repo, tag)
	}
	return out
}
