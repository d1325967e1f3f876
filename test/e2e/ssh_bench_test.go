package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSSHTrue: a fresh VM of the fixture image to a finished
// `ssh true`, with one finish line on both sides.
//   - banger: vm create (disk clone, boot, agent ready) then vm ssh -- true
//     (waits for sshd, a full ssh handshake).
//   - bare: cp --sparse=always of the disk banger would boot, then QEMU
//     with the command line banger used (kernel, initrd, every drive
//     including the seed, the same tap networking on banger's bridge),
//     a wait for the sshd banner on the guest's address (one dial every
//     50 ms from this process, no process spawned per try), then ssh true.
func BenchmarkSSHTrue(b *testing.B) {
	e := bootEnv(b)
	bare := newBareVM(b, e, "tmpl")
	key := filepath.Join(e.home, "config", "ssh", "id_ed25519")
	var banger, qemu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("t%d", i)
		run(b, "ip", "-n", e.ns, "neigh", "flush", "all")
		banger += timed(func() {
			e.ok("vm", "create", "--image", "fixture", "--name", name)
			e.ok("vm", "ssh", name, "--", "true")
		})
		b.StopTimer()
		e.ok("vm", "delete", "--force", name)
		run(b, "ip", "-n", e.ns, "neigh", "flush", "all")
		b.StartTimer()
		d, stop := bare.sshTrue(b, key)
		qemu += d
		b.StopTimer()
		stop()
		b.StartTimer()
	}
	b.StopTimer()
	report(b, "fresh vm to ssh true: vm create + vm ssh -- true vs cp + bare qemu to sshd + ssh true", banger, qemu, "run")
}

// bareVM is what a bare QEMU boot of a banger VM needs: banger's command
// line rewritten to files in dir and to a tap of the test's own.
type bareVM struct {
	e        *env
	dir      string   // root.disk (each boot's copy), seed.tar, sockets
	template string   // the disk as banger would boot it, before any boot
	args     []string // qemu arguments
	ip       string   // the guest's address, from banger.net=
}

// newBareVM creates VM name with banger, copies its prepared disk and
// seed before the first boot, starts it once to read QEMU's command line,
// deletes it, and makes a tap on banger's bridge for the bare boots.
func newBareVM(b testing.TB, e *env, name string) *bareVM {
	b.Helper()
	e.ok("vm", "create", "--no-start", "--image", "fixture", "--name", name)
	var v struct{ Dir, IP, Disk string }
	json.Unmarshal([]byte(e.ok("vm", "inspect", name)), &v)
	bv := &bareVM{e: e, dir: b.TempDir(), ip: v.IP}
	bv.template = filepath.Join(bv.dir, "template.disk")
	// A qcow2 layer names its base (the image's, in the layer store,
	// which stays while the image does): a copy of the layer boots alike.
	run(b, "cp", "--sparse=always", v.Disk, bv.template)
	run(b, "cp", filepath.Join(v.Dir, "seed.tar"), filepath.Join(bv.dir, "seed.tar"))
	e.ok("vm", "start", name)
	var running struct{ PID int }
	json.Unmarshal([]byte(e.ok("vm", "inspect", name)), &running)
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", running.PID))
	if err != nil {
		b.Fatal(err)
	}
	e.ok("vm", "delete", "--force", name)
	var n netInfo
	if err := json.Unmarshal([]byte(e.ok("network", "inspect", "--json")), &n); err != nil || n.Bridge.Name == "" {
		b.Fatalf("network inspect: %v %+v", err, n)
	}
	tap := "bgbare0"
	run(b, "ip", "-n", e.ns, "tuntap", "add", "dev", tap, "mode", "tap")
	run(b, "ip", "-n", e.ns, "link", "set", tap, "master", n.Bridge.Name, "up")
	var k struct{ Modules string }
	json.Unmarshal([]byte(e.ok("kernel", "inspect", "generic-6.1", "--json")), &k)
	drives := map[string]string{"root": filepath.Join(bv.dir, "root.disk"), "seed": filepath.Join(bv.dir, "seed.tar"), "modules": k.Modules}
	bv.args = bareArgs(b, fdsetsToPaths(b, raw, drives), v.Dir, bv.dir, tap)
	for i, a := range bv.args {
		bv.args[i] = strings.ReplaceAll(a, v.Disk, filepath.Join(bv.dir, "root.disk"))
	}
	return bv
}

// fdsetsToPaths rewrites the drives of a QEMU command line read from
// /proc, which banger hands to QEMU as open files (-add-fd ... opaque=ID,
// file=/dev/fdset/N), to the files at paths[ID] that a bare QEMU opens
// itself.
func fdsetsToPaths(b testing.TB, cmdline []byte, paths map[string]string) []byte {
	b.Helper()
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	sets := map[string]string{} // fdset number → drive id
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == "-add-fd" && i+1 < len(args) {
			var set, id string
			for _, f := range strings.Split(args[i+1], ",") {
				if v, ok := strings.CutPrefix(f, "set="); ok {
					set = v
				}
				if v, ok := strings.CutPrefix(f, "opaque="); ok {
					id = v
				}
			}
			sets[set] = id
			i++
			continue
		}
		out = append(out, args[i])
	}
	for i, a := range out {
		var fs []string
		for _, f := range strings.Split(a, ",") {
			if n, ok := strings.CutPrefix(f, "file=/dev/fdset/"); ok {
				p := paths[sets[n]]
				if p == "" {
					b.Fatalf("banger's qemu command line: fdset %s (drive %q) has no file to use instead", n, sets[n])
				}
				f = "file=" + p
			}
			fs = append(fs, f)
		}
		out[i] = strings.Join(fs, ",")
	}
	return []byte(strings.Join(out, "\x00") + "\x00")
}

// bareArgs rewrites a QEMU command line read from /proc: paths in the VM's
// directory move to dir, the tap becomes tap.
func bareArgs(b testing.TB, cmdline []byte, vmDir, dir, tap string) []string {
	b.Helper()
	var args []string
	sawSeed, sawTap := false, false
	for _, a := range strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")[1:] {
		a = strings.ReplaceAll(a, vmDir, dir)
		if strings.HasPrefix(a, "tap,") {
			var fs []string
			for _, f := range strings.Split(a, ",") {
				if strings.HasPrefix(f, "ifname=") {
					f, sawTap = "ifname="+tap, true
				}
				fs = append(fs, f)
			}
			a = strings.Join(fs, ",")
		}
		sawSeed = sawSeed || strings.Contains(a, filepath.Join(dir, "seed.tar"))
		args = append(args, a)
	}
	if !sawSeed || !sawTap {
		b.Fatalf("banger's qemu command line has no seed drive (%t) or tap (%t): %q", sawSeed, sawTap, args)
	}
	return args
}

// start copies the template to root.disk and starts QEMU in the env's
// namespace; stop kills it.
func (bv *bareVM) start(tb testing.TB) (stop func()) {
	tb.Helper()
	os.Remove(filepath.Join(bv.dir, "console.log"))
	run(tb, "cp", "--sparse=always", bv.template, filepath.Join(bv.dir, "root.disk"))
	q := exec.Command("ip", append([]string{"netns", "exec", bv.e.ns, "qemu-system-x86_64"}, bv.args...)...)
	var qerr strings.Builder
	q.Stderr = &qerr
	if err := q.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { q.Wait(); close(exited) }()
	go func() {
		<-exited
		if qerr.Len() > 0 {
			tb.Logf("bare qemu: %s", qerr.String())
		}
	}()
	return func() { q.Process.Kill(); <-exited }
}

// sshTrue times cp, boot to the sshd banner and ssh true, and returns
// with the bare VM still running: stop ends it.
func (bv *bareVM) sshTrue(tb testing.TB, key string) (d time.Duration, stop func()) {
	tb.Helper()
	begin := time.Now()
	stop = bv.start(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := waitBanner(ctx, bv.e.ns, net.JoinHostPort(bv.ip, "22")); err != nil {
		stop()
		con, _ := os.ReadFile(filepath.Join(bv.dir, "console.log"))
		tb.Fatalf("bare qemu: no sshd banner on %s: %v\nargs: %q\nconsole: %s", bv.ip, err, bv.args, tail(string(con), 3000))
	}
	out, err := exec.Command("ip", "netns", "exec", bv.e.ns, "ssh", "-i", key, "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "root@"+bv.ip, "true").CombinedOutput()
	d = time.Since(begin)
	if err != nil {
		stop()
		tb.Fatalf("bare qemu: ssh true: %v\n%s", err, out)
	}
	return d, stop
}

// waitBanner dials addr inside network namespace ns until an SSH server
// greets, every 50 ms, from a thread of this process moved into the
// namespace (so no process is spawned per try).
func waitBanner(ctx context.Context, ns, addr string) error {
	errc := make(chan error, 1)
	go func() {
		// The thread returns to this process's namespace before it is
		// unlocked: a thread left in the test's namespace would put the
		// test process among the namespace's pids, which teardown kills.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		defer func() {
			// Unlock only once back home; else the thread dies with the goroutine.
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		var last error
		for {
			d := net.Dialer{Timeout: time.Second}
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4)
				_, err = io.ReadFull(c, buf)
				c.Close()
				if err == nil && string(buf) == "SSH-" {
					errc <- nil
					return
				}
			}
			last = err
			select {
			case <-ctx.Done():
				errc <- fmt.Errorf("%w (last: %v)", ctx.Err(), last)
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return <-errc
}
