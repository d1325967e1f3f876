package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/guest"
	"banger/internal/prereq"
)

// TestQEMUVirtioSerial boots a real microVM (QEMU, TCG) whose initrd runs
// the agent as PID 1, and drives it over QEMU's virtio-serial chardev:
// exec, tty, files, a session that outlives a fast reconnect, and
// shutdown. It needs qemu, the
// Debian cloud kernel fixture and a static busybox.
func TestQEMUVirtioSerial(t *testing.T) {
	if testing.Short() {
		prereq.ByDesign(t, "boots a VM; skipped with -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		prereq.Missing(t, "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	kernelRoot := kernelFixture(t)
	busybox := staticBusybox(t)
	dir := t.TempDir()
	initrd := buildSmokeInitrd(t, dir, kernelRoot, busybox)
	kernels, _ := filepath.Glob(filepath.Join(kernelRoot, "boot", "vmlinuz-*"))

	sock := filepath.Join(dir, "agent.sock")
	ctx := callCtx(t, 3*time.Minute)
	cmd := exec.CommandContext(ctx, qemu, "-M", "microvm,accel=tcg", "-m", "512", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "file:"+filepath.Join(dir, "console.log"),
		"-kernel", kernels[0], "-initrd", initrd,
		"-append", "console=ttyS0 quiet tsc=reliable tsc_early_khz="+hostTSCkHz(t),
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+sock+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+guest.SerialPortName)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once qemu has exited
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "console.log"))
			t.Logf("console:\n%s", b)
		}
	})

	start := time.Now()
	c := dialVM(t, ctx, sock)
	t.Logf("agent ready %v after qemu started", time.Since(start))

	// A host without the VM's key gets nothing: no session, no exec.
	c.Close()
	refusedWithoutKey(t, ctx, func() (net.Conn, error) { return net.Dial("unix", sock) })
	c = dialVM(t, ctx, sock)
	vmExec(t, ctx, c, []string{"sh", "-c", "exit 42"}, false, 42, "")
	vmExec(t, ctx, c, []string{"sh", "-c", "kill -9 $$"}, false, 137, "")
	vmExec(t, ctx, c, []string{"sh", "-c", "test -t 0 && stty size"}, true, 0, "33 99\r\n")
	vmPutGet(t, ctx, c)
	vmSessionStart(t, ctx, c)

	// A fast reconnect: the guest may not see the host leave.
	c.Close()
	c = dialVM(t, ctx, sock)
	vmSessionCheck(t, ctx, c)
	vmExec(t, ctx, c, []string{"cat", "/etc/hostname"}, false, 0, "smokevm\n")
	vmExec(t, ctx, c, []string{"test", "-e", "/root/pwned"}, false, 1, "")

	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("qemu still running 30 s after Shutdown")
	}
}

// refusedWithoutKey checks that a booted agent refuses a host with the
// wrong key, and that the exec it would send never runs.
func refusedWithoutKey(t *testing.T, ctx context.Context, dial func() (net.Conn, error)) {
	t.Helper()
	conn, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	c, err := guest.NewClient(conn, bytes.Repeat([]byte{7}, guest.KeySize), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = c.Exec(hctx, guest.ExecRequest{Argv: []string{"sh", "-c", "echo pwned > /root/pwned"}}, nil, io.Discard, io.Discard)
	if !errors.Is(err, guest.ErrUnauthenticated) {
		t.Fatalf("exec with a wrong key = %v, want ErrUnauthenticated", err)
	}
}

// kernelFixture returns the root of an extracted Debian cloud kernel
// package: the one the internal/vmm/qemu tests extract into
// $BANGER_FIXTURES when it is there, else the fixture .deb (make fixtures)
// extracted into a temp dir here, so this test does not depend on which
// package's tests ran first.
func kernelFixture(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("BANGER_FIXTURES")
	if dir == "" {
		dir = "/var/tmp/banger-fixtures"
	}
	if k, _ := filepath.Glob(filepath.Join(dir, "kernel-*", "boot", "vmlinuz-*")); len(k) > 0 {
		return filepath.Dir(filepath.Dir(k[0]))
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "linux-image-*-cloud-amd64_*.deb"))
	if len(debs) == 0 {
		prereq.Missing(t, "no Debian cloud kernel .deb under %s: run make fixtures (or set BANGER_FIXTURES)", dir)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		prereq.Missing(t, "dpkg-deb not installed (apt-get install dpkg)")
	}
	root := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", debs[len(debs)-1], root).CombinedOutput(); err != nil {
		t.Fatalf("extracting %s: %v\n%s", debs[len(debs)-1], err, out)
	}
	if k, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*")); len(k) == 0 {
		t.Fatalf("%s has no boot/vmlinuz-*", debs[len(debs)-1])
	}
	return root
}

func dialVM(t *testing.T, ctx context.Context, sock string) *guest.Client {
	t.Helper()
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			c, _ := guest.NewClient(conn, testKey, testLogger(t))
			hctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			_, err = c.Hello(hctx)
			cancel()
			if err == nil {
				return c
			}
			c.Close()
			t.Fatalf("hello: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("dialing %s: %v", sock, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func vmExec(t *testing.T, ctx context.Context, c *guest.Client, argv []string, tty bool, wantCode int, wantOut string) {
	t.Helper()
	var out bytes.Buffer
	code, err := c.Exec(ctx, guest.ExecRequest{Argv: argv, TTY: tty, Rows: 33, Cols: 99}, nil, &out, &out)
	if err != nil || code != wantCode || out.String() != wantOut {
		t.Errorf("exec %q = %d, %q, %v; want %d, %q", argv, code, out.String(), err, wantCode, wantOut)
	}
}

func vmPutGet(t *testing.T, ctx context.Context, c *guest.Client) {
	t.Helper()
	const size = 16 << 20
	sent, got := sha256.New(), sha256.New()
	src := io.LimitReader(randReader{rand.NewChaCha8([32]byte{3})}, size)
	if err := c.Put(ctx, "/root/blob", 0o600, 0, 0, io.TeeReader(src, sent)); err != nil {
		t.Fatal(err)
	}
	info, err := c.Get(ctx, "/root/blob", got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) || info.Size != size || info.Mode != 0o600 {
		t.Errorf("get back %+v with a different sha256", info)
	}
}

// vmSessionStart starts a pipe session in the VM and writes it a line
// through an attach that it then leaves.
func vmSessionStart(t *testing.T, ctx context.Context, c *guest.Client) {
	t.Helper()
	_, err := c.SessionStart(ctx, guest.SessionStartRequest{Name: "vm-echo", StdinMode: guest.StdinPipe,
		Argv: []string{"sh", "-c", `read a; echo "got $a"; echo err >&2; read b; echo "got $b"`}})
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := c.SessionAttach(ctx, guest.SessionAttachRequest{Name: "vm-echo", Follow: true, Input: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	var o sessionOutput
	recvUntil(t, st, &o, stdoutHas("got one\n"))
}

// vmSessionCheck finds the session of vmSessionStart still running on a
// new connection, feeds it its last line and reads all of its output.
func vmSessionCheck(t *testing.T, ctx context.Context, c *guest.Client) {
	t.Helper()
	st, info, err := c.SessionAttach(ctx, guest.SessionAttachRequest{Name: "vm-echo", Follow: true, Input: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if info.State != guest.SessionRunning {
		t.Fatalf("session after reconnect: %+v", info)
	}
	if _, err := st.Write([]byte("two\n")); err != nil {
		t.Fatal(err)
	}
	o := recvAll(t, st)
	if o.stdout.String() != "got one\ngot two\n" || o.stderr.String() != "err\n" || o.exit == nil || o.exit.Code != 0 {
		t.Errorf("session output %q %q exit %+v", o.stdout.String(), o.stderr.String(), o.exit)
	}
	vmExec(t, ctx, c, []string{"cat", guest.SessionDir + "/vm-echo/stdout"}, false, 0, "got one\ngot two\n")
}

// staticBusybox finds a statically linked busybox or skips.
func staticBusybox(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/busybox", "/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return p
		}
	}
	prereq.Missing(t, "no static busybox (apt-get install busybox-static)")
	return ""
}

// hostTSCkHz is the TSC frequency to give a TCG guest (see DESIGN.md §2).
func hostTSCkHz(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		prereq.Missing(t, "no /proc/cpuinfo: the TCG guest needs the host TSC frequency")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return strconv.Itoa(int(mhz * 1000))
			}
		}
	}
	prereq.Missing(t, "no cpu MHz in /proc/cpuinfo: the TCG guest needs the host TSC frequency")
	return ""
}

// buildSmokeInitrd writes a cpio initrd: testdata/vminit as /init, the
// virtio modules, busybox, /etc/hostname.
func buildSmokeInitrd(t *testing.T, dir, kernelRoot, busybox string) string {
	t.Helper()
	files := map[string][]byte{
		"etc/hostname": []byte("smokevm\n"),
		// What banger's initrd writes from the seed drive.
		strings.TrimPrefix(guest.AgentKeyPath, "/"): []byte(hex.EncodeToString(testKey) + "\n"),
	}
	modes := map[string]fs.FileMode{}
	initBin := filepath.Join(dir, "init")
	build := exec.Command("go", "build", "-o", initBin, "./testdata/vminit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building vminit: %v\n%s", err, out)
	}
	for src, dst := range map[string]string{initBin: "init", busybox: "bin/busybox"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		files[dst], modes[dst] = b, 0o755
	}
	want := map[string]bool{"virtio.ko": true, "virtio_ring.ko": true, "virtio_mmio.ko": true, "virtio_console.ko": true,
		"vsock.ko": true, "vmw_vsock_virtio_transport_common.ko": true, "vmw_vsock_virtio_transport.ko": true,
		"failover.ko": true, "net_failover.ko": true, "virtio_net.ko": true}
	_ = filepath.WalkDir(filepath.Join(kernelRoot, "lib", "modules"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && want[d.Name()] {
			b, rerr := os.ReadFile(p)
			if rerr == nil {
				files["mods/"+d.Name()] = b
			}
		}
		return nil
	})
	links := map[string]string{}
	for _, c := range []string{"sh", "cat", "stty", "test", "sleep", "kill", "hostname", "ip", "grep", "date", "stat"} {
		links["bin/"+c] = "busybox"
	}
	var buf bytes.Buffer
	writeCpio(t, &buf, files, modes, links)
	p := filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeCpio writes a newc archive: the parent directories, files, links.
func writeCpio(t *testing.T, w io.Writer, files map[string][]byte, modes map[string]fs.FileMode, links map[string]string) {
	t.Helper()
	ino := 1
	entry := func(name string, mode uint32, data []byte) {
		ino++
		hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		pad := func(n int) { _, _ = w.Write(make([]byte, (4-n%4)%4)) }
		_, _ = io.WriteString(w, hdr+name+"\x00")
		pad(len(hdr) + len(name) + 1)
		_, _ = w.Write(data)
		pad(len(data))
	}
	dirs := map[string]bool{}
	for name := range files {
		for d := filepath.Dir(name); d != "."; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range []string{"bin", "etc", "mods", "proc", "sys", "dev", "root", "tmp", "run"} {
		dirs[d] = true
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted) // parents first
	for _, d := range sorted {
		entry(d, 0o040755, nil)
	}
	for name, data := range files {
		mode := modes[name]
		if mode == 0 {
			mode = 0o644
		}
		entry(name, 0o100000|uint32(mode), data)
	}
	for name, target := range links {
		entry(name, 0o120777, []byte(target))
	}
	entry("TRAILER!!!", 0, nil)
}
