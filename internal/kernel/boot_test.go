package kernel

import (
	"banger/internal/prereq"
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostTSCkHz reads the host's TSC frequency for tsc_early_khz (see
// DESIGN.md §2): "tsc: Detected ... MHz" from dmesg, else cpu MHz.
func hostTSCkHz() int {
	re := regexp.MustCompile(`tsc: Detected ([0-9.]+) MHz`)
	out, _ := exec.Command("dmesg").Output()
	m := re.FindSubmatch(out)
	if m == nil {
		data, _ := os.ReadFile("/proc/cpuinfo")
		m = regexp.MustCompile(`cpu MHz\s*:\s*([0-9.]+)`).FindSubmatch(data)
	}
	if m == nil {
		return 0
	}
	mhz, _ := strconv.ParseFloat(string(m[1]), 64)
	return int(mhz * 1000)
}

var (
	bundleOnce sync.Once
	bundle     Bundle
	bundleErr  error
)

// realBundle imports the real package once, with the real agent as /init.
func realBundle(t *testing.T) Bundle {
	t.Helper()
	deb, agent := realDeb(t), realAgent(t)
	bundleOnce.Do(func() {
		dir, err := os.MkdirTemp("", "banger-kernel-test-")
		if err != nil {
			bundleErr = err
			return
		}
		extraCleanup = append(extraCleanup, dir)
		s := &Store{Dir: filepath.Join(dir, "kernels"), CacheDir: filepath.Join(dir, "cache"), AgentBin: agent}
		bundle, bundleErr = s.ImportDeb(context.Background(), deb, "generic-6.1", nil)
	})
	if bundleErr != nil {
		t.Fatalf("importing %s: %v", deb, bundleErr)
	}
	return bundle
}

// testRoot makes a root ext4 image from files (path -> content; content
// "@/x" copies host file /x). Mode 0755 for everything under bin/, sbin/
// and usr/lib/banger/.
func testRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	for p, c := range files {
		dst := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		data := []byte(c)
		if src, ok := strings.CutPrefix(c, "@"); ok {
			var err error
			if data, err = os.ReadFile(src); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

const testInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
echo "BANGER-TEST uname=$(uname -r)"
echo "BANGER-TEST queue_depth=$(cat /sys/module/virtio_blk/parameters/queue_depth)"
echo "BANGER-TEST root=$(grep ' / ' /proc/mounts | cut -d' ' -f1,3,4)"
modprobe overlay && modprobe bridge && modprobe nf_tables && echo "BANGER-TEST docker-modules=ok"
echo "BANGER-TEST modules=$(cut -d' ' -f1 /proc/modules | sort | tr '\n' ,)"
echo "BANGER-TEST done"
poweroff -f
`

type bootResult struct {
	log     string
	elapsed time.Duration // QEMU start to the first "BANGER-TEST" line
	exited  bool          // QEMU exited by itself
}

// boot runs raw QEMU (microvm, TCG) on kernel+initrd with the given
// drives until it exits, until waitFor appears (then kills it), or 120s.
func boot(t *testing.T, kernel, initrd, appendArgs string, drives []string, waitFor string) bootResult {
	t.Helper()
	khz := hostTSCkHz()
	if khz == 0 {
		prereq.Missing(t, "cannot read the host TSC frequency")
	}
	log := filepath.Join(t.TempDir(), "console.log")
	args := []string{"-M", "microvm,accel=tcg", "-m", "512", "-nodefaults", "-no-user-config",
		"-nographic", "-serial", "file:" + log, "-kernel", kernel, "-initrd", initrd, "-no-reboot",
		"-append", fmt.Sprintf("console=ttyS0 tsc_early_khz=%d tsc=reliable panic=1 %s", khz, appendArgs)}
	for i, d := range drives {
		ro := ""
		if i > 0 {
			ro = ",readonly=on"
		}
		args = append(args, "-drive", fmt.Sprintf("id=d%d,file=%s,format=raw,if=none%s", i, d, ro),
			"-device", fmt.Sprintf("virtio-blk-device,drive=d%d", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var res bootResult
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			res.exited = ctx.Err() == nil
			res.log = readLog(log)
			if err != nil && res.exited {
				t.Logf("qemu: %v", err)
			}
			return res
		case <-tick.C:
			data := readLog(log)
			if res.elapsed == 0 && strings.Contains(data, "BANGER-TEST") {
				res.elapsed = time.Since(start)
			}
			if waitFor != "" && strings.Contains(data, waitFor) {
				cmd.Process.Kill()
				<-done
				res.log = readLog(log)
				return res
			}
		}
	}
}

func readLog(p string) string {
	data, _ := os.ReadFile(p)
	return string(data)
}

func markers(log string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		if kv, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "BANGER-TEST "); ok {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
	}
	return m
}

func needBootTools(t *testing.T) {
	t.Helper()
	if testing.Short() {
		prereq.ByDesign(t, "boots QEMU; skipped with -short")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			prereq.Missing(t, "%s not installed (apt-get install qemu-system-x86 e2fsprogs)", tool)
		}
	}
	if err := checkStaticELF("/bin/busybox"); err != nil {
		prereq.Missing(t, "a static /bin/busybox is needed (apt-get install busybox-static): %v", err)
	}
}

func TestBootInitrd(t *testing.T) {
	needBootTools(t)
	b := realBundle(t)
	good := testRoot(t, map[string]string{"bin/busybox": "@/bin/busybox", "sbin/init": testInit})
	base := bootCmdline("/dev/vda", "/dev/vdb") + " virtio-blk.queue_depth=64"

	for _, k := range []struct{ name, kernel string }{
		{"vmlinux", b.Kernel},
		{"bzImage", filepath.Join(filepath.Dir(b.Kernel), "vmlinuz")},
	} {
		t.Run("boots "+k.name, func(t *testing.T) {
			res := boot(t, k.kernel, b.Initrd, base, []string{good, b.Modules}, "")
			m := markers(res.log)
			if m["done"] == "" && !strings.Contains(res.log, "BANGER-TEST done") {
				t.Fatalf("guest did not finish; console:\n%s", res.log)
			}
			t.Logf("QEMU start to rootfs init output: %s (exited by itself: %v)", res.elapsed.Round(time.Millisecond), res.exited)
			t.Logf("initrd: %s", grepLine(res.log, "banger initrd:"))
			t.Logf("kernel: %s", grepLine(res.log, "Run /init as init process"))
			if os.Getenv("BANGER_TEST_CONSOLE") != "" {
				t.Logf("console:\n%s", res.log)
			}
			checks := map[string]string{
				"uname":          b.Release,
				"queue_depth":    "64", // param from the command line, '-' normalised
				"docker-modules": "ok", // loaded from the modules drive by modprobe
			}
			for k, want := range checks {
				if m[k] != want {
					t.Errorf("%s = %q, want %q", k, m[k], want)
				}
			}
			for _, mod := range []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "vmw_vsock_virtio_transport", "overlay", "bridge"} {
				if !strings.Contains(","+m["modules"], ","+mod+",") {
					t.Errorf("module %s not loaded: %s", mod, m["modules"])
				}
			}
			if !strings.HasPrefix(m["root"], "/dev/vda ext4 rw") {
				t.Errorf("root mount %q", m["root"])
			}
			if !res.exited {
				t.Error("poweroff -f did not end QEMU")
			}
		})
	}

	agent := realAgent(t)
	tests := []struct {
		name    string
		drives  []string
		cmdline string
		want    string
		waitFor string
	}{
		{"no init", []string{testRoot(t, map[string]string{"etc/hostname": "x"})}, base,
			"the root filesystem has no init: neither /sbin/init nor /usr/lib/banger/banger-agent exists", ""},
		{"no root drive", nil, base, "banger initrd: root device /dev/vda did not appear after 10s", ""},
		{"bad init= falls back to agent", []string{testRoot(t, map[string]string{"usr/lib/banger/banger-agent": "@" + agent})},
			base + " init=/nope", "/nope not found in the root filesystem; running /usr/lib/banger/banger-agent as init",
			"running /usr/lib/banger/banger-agent as init"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := boot(t, b.Kernel, b.Initrd, tt.cmdline, tt.drives, tt.waitFor)
			if !strings.Contains(res.log, tt.want) {
				t.Fatalf("console lacks %q:\n%s", tt.want, res.log)
			}
			if tt.waitFor == "" && !res.exited {
				t.Errorf("QEMU did not exit after the error (the initrd must power off)")
			}
			if tt.waitFor == "" && !strings.Contains(res.log, "banger initrd: powering off") {
				t.Errorf("no power-off notice")
			}
		})
	}
}

// TestBootCorruptInitrd documents what a damaged initrd does: the kernel
// cannot find /init, panics, and with panic=1 and -no-reboot QEMU exits on
// its own, so a VMM sees a dead VM rather than a hang.
func TestBootCorruptInitrd(t *testing.T) {
	needBootTools(t)
	b := realBundle(t)
	data, err := os.ReadFile(b.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "initrd.img")
	os.WriteFile(bad, data[:len(data)/2], 0o644)
	if err := VerifyInitrd(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("VerifyInitrd(truncated) = %v, want ErrInvalid", err)
	}
	root := testRoot(t, map[string]string{"etc/hostname": "x"})
	res := boot(t, b.Kernel, bad, bootCmdline("/dev/vda", ""), []string{root}, "")
	if !res.exited || !strings.Contains(res.log, "Kernel panic") {
		t.Fatalf("exited=%v; console:\n%s", res.exited, res.log)
	}
	t.Logf("console: %s / %s", grepLine(res.log, "nitramfs"), grepLine(res.log, "Kernel panic"))
}

func grepLine(log, prefix string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, prefix) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// TestBootTimes boots the vmlinux and the bzImage of the bundle
// alternately BANGER_TEST_BOOTS times each and logs the median time from
// QEMU start to the rootfs init's first output.
func TestBootTimes(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("BANGER_TEST_BOOTS"))
	if n <= 0 {
		prereq.ByDesign(t, "set BANGER_TEST_BOOTS=N to compare vmlinux and bzImage boot times")
	}
	needBootTools(t)
	b := realBundle(t)
	root := testRoot(t, map[string]string{"bin/busybox": "@/bin/busybox", "sbin/init": "#!/bin/busybox sh\necho BANGER-TEST up\n/bin/busybox poweroff -f\n"})
	kernels := map[string]string{"vmlinux": b.Kernel, "bzImage": filepath.Join(filepath.Dir(b.Kernel), "vmlinuz")}
	times := map[string][]time.Duration{}
	for i := 0; i < n; i++ {
		for _, k := range []string{"vmlinux", "bzImage"} {
			res := boot(t, kernels[k], b.Initrd, bootCmdline("/dev/vda", ""), []string{root}, "BANGER-TEST up")
			if res.elapsed == 0 {
				t.Fatalf("%s boot %d hung; console:\n%s", k, i, res.log)
			}
			times[k] = append(times[k], res.elapsed)
		}
	}
	for k, ts := range times {
		slices.Sort(ts)
		t.Logf("%s: median %s, min %s, max %s over %d boots", k, ts[len(ts)/2].Round(time.Millisecond),
			ts[0].Round(time.Millisecond), ts[len(ts)-1].Round(time.Millisecond), len(ts))
	}
}

// bootCmdline is the command line banger's initrd reads, as the daemon
// builds it (daemon's specFor): the root drive and, when modulesDev is
// not empty, the module tree drive.
func bootCmdline(root, modulesDev string) string {
	s := "root=" + root
	if modulesDev != "" {
		s += " banger.modules=" + modulesDev
	}
	return s
}
