package e2e

import (
	"archive/tar"
	"banger/internal/prereq"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// hostileDir is a directory on the host that a hostile image points its
// symlinks at; nothing may appear in it or change.
const hostileDir = "/tmp/banger-hostile-target"

// TestHelperPushHostile is not a test: it pushes the hostile images to
// the registry named by BANGER_E2E_PUSH_HOSTILE.
func TestHelperPushHostile(t *testing.T) {
	reg := os.Getenv("BANGER_E2E_PUSH_HOSTILE")
	if reg == "" {
		prereq.ByDesign(t, "helper process only")
	}
	push := func(repo string, layers ...v1.Layer) {
		ref, err := name.ParseReference(reg+"/hostile/"+repo, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, platformImage(t, "amd64", layers...)); err != nil {
			t.Fatalf("pushing %s: %v", ref, err)
		}
	}
	busybox := memLayer(t,
		file{name: "bin/busybox", src: "/bin/busybox", mode: 0o755},
		file{name: "sbin/init", link: "/bin/busybox", typ: tar.TypeSymlink})
	systemd := memLayer(t, file{name: "usr/lib/systemd/systemd", body: "not really", mode: 0o755})
	push("inittab-shadow:1", busybox, memLayer(t, file{name: "etc/inittab", link: "/etc/shadow", typ: tar.TypeSymlink}))
	push("osrelease-zero:1", busybox, memLayer(t, file{name: "etc/os-release", typ: tar.TypeChar, major: 1, minor: 5, mode: 0o666}))
	push("osrelease-fifo:1", busybox, memLayer(t, file{name: "etc/os-release", typ: tar.TypeFifo}))
	push("inittab-blockdev:1", busybox, memLayer(t, file{name: "etc/inittab", typ: tar.TypeBlock, major: 7, minor: 0}))
	push("wants-out:1", systemd, memLayer(t,
		file{name: "etc/systemd/system/multi-user.target.wants", link: hostileDir, typ: tar.TypeSymlink},
		file{name: "etc/os-release", link: hostileDir + "/canary", typ: tar.TypeSymlink}))
	push("bomb:1", busybox, bombLayer(t, 256<<20))
}

// bombLayer is a gzip layer holding one file of n zero bytes: a few
// hundred KB on the wire.
func bombLayer(t testing.TB, n int64) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: n, ModTime: time.Unix(1, 0)})
	zero := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(zero)) {
		tw.Write(zero[:min(int64(len(zero)), left)])
	}
	tw.Close()
	zw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Hostile images from a real registry are refused or neutralised: the
// daemon (root) never reads a host file through an image's symlink,
// never opens an image's device node or fifo, never writes through a
// symlinked directory, and stops a decompression bomb at the pull limit.
// Nothing half-made is listed, nothing is left in the store.
func TestHostileImages(t *testing.T) {
	e := imageEnv(t)
	os.MkdirAll(filepath.Join(e.home, "config"), 0o755)
	if err := os.WriteFile(filepath.Join(e.home, "config", "config.toml"), []byte("image_max_bytes = \"64M\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.ok("daemon", "restart")
	startRegistry(t, e)
	os.RemoveAll(hostileDir)
	if err := os.MkdirAll(hostileDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hostileDir) })
	os.WriteFile(filepath.Join(hostileDir, "canary"), []byte("ID=hostcanary\n"), 0o600)
	before := dirState(t, hostileDir)
	cmd := exec.Command("ip", "netns", "exec", e.ns, os.Args[0], "-test.run=^TestHelperPushHostile$", "-test.v")
	cmd.Env = append(os.Environ(), "BANGER_E2E_PUSH_HOSTILE="+registryAddr)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pushing hostile images: %v\n%s", err, out)
	}
	shadow, _ := os.ReadFile("/etc/shadow")
	ref := func(repo string) string { return registryAddr + "/hostile/" + repo + ":1" }
	var kept []string

	// Neutralised: the pull succeeds and the image holds no host data.
	for _, tc := range []struct{ repo, check, mustNot string }{
		{"inittab-shadow", "/etc/inittab", firstLine(shadow)},
		{"osrelease-zero", "/etc/inittab", "ID="},
		{"osrelease-fifo", "/etc/inittab", "ID="},
		{"wants-out", "/etc/systemd/system/banger-agent.service", "hostcanary"},
	} {
		t.Run(tc.repo, func(t *testing.T) {
			start := time.Now()
			r := e.banger("image", "pull", ref(tc.repo), "--name", tc.repo)
			if r.code != 0 {
				t.Fatalf("pull failed: %s", r.stderr)
			}
			if d := time.Since(start); d > 2*time.Minute {
				t.Errorf("pull took %s", d)
			}
			kept = append(kept, tc.repo)
			im := e.imageNamed(tc.repo)
			if im.Distro != "" {
				t.Errorf("distro = %q, want unknown (read through a device, fifo or host symlink?)", im.Distro)
			}
			got := run(t, "debugfs", "-R", "cat "+tc.check, im.Rootfs)
			if tc.mustNot != "" && strings.Contains(got, tc.mustNot) {
				t.Errorf("%s in the image holds host data %q:\n%s", tc.check, tc.mustNot, got)
			}
			if tc.repo == "inittab-shadow" && !strings.Contains(got, "::respawn:/usr/lib/banger/banger-agent") {
				t.Errorf("inittab lacks the agent:\n%s", got)
			}
		})
	}
	// Refused with a clear error.
	for _, tc := range []struct{ repo, want string }{
		{"inittab-blockdev", "/etc/inittab is not a regular file"},
		{"bomb", "more than 64MiB of file data"},
	} {
		t.Run(tc.repo, func(t *testing.T) {
			msg := e.fails("image", "pull", ref(tc.repo), "--name", tc.repo)
			mustContain(t, "stderr", msg, tc.want)
		})
	}
	mustContain(t, "bomb hint", e.fails("image", "pull", ref("bomb"), "--name", "bomb"), "image_max_bytes")
	if after := dirState(t, hostileDir); after != before {
		t.Errorf("the host directory an image pointed at changed:\nbefore %s\nafter  %s", before, after)
	}
	e.noImageLeftovers(sortedCopy(kept))
}

// imageNamed finds an image in image list --json.
func (e *env) imageNamed(name string) (im struct{ Name, Distro, Rootfs string }) {
	e.t.Helper()
	var ims []struct{ Name, Distro, Rootfs string }
	json.Unmarshal([]byte(e.ok("image", "list", "--json")), &ims)
	for _, i := range ims {
		if i.Name == name {
			return i
		}
	}
	e.t.Fatalf("image %s not listed", name)
	return im
}

// dirState describes dir's entries with their sizes and mtimes.
func dirState(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			b.WriteString(p + " " + fi.Mode().String() + " " + fi.ModTime().String() + " " + strings.Repeat("#", int(fi.Size()%64)) + "\n")
		}
		return nil
	})
	return b.String()
}

func firstLine(b []byte) string {
	l, _, _ := strings.Cut(string(b), "\n")
	return l
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
