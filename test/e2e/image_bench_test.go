package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkImagePull compares `banger image pull` of the Debian test image
// from a registry on 127.0.0.1 into a ready ext4 (cold blob cache) with the
// bare pipeline: crane export IMAGE - | tar -x into a directory, then
// mkfs.ext4 -d of the same size. Both run in the same namespace, one after
// the other in each iteration; the ratio banger/bare is reported.
func BenchmarkImagePull(b *testing.B) {
	e := newBenchEnv(b)
	crane := buildCrane(b)
	ref := registryAddr + "/test/debian:1"
	var banger, bare time.Duration
	for i := 0; i < b.N; i++ {
		os.RemoveAll(filepath.Join(e.home, "cache", "oci"))
		name := "bench" + strconv.Itoa(i)
		start := time.Now()
		e.ok("image", "pull", ref, "--name", name)
		banger += time.Since(start)
		var im struct {
			SizeBytes int64 `json:"size_bytes"`
		}
		json.Unmarshal([]byte(e.ok("image", "inspect", name, "--json")), &im)
		e.ok("image", "delete", name)

		start = time.Now()
		dir := barePull(b, e, crane, ref, im.SizeBytes)
		bare += time.Since(start)
		os.RemoveAll(dir)
	}
	ratio := float64(banger) / float64(bare)
	b.ReportMetric(banger.Seconds()/float64(b.N), "banger-s/op")
	b.ReportMetric(bare.Seconds()/float64(b.N), "bare-s/op")
	b.ReportMetric(ratio, "ratio")
	b.Logf("image pull: banger %s/op, bare crane|tar + mkfs.ext4 %s/op, ratio %.2f (target <= 1.2)",
		(banger / time.Duration(b.N)).Round(time.Millisecond), (bare / time.Duration(b.N)).Round(time.Millisecond), ratio)
}

// barePull is the bare pipeline of BenchmarkImagePull: crane export of
// ref, untarred into a directory, then mkfs.ext4 -d of size bytes. It
// returns the directory holding the tree and rootfs.ext4.
func barePull(tb testing.TB, e *env, crane, ref string, size int64) string {
	tb.Helper()
	dir := tb.TempDir()
	tree, img := filepath.Join(dir, "tree"), filepath.Join(dir, "rootfs.ext4")
	os.Mkdir(tree, 0o755)
	pipe := crane + " export --insecure " + ref + " - | tar --numeric-owner --xattrs --xattrs-include='*' -x -C " + tree
	if out, err := exec.Command("ip", "netns", "exec", e.ns, "sh", "-c", pipe).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v\n%s", pipe, err, out)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, img, strconv.FormatInt(size/1024, 10)+"k").CombinedOutput(); err != nil {
		tb.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return dir
}

// newBenchEnv is imageEnv for a benchmark: a namespace, a registry with
// the test images, and a kernel.
func newBenchEnv(b *testing.B) *env {
	b.Helper()
	e := newEnv(b)
	startRegistry(b, e)
	pushImages(b, e)
	return e
}

func buildCrane(b testing.TB) string {
	b.Helper()
	out := filepath.Join(b.TempDir(), "crane")
	cmd := exec.Command("go", "build", "-o", out, "github.com/google/go-containerregistry/cmd/crane")
	cmd.Dir = repoRoot()
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building crane: %v\n%s", err, msg)
	}
	return out
}
