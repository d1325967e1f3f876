package e2e

import (
	"banger/internal/prereq"
	"banger/internal/vmm/qemu"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tinyRootfs makes an ext4 image from a tree with the given files
// (path -> content, mode 0755).
func tinyRootfs(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"etc", "proc", "sys", "dev", "tmp", "run", "root"} {
		os.MkdirAll(filepath.Join(tree, d), 0o755)
	}
	for p, content := range files {
		full := filepath.Join(tree, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if strings.HasPrefix(content, "@") { // copy a host file
			b, err := os.ReadFile(content[1:])
			if err != nil {
				tb.Fatal(err)
			}
			content = string(b)
		}
		os.WriteFile(full, []byte(content), 0o755)
	}
	img := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, img, "64M").CombinedOutput(); err != nil {
		tb.Fatalf("mkfs: %v\n%s", err, out)
	}
	return img
}

// noInitEnv registers a rootfs with no init system: banger's initrd runs
// the agent as PID 1, so a boot costs kernel, initrd and agent only.
func noInitEnv(t testing.TB) *env {
	e := newEnv(t)
	e.ok("kernel", "import", "--deb", fixtureDeb(t), "--name", "generic-6.1")
	img := tinyRootfs(t, map[string]string{"etc/hostname": "tiny\n"})
	e.ok("image", "register", "--name", "tiny", "--rootfs", img, "--kernel-ref", "generic-6.1")
	return e
}

// TestSoak boots the systemd fixture BANGER_SOAK times through banger
// (create once, then start/stop) and reports hangs, then median and p95
// of start to agent-ready. make e2e (so CI) runs it with 10, make soak
// with 50.
func TestSoak(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("BANGER_SOAK"))
	if n == 0 {
		prereq.ByDesign(t, "set BANGER_SOAK=N (make soak) to boot N times")
	}
	e := bootEnv(t)
	e.ok("vm", "create", "--no-start", "--image", "fixture", "--name", "soak", "--memory", "512M", "--cpus", "1")
	var times []time.Duration
	hangs := 0
	for i := 0; i < n; i++ {
		start := time.Now()
		r := e.banger("vm", "start", "soak", "--ready-timeout", "60")
		d := time.Since(start)
		if r.code != 0 {
			hangs++
			t.Logf("boot %d: no agent after %s: %s", i, d.Round(time.Millisecond), strings.TrimSpace(r.stderr))
		} else {
			times = append(times, d)
		}
		e.ok("vm", "stop", "--force", "soak")
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	if len(times) == 0 {
		t.Fatalf("%d boots, %d hangs", n, hangs)
	}
	med, p95 := times[len(times)/2], times[min(len(times)-1, len(times)*95/100)]
	fmt.Printf("soak: %d boots, %d hangs, start-to-agent-ready median %s p95 %s max %s\n",
		n, hangs, med.Round(time.Millisecond), p95.Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
	if hangs > 0 {
		t.Fatalf("%d of %d boots hung", hangs, n)
	}
}

// BenchmarkBootToAgentReady compares `banger vm start` (to agent-ready) with
// bare QEMU booting the same kernel and initrd to a trivial init that
// prints a line, side by side in one run.
func BenchmarkBootToAgentReady(b *testing.B) {
	var banger, bare time.Duration
	e := noInitEnv(b)
	var k struct{ Kernel, Initrd, Modules string }
	json.Unmarshal([]byte(e.ok("kernel", "inspect", "generic-6.1", "--json")), &k)
	bareRoot := bareInitRoot(b)
	e.ok("vm", "create", "--no-start", "--image", "tiny", "--name", "bench", "--memory", "256M", "--cpus", "1")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		e.ok("vm", "start", "bench")
		banger += time.Since(start)
		e.ok("vm", "stop", "--force", "bench")
		bare += bareBoot(b, k.Kernel, k.Initrd, bareRoot)
	}
	b.StopTimer()
	bs, qs := banger.Seconds()/float64(b.N), bare.Seconds()/float64(b.N)
	b.ReportMetric(bs, "banger-s/boot")
	b.ReportMetric(qs, "bare-s/boot")
	b.ReportMetric(bs/qs, "ratio")
	fmt.Printf("boot to ready: banger %.2fs, bare qemu %.2fs, ratio %.2f\n", bs, qs, bs/qs)
}

// bareInitRoot is the bare side's rootfs: busybox and an init that prints
// BARE-READY and powers off.
func bareInitRoot(tb testing.TB) string {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		prereq.Missing(tb, "busybox-static not installed (apt-get install busybox-static)")
	}
	return tinyRootfs(tb, map[string]string{
		"bin/busybox": "@" + busybox,
		"sbin/init":   "#!/bin/busybox sh\n/bin/busybox echo BARE-READY > /dev/console\n/bin/busybox poweroff -f\n",
	})
}

// bareBoot runs QEMU by hand like the driver does (microvm, TCG, the TSC
// fix) and returns the time until the init's line reaches the console.
func bareBoot(b testing.TB, kernel, initrd, root string) time.Duration {
	b.Helper()
	khz, err := qemu.HostTSCkHz()
	if err != nil {
		b.Fatal(err)
	}
	log := filepath.Join(b.TempDir(), "console.log")
	args := []string{"-M", "microvm,accel=tcg,acpi=on", "-cpu", "max", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-chardev", "file,id=con,path=" + log, "-serial", "chardev:con",
		"-kernel", kernel, "-initrd", initrd,
		"-append", fmt.Sprintf("console=ttyS0 panic=1 tsc_early_khz=%d tsc=reliable root=/dev/vda rw", khz),
		"-drive", "id=root,file=" + root + ",format=raw,if=none,snapshot=on", "-device", "virtio-blk-device,drive=root"}
	start := time.Now()
	cmd := exec.Command("qemu-system-x86_64", args...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for time.Since(start) < 60*time.Second {
		if data, _ := os.ReadFile(log); strings.Contains(string(data), "BARE-READY") {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatal("bare qemu never printed its line")
	return 0
}
