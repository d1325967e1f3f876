package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sizedImage registers an ext4 image of size bytes called name: mkfs.ext4
// on a sparse file, with a few MiB of data in it.
func sizedImage(b testing.TB, e *env, name, size string) {
	b.Helper()
	dir := b.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "data"), 0o755)
	for i := range 4 {
		if err := os.WriteFile(filepath.Join(tree, "data", fmt.Sprint(i)), []byte(strings.Repeat(name, 1<<18)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	img := filepath.Join(dir, name+".ext4")
	run(b, "truncate", "-s", size, img)
	run(b, "mkfs.ext4", "-q", "-F", "-d", tree, img)
	e.ok("image", "register", "--name", name, "--rootfs", img, "--kernel-ref", "generic-6.1")
}

// vm create --no-start of a 1 GiB and an 8 GiB image: with a qcow2 layer
// over the image nothing is copied, so both cost the same. Beside it, in
// the same run, the bare tool doing the disk's part: qemu-img create of
// a qcow2 layer over each image's file.
func BenchmarkCreate(b *testing.B) {
	e := bootEnv(b)
	sizes := []string{"1G", "8G"}
	rootfs := map[string]string{}
	for _, s := range sizes {
		name := "img" + strings.ToLower(s)
		sizedImage(b, e, name, s)
		var im struct{ Rootfs string }
		json.Unmarshal([]byte(e.ok("image", "inspect", name, "--json")), &im)
		rootfs[s] = im.Rootfs
	}
	for _, s := range sizes { // daemon, page cache and bases warm
		e.ok("vm", "create", "--no-start", "--image", "img"+strings.ToLower(s), "--name", "warm")
		e.ok("vm", "delete", "warm")
	}
	tmp := b.TempDir()
	banger, bare := map[string]time.Duration{}, map[string]time.Duration{}
	var method string
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, s := range sizes {
			name := fmt.Sprintf("c%s-%d", strings.ToLower(s), i)
			banger[s] += timed(func() { e.ok("vm", "create", "--no-start", "--image", "img"+strings.ToLower(s), "--name", name) })
			layer := filepath.Join(tmp, name+".qcow2")
			bare[s] += timed(func() { run(b, "qemu-img", "create", "-q", "-f", "qcow2", "-b", rootfs[s], "-F", "raw", layer, "16G") })
			b.StopTimer()
			var v struct {
				DiskMethod string `json:"disk_method"`
			}
			json.Unmarshal([]byte(e.ok("vm", "inspect", name)), &v)
			method = v.DiskMethod
			e.ok("vm", "delete", name)
			os.Remove(layer)
			b.StartTimer()
		}
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(b.N) }
	small, big := per(banger["1G"]), per(banger["8G"])
	b.ReportMetric(small, "ms-1G")
	b.ReportMetric(big, "ms-8G")
	b.ReportMetric(big/small, "ratio-8G/1G")
	fmt.Printf("vm create --no-start (%s): 1 GiB image %.1f ms, 8 GiB image %.1f ms, ratio 8G/1G %.2f\n", method, small, big, big/small)
	fmt.Printf("qemu-img create -f qcow2 -b (bare): 1 GiB %.1f ms, 8 GiB %.1f ms, ratio %.2f; banger/bare %.2f and %.2f\n",
		per(bare["1G"]), per(bare["8G"]), per(bare["8G"])/per(bare["1G"]), small/per(bare["1G"]), big/per(bare["8G"]))
	if method != "qcow2-overlay" {
		b.Errorf("disk method %q: the benchmark measures something else than qcow2 layers", method)
	}
}
