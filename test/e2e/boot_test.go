package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/vmm/kvmcheck"
)

// bootEnv is an env with the fixture kernel imported and the fixture
// rootfs registered as image "fixture".
func bootEnv(t testing.TB) *env {
	t.Helper()
	e := newEnv(t)
	e.ok("kernel", "import", "--deb", fixtureDeb(t), "--name", "generic-6.1")
	e.ok("image", "register", "--name", "fixture", "--rootfs", filepath.Join(fixtures(t), "rootfs.ext4"), "--kernel-ref", "generic-6.1")
	return e
}

type vmInfo struct {
	ID, Name, State, VMM, Accel, IP string
	LastError                       string `json:"last_error"`
	PID                             int
}

func (e *env) inspect(name string) vmInfo {
	e.t.Helper()
	var v vmInfo
	if err := json.Unmarshal([]byte(e.ok("vm", "inspect", name)), &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// A VM boots the Debian kernel from the imported .deb, its agent answers,
// exec reports exit codes exactly, files survive a round trip, and stop
// leaves no QEMU behind.
func TestBootExecAndFiles(t *testing.T) {
	e := bootEnv(t)
	start := time.Now()
	e.ok("vm", "create", "--image", "fixture", "--name", "boot1", "--memory", "1G")
	t.Logf("vm create to agent-ready: %s", time.Since(start).Round(time.Millisecond))
	v := e.inspect("boot1")
	if v.State != "running" || v.VMM != "qemu" || v.PID == 0 {
		t.Fatalf("after create: %+v", v)
	}

	release := regexp.MustCompile(`linux-image-([^_]+)_`).FindStringSubmatch(filepath.Base(fixtureDeb(t)))[1]
	if got := strings.TrimSpace(e.ok("vm", "exec", "boot1", "--", "uname", "-r")); got != release {
		t.Fatalf("uname -r = %q, want %q", got, release)
	}
	for _, tc := range []struct {
		script string
		code   int
	}{{"exit 0", 0}, {"exit 1", 1}, {"exit 42", 42}, {"kill -9 $$", 137}} {
		if r := e.banger("vm", "exec", "boot1", "--", "sh", "-c", tc.script); r.code != tc.code {
			t.Errorf("sh -c %q: exit %d, want %d (stderr %q)", tc.script, r.code, tc.code, r.stderr)
		}
	}
	r := e.banger("vm", "exec", "boot1", "--", "sh", "-c", "echo out; echo err >&2")
	if r.stdout != "out\n" || r.stderr != "err\n" {
		t.Errorf("streams mixed: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if r := e.banger("vm", "exec", "boot1", "--", "no-such-command"); r.code != 127 {
		t.Errorf("missing command: exit %d, want 127", r.code)
	}
	r = e.bangerIn([]byte("hello stdin"), "vm", "exec", "boot1", "--", "cat")
	if r.stdout != "hello stdin" {
		t.Errorf("stdin passthrough: %q", r.stdout)
	}
	r = e.banger("vm", "exec", "boot1", "--cwd", "/etc", "--env", "FOO=bar", "--", "sh", "-c", "pwd; echo $FOO")
	if r.stdout != "/etc\nbar\n" {
		t.Errorf("cwd/env: %q", r.stdout)
	}

	// 100 MiB in and out, same sha256.
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	f, _ := os.Create(src)
	h := sha256.New()
	io.CopyN(io.MultiWriter(f, h), rand.Reader, 100<<20)
	f.Close()
	want := h.Sum(nil)
	start = time.Now()
	e.ok("vm", "cp", src, "boot1:/root/big")
	e.ok("vm", "cp", "boot1:/root/big", filepath.Join(dir, "back"))
	t.Logf("100 MiB put+get: %s", time.Since(start).Round(time.Millisecond))
	back, _ := os.ReadFile(filepath.Join(dir, "back"))
	if got := sha256.Sum256(back); !bytes.Equal(got[:], want) {
		t.Fatal("100 MiB file changed on the round trip")
	}
	guestSum := e.ok("vm", "exec", "boot1", "--", "sha256sum", "/root/big")
	if !strings.HasPrefix(guestSum, hexs(want)) {
		t.Fatalf("guest sha256 %q, want %x", guestSum, want)
	}

	mustContain(t, "console log", e.ok("vm", "logs", "boot1"), "Linux version")
	e.ok("vm", "stop", "boot1")
	if v := e.inspect("boot1"); v.State != "stopped" {
		t.Fatalf("after stop: %+v", v)
	}
	if q := e.procs("qemu-system-x86"); len(q) != 0 {
		t.Fatalf("qemu still running after stop: %v", q)
	}
	// It boots again from its own disk, which kept the file.
	e.ok("vm", "start", "boot1")
	if out := e.ok("vm", "exec", "boot1", "--", "stat", "-c", "%s", "/root/big"); strings.TrimSpace(out) != "104857600" {
		t.Fatalf("file after restart: %q", out)
	}
	e.ok("vm", "delete", "boot1")
	if q := e.procs("qemu-system-x86"); len(q) != 0 {
		t.Fatalf("qemu still running after delete: %v", q)
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// VMs survive a daemon killed with SIGKILL; the new daemon re-adopts them.
// A guest that is not ready in time gives a bounded, actionable error and
// stays inspectable. A connection dropped mid-exec ends the exec.
func TestReadyTimeoutReadoptAndDrop(t *testing.T) {
	e := bootEnv(t)
	stderr := e.fails("vm", "create", "--image", "fixture", "--name", "slow", "--ready-timeout", "2")
	mustContain(t, "timeout error", stderr, `"slow"`, "banger vm logs slow", "banger vm delete slow")
	v := e.inspect("slow")
	if v.State != "failed" || v.PID == 0 {
		t.Fatalf("after timeout the VM should stay up for inspection: %+v", v)
	}
	e.ok("vm", "logs", "slow")
	// --follow keeps streaming while the VM runs.
	fctx, fcancel := context.WithTimeout(context.Background(), 4*time.Second)
	follow := e.cmd(fctx, "vm", "logs", "--follow", "slow")
	var fout bytes.Buffer
	follow.Stdout = &fout
	follow.Run()
	fcancel()
	if fctx.Err() == nil {
		t.Fatal("vm logs --follow returned while the VM runs")
	}
	mustContain(t, "followed log", fout.String(), "Linux version")
	// The daemon dies; the VM lives on and the next daemon re-adopts it.
	if err := syscall.Kill(e.daemonPID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.ok("vm", "list")
	if v2 := e.inspect("slow"); v2.PID != v.PID {
		t.Fatalf("vm not re-adopted: pid %d, was %d", v2.PID, v.PID)
	}
	// Starting it again is refused (it runs); exec reaches it once the agent answers.
	deadline := time.Now().Add(90 * time.Second)
	for {
		r := e.banger("vm", "exec", "slow", "--", "true")
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never answered after re-adoption: %s", r.stderr)
		}
		time.Sleep(time.Second)
	}
	if v := e.inspect("slow"); v.State != "running" {
		t.Fatalf("a VM whose agent answers after the timeout still shows %q", v.State)
	}

	// Kill QEMU under a running exec: the exec ends with an error, no hang.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := e.cmd(ctx, "vm", "exec", "slow", "--", "sleep", "600")
	var se bytes.Buffer
	c.Stderr = &se
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	syscall.Kill(v.PID, syscall.SIGKILL)
	err := c.Wait()
	if ctx.Err() != nil {
		t.Fatal("exec hung after the VM died")
	}
	if err == nil {
		t.Fatal("exec succeeded although the VM died")
	}
	mustContain(t, "dropped exec", se.String(), "lost")
	time.Sleep(500 * time.Millisecond)
	if v := e.inspect("slow"); v.State != "stopped" && v.State != "failed" || v.PID != 0 {
		t.Fatalf("dead VMM not noticed: %+v", v)
	}
	e.ok("vm", "delete", "slow")
}

// Bad kernels and images give clear errors and leave nothing behind.
func TestBadKernelAndImage(t *testing.T) {
	e := newEnv(t)
	stderr := e.fails("kernel", "import", "--deb", "/nonexistent.deb")
	mustContain(t, "missing deb", stderr, "/nonexistent.deb")
	junk := filepath.Join(t.TempDir(), "junk.deb")
	os.WriteFile(junk, bytes.Repeat([]byte("x"), 4096), 0o644)
	stderr = e.fails("kernel", "import", "--deb", junk, "--name", "junk")
	mustContain(t, "corrupt deb", stderr, "junk.deb")
	if out := e.ok("kernel", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("a failed import left a kernel: %s", out)
	}
	stderr = e.fails("image", "register", "--name", "x", "--rootfs", junk, "--kernel-ref", "nope")
	mustContain(t, "unknown kernel", stderr, `kernel "nope"`)
	stderr = e.fails("vm", "create", "--image", "nope")
	mustContain(t, "unknown image", stderr, `image "nope" does not exist`)
	if out := e.ok("vm", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("a failed create left a VM: %s", out)
	}
}

// A corrupt initrd is refused when the kernel is registered. A kernel
// that cannot mount the root (no initrd, so no virtio modules) dies
// early: the error says so and where to look, and no QEMU is left.
func TestCorruptInitrdAndEarlyDeath(t *testing.T) {
	e := bootEnv(t)
	var k struct{ Kernel string }
	json.Unmarshal([]byte(e.ok("kernel", "inspect", "generic-6.1", "--json")), &k)
	mustContain(t, "kernel inspect (human-readable)", e.ok("kernel", "inspect", "generic-6.1"),
		"name:", "generic-6.1", "kernel:", k.Kernel, "release:")
	bad := filepath.Join(t.TempDir(), "initrd.bad")
	os.WriteFile(bad, bytes.Repeat([]byte{0x5a}, 1<<20), 0o644)
	stderr := e.fails("kernel", "register", "--name", "bad-initrd", "--kernel", k.Kernel, "--initrd", bad)
	mustContain(t, "corrupt initrd", stderr, "initrd.bad", "not an initrd")

	e.ok("kernel", "register", "--name", "no-initrd", "--kernel", k.Kernel)
	e.ok("image", "register", "--name", "fixture-bare", "--rootfs", filepath.Join(fixtures(t), "rootfs.ext4"), "--kernel-ref", "no-initrd")
	stderr = e.fails("vm", "create", "--image", "fixture-bare", "--name", "badboot", "--ready-timeout", "60")
	mustContain(t, "early death error", stderr, `"badboot"`, "stopped while booting", "banger vm logs badboot")
	if q := e.procs("qemu-system-x86"); len(q) != 0 {
		t.Fatalf("qemu left running: %v", q)
	}
	mustContain(t, "console log", e.ok("vm", "logs", "badboot"), "Kernel panic")
	if v := e.inspect("badboot"); v.State != "failed" || v.LastError == "" {
		t.Fatalf("failed boot not shown as failed: %+v", v)
	}
	// What a VM uses cannot be deleted under it.
	mustContain(t, "image in use", e.fails("image", "delete", "fixture-bare"), "badboot")
	mustContain(t, "kernel in use", e.fails("kernel", "delete", "no-initrd"), "badboot")
	e.ok("vm", "delete", "badboot")
	e.ok("image", "delete", "fixture-bare")
	e.ok("kernel", "delete", "no-initrd")
}

// vmm = firecracker on a host without /dev/kvm (every machine here) is an
// error that says what to do, before anything is created.
func TestFirecrackerUnavailable(t *testing.T) {
	e := bootEnv(t)
	e.ok("daemon", "stop")
	os.MkdirAll(filepath.Join(e.home, "config"), 0o755)
	os.WriteFile(filepath.Join(e.home, "config", "config.toml"), []byte("vmm = \"firecracker\"\n"), 0o644)
	stderr := e.fails("vm", "create", "--image", "fixture", "--name", "fc")
	if kvmcheck.Check(t.Context(), "/dev/kvm", "qemu-system-x86_64") != nil {
		mustContain(t, "firecracker error", stderr, "firecracker", "kvm", "banger doctor")
	} else {
		// KVM works here: the missing binary is what stops it.
		mustContain(t, "firecracker error", stderr, "firecracker", "banger doctor")
	}
	if out := e.ok("vm", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("a refused create left a VM: %s", out)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.home, "state", "vms")); len(ents) != 0 {
		t.Fatalf("a refused create left files: %v", ents)
	}
	r := e.banger("doctor")
	if r.code == 0 {
		t.Fatal("doctor exits 0 with vmm = firecracker and no /dev/kvm")
	}
	mustContain(t, "doctor", r.stdout, "firecracker", "fail")
}
