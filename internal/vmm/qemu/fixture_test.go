package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"banger/internal/prereq"
	"banger/internal/vmm"
)

// Boot tests need root, QEMU, Debian's cloud kernel (fetched once into
// $BANGER_FIXTURES, default /var/tmp/banger-fixtures) and busybox-static
// with cpio for a tiny initrd.

// fixtureDir is where the Debian kernel package is cached.
func fixtureDir() string {
	if d := os.Getenv("BANGER_FIXTURES"); d != "" {
		return d
	}
	return "/var/tmp/banger-fixtures"
}

// kernelFixture is an extracted linux-image-*-cloud-amd64 package.
type kernelFixture struct {
	Vmlinuz string // boot/vmlinuz-<ver>
	Modules string // lib/modules/<ver>/kernel
}

var (
	kernelOnce sync.Once
	kernelFix  kernelFixture
	kernelErr  string
)

// needBoot skips the test unless a real VM can be booted here.
func needBoot(t *testing.T) kernelFixture {
	t.Helper()
	if os.Geteuid() != 0 {
		prereq.Missing(t, "boot test needs root")
	}
	if _, err := exec.LookPath(DefaultBin); err != nil {
		prereq.Missing(t, "boot test needs %s (apt-get install qemu-system-x86)", DefaultBin)
	}
	kernelOnce.Do(func() { kernelFix, kernelErr = fetchKernel() })
	if kernelErr != "" {
		prereq.Missing(t, "boot test needs the Debian cloud kernel: %s", kernelErr)
	}
	return kernelFix
}

// fetchKernel finds or downloads and extracts the real package behind the
// linux-image-cloud-amd64 metapackage.
func fetchKernel() (kernelFixture, string) {
	dir := fixtureDir()
	if k, ok := findKernel(dir); ok {
		return k, ""
	}
	out, err := exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").Output()
	if err != nil {
		return kernelFixture{}, "apt-cache depends: " + err.Error()
	}
	pkg := regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*-cloud-amd64)`).FindSubmatch(out)
	if pkg == nil {
		return kernelFixture{}, "no kernel package behind linux-image-cloud-amd64"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return kernelFixture{}, err.Error()
	}
	get := exec.Command("apt-get", "download", string(pkg[1]))
	get.Dir = dir
	if out, err := get.CombinedOutput(); err != nil {
		return kernelFixture{}, "apt-get download: " + err.Error() + ": " + string(out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, string(pkg[1])+"_*.deb"))
	if len(debs) == 0 {
		return kernelFixture{}, "downloaded package not found in " + dir
	}
	root := filepath.Join(dir, "kernel-"+strings.TrimPrefix(string(pkg[1]), "linux-image-"))
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return kernelFixture{}, "dpkg-deb -x: " + err.Error() + ": " + string(out)
	}
	if k, ok := findKernel(dir); ok {
		return k, ""
	}
	return kernelFixture{}, "no vmlinuz after extracting " + debs[0]
}

func findKernel(dir string) (kernelFixture, bool) {
	vmlinuz, _ := filepath.Glob(filepath.Join(dir, "kernel-*", "boot", "vmlinuz-*-cloud-amd64"))
	if len(vmlinuz) == 0 {
		return kernelFixture{}, false
	}
	root := filepath.Dir(filepath.Dir(vmlinuz[0]))
	ver := strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	return kernelFixture{
		Vmlinuz: vmlinuz[0],
		Modules: filepath.Join(root, "lib", "modules", ver, "kernel"),
	}, true
}

// initModules are the modules the test init loads, in dependency order
// (none of them is built into Debian's cloud kernel).
var initModules = []string{
	"drivers/virtio/virtio_ring.ko",
	"drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_mmio.ko",
	"drivers/char/virtio_console.ko",
	"drivers/block/virtio_blk.ko",
	"drivers/input/evdev.ko",
	"drivers/acpi/button.ko",
	"net/core/failover.ko",
	"drivers/net/net_failover.ko",
	"drivers/net/virtio_net.ko",
}

// testInit is /init of the busybox initrd: load the virtio modules, print
// a marker and the block devices, then say hello on the agent port and
// echo what comes back to the console. With banger.test.acpi on the
// kernel command line it powers off when the ACPI power button is pressed;
// with banger.test.shell it runs the lines it reads as commands instead.
const testInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_mmio virtio_console virtio_blk evdev button failover net_failover virtio_net; do insmod /mods/$m.ko; done
if grep -q banger.test.acpi /proc/cmdline; then
  # Power off when the ACPI power button is pressed.
  while [ ! -e /dev/input/event0 ]; do sleep 0.05; done
  exec 4</dev/input/event0
  (head -c 1 <&4 >/dev/null; echo POWER-BUTTON; poweroff -f) &
  echo POWER-WATCH
fi
echo BANGER-INIT-READY
for b in /sys/block/vd*; do echo "BLOCK $(basename $b) $(cat $b/size) $(cat $b/ro)"; done
port=""
for i in $(seq 1 100); do
  for p in /sys/class/virtio-ports/vport*; do
    [ -e "$p" ] && [ "$(cat $p/name)" = banger.agent ] && port=/dev/$(basename $p)
  done
  [ -n "$port" ] && [ -e "$port" ] && break
  sleep 0.05
done
echo "AGENT-PORT $port"
exec 3<>$port
echo hello-from-guest >&3
if grep -q banger.test.shell /proc/cmdline; then
  # A shell on the agent port: each line is a command, its output comes
  # back followed by "END <status>". A read fails while no host client
  # is connected (as after a restore): try again.
  while :; do
    if read -r line <&3; then sh -c "$line" >&3 2>&1 </dev/null; echo "END $?" >&3; else sleep 0.05; fi
  done
fi
read -r line <&3
echo "GOT $line"
[ "$line" = poweroff ] && poweroff -f
sleep 3600
`

var (
	initrdOnce sync.Once
	initrdPath string
	initrdErr  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if initrdPath != "" {
		os.Remove(initrdPath)
	}
	os.Exit(code)
}

// needInitrd builds (once per test binary) an uncompressed newc initrd with
// busybox, the virtio modules and testInit.
func needInitrd(t *testing.T, k kernelFixture) string {
	t.Helper()
	initrdOnce.Do(func() { initrdPath, initrdErr = buildInitrd(k) })
	if initrdErr != "" {
		prereq.Missing(t, "boot test needs a busybox initrd: %s", initrdErr)
	}
	return initrdPath
}

func buildInitrd(k kernelFixture) (string, string) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return "", "busybox not found (apt-get install busybox-static)"
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		return "", "cpio not found (apt-get install cpio)"
	}
	root, err := os.MkdirTemp("", "banger-qemu-initrd-")
	if err != nil {
		return "", err.Error()
	}
	for _, d := range []string{"bin", "dev", "proc", "sys", "mods"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	files := map[string]string{filepath.Join(root, "bin", "busybox"): busybox}
	for _, m := range initModules {
		files[filepath.Join(root, "mods", filepath.Base(m))] = filepath.Join(k.Modules, m)
	}
	for dst, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			return "", err.Error()
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return "", err.Error()
		}
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(testInit), 0o755); err != nil {
		return "", err.Error()
	}
	out := root + ".cpio"
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc > "+out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", "cpio: " + err.Error() + ": " + string(b)
	}
	os.RemoveAll(root)
	return out, ""
}

// testSpec is a small VM whose Dir, not made yet, and console log are in
// a fresh temp dir.
func testSpec(t testing.TB, k kernelFixture, initrd string) vmm.Spec {
	dir := t.TempDir()
	return vmm.Spec{
		ID:         "t" + strings.ReplaceAll(t.Name(), "/", "-"),
		Name:       t.Name(),
		Dir:        filepath.Join(dir, "vm"),
		VCPUs:      1,
		MemoryMiB:  256,
		Kernel:     k.Vmlinuz,
		Initrd:     initrd,
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}
