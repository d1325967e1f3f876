package agent

import (
	"banger/internal/prereq"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guest"
)

// TestQEMUVsockNeedsKey boots a microVM with a vhost-vsock device and
// checks, over real AF_VSOCK, what any local user could try: a connection
// to the agent's port without the VM's key gets nothing; with the key it
// is served. It needs /dev/vhost-vsock (absent on machines without
// nested virtualization, where it skips).
func TestQEMUVsockNeedsKey(t *testing.T) {
	if testing.Short() {
		prereq.ByDesign(t, "boots a VM; skipped with -short")
	}
	if f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0); err != nil {
		prereq.ByDesign(t, "needs /dev/vhost-vsock, which this machine lacks (no nested virtualization): the vsock transport is untested here: %v", err)
	} else {
		f.Close()
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		prereq.Missing(t, "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	kroot := kernelFixture(t)
	kernels, _ := filepath.Glob(filepath.Join(kroot, "boot", "vmlinuz-*"))
	dir := t.TempDir()
	initrd := buildSmokeInitrd(t, dir, kroot, staticBusybox(t))
	cid := uint32(1000 + os.Getpid()%50000)
	ctx := callCtx(t, 3*time.Minute)
	cmd := exec.CommandContext(ctx, qemu, "-M", "microvm,accel=tcg", "-m", "512", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "file:"+filepath.Join(dir, "console.log"),
		"-kernel", kernels[0], "-initrd", initrd,
		"-append", "console=ttyS0 quiet tsc=reliable tsc_early_khz="+hostTSCkHz(t),
		"-device", fmt.Sprintf("vhost-vsock-device,guest-cid=%d", cid))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "console.log"))
			t.Logf("console:\n%s", b)
		}
	})
	dial := func() (net.Conn, error) { return dialVsockRetry(ctx, cid) }
	refusedWithoutKey(t, ctx, dial)
	conn, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := guest.NewClient(conn, testKey, testLogger(t))
	defer c.Close()
	vmExec(t, ctx, c, []string{"cat", "/etc/hostname"}, false, 0, "smokevm\n")
	vmExec(t, ctx, c, []string{"test", "-e", "/root/pwned"}, false, 1, "")
}

// dialVsockRetry connects to the agent port of cid until the guest
// listens or ctx is done.
func dialVsockRetry(ctx context.Context, cid uint32) (net.Conn, error) {
	for {
		fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		err = unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: guest.AgentPort})
		if err == nil {
			return fileConn{os.NewFile(uintptr(fd), "vsock")}, nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.ECONNRESET) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, unix.ETIMEDOUT) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// fileConn is a net.Conn over a connected socket file.
type fileConn struct{ *os.File }

func (fileConn) LocalAddr() net.Addr  { return vsockAddr{} }
func (fileConn) RemoteAddr() net.Addr { return vsockAddr{} }

type vsockAddr struct{}

func (vsockAddr) Network() string { return "vsock" }
func (vsockAddr) String() string  { return "vsock" }
