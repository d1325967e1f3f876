package qemu

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/disk"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// guestShell runs commands in a test guest booted with banger.test.shell
// (see testInit), over its agent channel.
type guestShell struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// dialShell connects to m's agent channel. With hello, it first reads the
// greeting a freshly booted guest sends; a restored guest sends none.
func dialShell(ctx context.Context, t *testing.T, m vmm.Machine, hello bool) *guestShell {
	t.Helper()
	conn, err := m.DialAgent(ctx)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	s := &guestShell{t: t, conn: conn, r: bufio.NewReader(conn)}
	if hello {
		if line, err := s.r.ReadString('\n'); err != nil || line != "hello-from-guest\n" {
			t.Fatalf("agent channel said %q, %v; want hello-from-guest", line, err)
		}
	}
	return s
}

// run runs cmd in the guest and returns its output; it fails t when cmd
// fails.
func (s *guestShell) run(cmd string) string {
	s.t.Helper()
	out, status := s.try(cmd)
	if status != 0 {
		s.t.Fatalf("guest %q: status %d: %s", cmd, status, out)
	}
	return out
}

// try runs cmd in the guest and returns its output and exit status.
func (s *guestShell) try(cmd string) (string, int) {
	s.t.Helper()
	if _, err := io.WriteString(s.conn, cmd+"\n"); err != nil {
		s.t.Fatalf("sending %q to the guest: %v", cmd, err)
	}
	var out strings.Builder
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("guest %q: reading: %v (so far %q)", cmd, err, out.String())
		}
		if st, ok := strings.CutPrefix(line, "END "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(st))
			return out.String(), n
		}
		out.WriteString(line)
	}
}

// counter reads the guest's counter (started by startCounter).
func (s *guestShell) counter() int {
	s.t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s.run("cat /tmp/count")))
	if err != nil {
		s.t.Fatalf("guest counter: %v", err)
	}
	return n
}

// startCounter starts a guest process that counts in /tmp/count every
// 0.1 s and notes its pid in /tmp/counter.pid. Each count is renamed into
// place: a read between `>`'s truncate and its write would see nothing.
const startCounter = `mkdir -p /tmp; (i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done) >/dev/null 2>&1 & echo $! > /tmp/counter.pid; sleep 0.3`

// assertCounting fails t unless the guest's counter goes up.
func assertCounting(t *testing.T, s *guestShell, who string) {
	t.Helper()
	a := s.counter()
	time.Sleep(500 * time.Millisecond)
	if b := s.counter(); b <= a {
		t.Errorf("%s: counter went from %d to %d in 0.5 s: the process does not run", who, a, b)
	}
}

// shellSpec is a test VM running the guest shell, with a 8 MiB raw data
// drive at /dev/vda.
func shellSpec(t *testing.T) vmm.Spec {
	k := needBoot(t)
	spec := testSpec(t, k, needInitrd(t, k))
	spec.Cmdline = "banger.test.shell"
	data := filepath.Join(filepath.Dir(spec.ConsoleLog), "data.img")
	if err := os.WriteFile(data, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(data, 8<<20); err != nil {
		t.Fatal(err)
	}
	spec.Drives = []vmm.Drive{{ID: "data", Path: data}}
	return spec
}

// cloneSpec is spec for a clone: its own directory and console, and a
// qcow2 overlay on frozen as its drive.
func cloneSpec(t *testing.T, spec vmm.Spec, name, frozen string) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	c := spec
	c.Name, c.ID = name, name
	c.Dir = filepath.Join(dir, "vm")
	c.ConsoleLog = filepath.Join(dir, "console.log")
	overlay := filepath.Join(dir, "data.qcow2")
	if err := disk.CreateOverlay(t.Context(), frozen, vmm.FormatRaw, overlay, 0); err != nil {
		t.Fatal(err)
	}
	c.Drives = []vmm.Drive{{ID: "data", Path: overlay, Format: vmm.FormatQCOW2}}
	return c
}

// restoreVM restores spec from snap and kills it at cleanup.
func restoreVM(ctx context.Context, t *testing.T, d *Driver, spec vmm.Spec, snap string) vmm.Machine {
	t.Helper()
	m, err := d.Restore(ctx, spec, snap)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(func() {
		m.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(spec.ConsoleLog)
			t.Logf("%s console:\n%s", spec.Name, b)
		}
	})
	return m
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// newShellDriver is a driver for shellSpec guests that logs to t.
func newShellDriver(t *testing.T) *Driver {
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// As the daemon runs it: dropped to a user that owns none of the
	// test's files (-runas), under the seccomp filter.
	return New(Options{Transport: vmm.TransportVirtioSerial, Logger: log, RunAs: "nobody"})
}

// testWriter writes each line to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestSnapshotRestore takes a snapshot the way the daemon does (pause,
// snapshot, freeze the disk, resume) and restores a clone from it: the
// clone goes on where the source was, with a process started before the
// snapshot still running and a file written after it absent, its disk is
// an overlay on the frozen one, the snapshot's memory file is unchanged
// by the clone, and the source carries on. A snapshot of the clone (whose
// RAM is private, so it is streamed) restores too.
func TestSnapshotRestore(t *testing.T) {
	spec := shellSpec(t)
	d := newShellDriver(t)
	src := startVM(t, d, spec)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	sh := dialShell(ctx, t, src, true)
	sh.run(startCounter + "; echo before > /tmp/before")
	sh.run("echo disk-before | dd of=/dev/vda bs=512 seek=0 conv=sync 2>/dev/null; sync")

	snap := filepath.Join(t.TempDir(), "snap")
	frozen := spec.Drives[0].Path
	overlay := filepath.Join(filepath.Dir(spec.ConsoleLog), "data-after.qcow2")
	p := src.(vmm.Pauser)
	start := time.Now()
	if err := p.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.(vmm.Snapshotter).Snapshot(ctx, snap); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	snapshotted := time.Since(start)
	if err := src.(vmm.DiskFreezer).FreezeDisk(ctx, "data", overlay); err != nil {
		t.Fatalf("FreezeDisk after Snapshot of a paused machine: %v", err)
	}
	if err := p.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("pause+snapshot %v, +freeze+resume %v", snapshotted, time.Since(start))
	meta := readMeta(t, snap)
	if meta.Memory != snapMemoryFile {
		t.Errorf("snapshot of a cold-booted machine keeps memory as %q, want %q", meta.Memory, snapMemoryFile)
	}
	st, _ := os.Stat(filepath.Join(snap, snapMemoryName))
	t.Logf("state %d bytes, memory file %d bytes (%d allocated)", meta.StateBytes, st.Size(), allocated(t, filepath.Join(snap, snapMemoryName)))
	memSum := sha256File(t, filepath.Join(snap, snapMemoryName))
	frozenSum := sha256File(t, frozen)

	// The source goes on; what it does now is not in the snapshot.
	assertCounting(t, sh, "source after the snapshot")
	sh.run("echo after > /tmp/after; echo disk-after | dd of=/dev/vda bs=512 seek=0 conv=sync 2>/dev/null; sync")
	if got := sha256File(t, frozen); got != frozenSum {
		t.Error("the frozen disk changed after FreezeDisk: the guest still writes to it")
	}

	cspec := cloneSpec(t, spec, "clone1", frozen)
	start = time.Now()
	clone := restoreVM(ctx, t, d, cspec, snap)
	restored := time.Since(start)
	csh := dialShell(ctx, t, clone, false)
	csh.run("true")
	t.Logf("restore %v, restore to guest answering %v", restored, time.Since(start))
	if got := csh.run("cat /tmp/before"); got != "before\n" {
		t.Errorf("clone's /tmp/before = %q", got)
	}
	if out, st := csh.try("cat /tmp/after"); st == 0 {
		t.Errorf("clone has /tmp/after (%q), written after the snapshot", out)
	}
	csh.run("kill -0 $(cat /tmp/counter.pid)")
	assertCounting(t, csh, "clone")
	if got := csh.run("dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n1"); !strings.HasPrefix(got, "disk-before") {
		t.Errorf("clone's disk starts with %q, want the frozen disk-before", got)
	}
	csh.run("echo clone-write | dd of=/dev/vda bs=512 seek=1 conv=sync 2>/dev/null; sync")
	assertCounting(t, sh, "source beside the clone")
	if got := sh.run("dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n1"); !strings.HasPrefix(got, "disk-after") {
		t.Errorf("source's disk starts with %q, want disk-after", got)
	}

	// A snapshot of the clone streams its private RAM; it restores too.
	snap2 := filepath.Join(t.TempDir(), "snap2")
	start = time.Now()
	if err := clone.(vmm.Snapshotter).Snapshot(ctx, snap2); err != nil {
		t.Fatalf("Snapshot of a restored machine: %v", err)
	}
	t.Logf("streamed snapshot of the clone %v", time.Since(start))
	if meta := readMeta(t, snap2); meta.Memory != snapMemoryStream {
		t.Errorf("snapshot of a restored machine keeps memory as %q, want %q", meta.Memory, snapMemoryStream)
	}
	if _, err := os.Stat(filepath.Join(snap2, snapMemoryName)); err == nil {
		t.Error("streamed snapshot has a memory file")
	}
	assertCounting(t, csh, "clone after its own snapshot")
	c2spec := cloneSpec(t, spec, "clone2", frozen)
	start = time.Now()
	clone2 := restoreVM(ctx, t, d, c2spec, snap2)
	c2sh := dialShell(ctx, t, clone2, false)
	c2sh.run("true")
	t.Logf("restore of the streamed snapshot to guest answering %v", time.Since(start))
	c2sh.run("cat /tmp/before && kill -0 $(cat /tmp/counter.pid)")
	assertCounting(t, c2sh, "clone of the clone")

	if got := sha256File(t, filepath.Join(snap, snapMemoryName)); got != memSum {
		t.Error("the snapshot's memory file changed while clones ran")
	}
	for _, m := range []vmm.Machine{clone2, clone} {
		if err := m.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	assertGone(t, clone, cspec)
	assertGone(t, clone2, c2spec)
}

func readMeta(t *testing.T, dir string) snapMeta {
	t.Helper()
	meta, err := New(Options{Transport: vmm.TransportVirtioSerial}).checkSnapshot(t.Context(), vmm.Spec{}, dir)
	if err != nil && !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("reading snapshot %s: %v", dir, err)
	}
	return meta
}

// allocated is the bytes path takes on disk.
func allocated(t *testing.T, path string) int64 {
	out, err := exec.Command("stat", "-c", "%b %B", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	var blocks, size int64
	fmt.Sscan(string(out), &blocks, &size)
	return blocks * size
}

// TestSnapshotClonesShareMemory restores three clones of one snapshot
// whose guest filled 96 MiB of its RAM, and checks that together they
// take far less memory (PSS) than three guests' worth: the snapshot's
// pages are shared until a clone writes them.
func TestSnapshotClonesShareMemory(t *testing.T) {
	spec := shellSpec(t)
	d := newShellDriver(t)
	src := startVM(t, d, spec)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	sh := dialShell(ctx, t, src, true)
	sh.run("mkdir -p /tmp && dd if=/dev/urandom of=/tmp/fill bs=1M count=96 2>/dev/null")
	snap := filepath.Join(t.TempDir(), "snap")
	if err := src.(vmm.Snapshotter).Snapshot(ctx, snap); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	src.Kill()
	var clones []vmm.Machine
	for i := range 3 {
		c := restoreVM(ctx, t, d, cloneSpec(t, spec, "clone"+strconv.Itoa(i), spec.Drives[0].Path), snap)
		dialShell(ctx, t, c, false).run("md5sum /tmp/fill >/dev/null") // every clone reads all of it
		clones = append(clones, c)
	}
	var pss, rss int64
	for i, c := range clones {
		r := smapsRollup(t, c.Handle().PID)
		t.Logf("clone%d: pss %d MiB (anon %d, file %d), rss %d MiB", i, r["Pss"]>>20, r["Pss_Anon"]>>20, r["Pss_File"]>>20, r["Rss"]>>20)
		pss += r["Pss"]
		rss += r["Rss"]
	}
	guests := int64(3*spec.MemoryMiB) << 20
	t.Logf("3 clones of a %d MiB guest with 96 MiB filled: pss %d MiB, rss %d MiB (3 guests: %d MiB)", spec.MemoryMiB, pss>>20, rss>>20, guests>>20)
	if pss == 0 || pss > guests/2 {
		t.Errorf("3 clones take %d MiB pss, want far less than %d MiB", pss>>20, guests>>20)
	}
}

// smapsRollup returns the fields of /proc/pid/smaps_rollup, in bytes.
func smapsRollup(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	r := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			r[strings.TrimSuffix(f[0], ":")] = kb << 10
		}
	}
	return r
}

// TestRestoreBadSnapshots: a snapshot that is incomplete, corrupt or from
// a machine unlike the spec fails Restore with an error that says so, and
// leaves no process or socket.
func TestRestoreBadSnapshots(t *testing.T) {
	spec := shellSpec(t)
	d := newShellDriver(t)
	src := startVM(t, d, spec)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dialShell(ctx, t, src, true).run("true")
	snap := filepath.Join(t.TempDir(), "snap")
	if err := src.(vmm.Snapshotter).Snapshot(ctx, snap); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if err := src.(vmm.Snapshotter).Snapshot(ctx, snap); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("Snapshot into a used dir = %v, want a refusal", err)
	}
	src.Kill()

	// variant copies snap (the memory file hard-linked: it is only read)
	// and lets change break the copy.
	variant := func(t *testing.T, change func(dir string)) string {
		dir := filepath.Join(t.TempDir(), "snap")
		os.MkdirAll(dir, 0o700)
		for _, n := range []string{snapStateName, snapMetaName} {
			b, err := os.ReadFile(filepath.Join(snap, n))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, n), b, 0o600)
		}
		if err := os.Link(filepath.Join(snap, snapMemoryName), filepath.Join(dir, snapMemoryName)); err != nil {
			t.Fatal(err)
		}
		change(dir)
		return dir
	}
	frozen := spec.Drives[0].Path
	for _, tt := range []struct {
		name   string
		change func(dir string)
		spec   func(s *vmm.Spec)
		want   string
	}{
		{"no state", func(dir string) { os.Remove(filepath.Join(dir, snapStateName)) }, nil, "no readable state"},
		{"corrupt state", func(dir string) {
			os.WriteFile(filepath.Join(dir, snapStateName), []byte("QEVM garbage, not a migration stream"), 0o600)
		}, nil, "loading the machine state"},
		{"truncated state", func(dir string) {
			st, _ := os.Stat(filepath.Join(dir, snapStateName))
			os.Truncate(filepath.Join(dir, snapStateName), st.Size()/2)
		}, nil, "loading the machine state"},
		{"no metadata", func(dir string) { os.Remove(filepath.Join(dir, snapMetaName)) }, nil, "not a complete qemu snapshot"},
		{"corrupt metadata", func(dir string) { os.WriteFile(filepath.Join(dir, snapMetaName), []byte("{"), 0o600) }, nil, "corrupt"},
		{"no memory file", func(dir string) { os.Remove(filepath.Join(dir, snapMemoryName)) }, nil, "guest memory file"},
		{"another drive", func(string) {}, func(s *vmm.Spec) {
			s.Drives = append(s.Drives, vmm.Drive{ID: "more", Path: frozen, ReadOnly: true})
		}, "drives (read-only flags in order): snapshot 1 [rw], here 2 [rw ro]"},
		{"more memory", func(string) {}, func(s *vmm.Spec) { s.MemoryMiB *= 2 }, "memory MiB: snapshot 256, here 512"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := variant(t, tt.change)
			c := cloneSpec(t, spec, "bad", frozen)
			if tt.spec != nil {
				tt.spec(&c)
			}
			m, err := d.Restore(ctx, c, dir)
			if err == nil {
				m.Kill()
				t.Fatal("Restore succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Restore = %v\nwant it to say %q", err, tt.want)
			}
			t.Logf("Restore: %v", err)
			vmmtest.AssertNoLeftovers(t, c.Dir, pidFileName)
		})
	}
}

// TestFreezeDisk: after FreezeDisk the guest's writes go to the overlay
// and the frozen file stays as it was, while the guest reads both its
// old and new data; bad requests are refused and change nothing.
func TestFreezeDisk(t *testing.T) {
	spec := shellSpec(t)
	ro := filepath.Join(filepath.Dir(spec.ConsoleLog), "ro.img")
	os.WriteFile(ro, make([]byte, 1<<20), 0o600)
	spec.Drives = append(spec.Drives, vmm.Drive{ID: "ro", Path: ro, ReadOnly: true})
	m := startVM(t, newShellDriver(t), spec)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	sh := dialShell(ctx, t, m, true)
	sh.run("dd if=/dev/urandom of=/dev/vda bs=4096 count=64 2>/dev/null; sync")
	before := sh.run("dd if=/dev/vda bs=4096 count=64 2>/dev/null | md5sum")
	frozen := spec.Drives[0].Path
	overlay := filepath.Join(t.TempDir(), "data.qcow2")
	f := m.(vmm.DiskFreezer)

	for _, tt := range []struct{ name, drive, overlay, want string }{
		{"unknown drive", "nope", overlay, `no drive "nope" (drives: [data ro])`},
		{"read-only drive", "ro", overlay, "read-only"},
		{"relative overlay", "data", "data.qcow2", "absolute path"},
		{"existing overlay", "data", frozen, "already exists"},
	} {
		if err := f.FreezeDisk(ctx, tt.drive, tt.overlay); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: FreezeDisk = %v, want it to say %q", tt.name, err, tt.want)
		}
	}
	if _, err := os.Stat(overlay); err == nil {
		t.Fatal("a refused FreezeDisk made the overlay")
	}
	// A failure inside QEMU (no such device node) leaves no overlay.
	mm := m.(*Machine)
	mm.drives = append(mm.drives, vmm.Drive{ID: "ghost", Path: frozen})
	if err := f.FreezeDisk(ctx, "ghost", overlay); err == nil {
		t.Error("FreezeDisk of a drive QEMU lacks succeeded")
	} else if _, serr := os.Stat(overlay); serr == nil {
		t.Errorf("FreezeDisk failed (%v) but left the overlay", err)
	}
	mm.drives = mm.drives[:2]

	start := time.Now()
	if err := f.FreezeDisk(ctx, "data", overlay); err != nil {
		t.Fatalf("FreezeDisk: %v", err)
	}
	t.Logf("FreezeDisk %v", time.Since(start))
	sum := sha256File(t, frozen)
	sh.run("dd if=/dev/urandom of=/dev/vda bs=4096 seek=100 count=64 conv=fsync 2>/dev/null")
	if got := sh.run("dd if=/dev/vda bs=4096 count=64 2>/dev/null | md5sum"); got != before {
		t.Errorf("guest's old data reads %q after the freeze, was %q", got, before)
	}
	after := sh.run("dd if=/dev/vda bs=4096 skip=100 count=64 2>/dev/null | md5sum")
	if got := sha256File(t, frozen); got != sum {
		t.Error("the frozen file changed while the guest wrote")
	}
	backing, isQCOW2, err := disk.Backing(overlay)
	if err != nil || !isQCOW2 || backing != frozen {
		t.Errorf("overlay backing = %q (qcow2 %v, %v), want %s", backing, isQCOW2, err, frozen)
	}
	// What the guest wrote after the freeze is in the overlay: a VM on
	// another overlay of it sees it (qemu-img reads the chain).
	raw := filepath.Join(t.TempDir(), "blocks.raw")
	out, err := exec.Command("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", overlay, raw).CombinedOutput()
	if err == nil {
		b, _ := os.ReadFile(raw)
		h := fmt.Sprintf("%x", md5.Sum(b[100*4096:164*4096]))
		if !strings.HasPrefix(after, h) {
			t.Errorf("overlay's blocks 100-163 hash %s, guest read %q", h, after)
		}
	} else {
		t.Errorf("qemu-img convert: %v: %s", err, out)
	}
}

// inNetns runs f on a thread moved into the named network namespace, so
// that the QEMU it starts opens its tap there. The thread goes back to
// the test's namespace before it is let go.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			t.Error(err)
			return // the thread stays locked and exits with the goroutine
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			t.Error(err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns %s: %v", ns, err)
			return
		}
		defer func() {
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		f()
	}()
	<-done
}

// testNetns makes a network namespace with a bridge and the given taps
// on it, and deletes it at cleanup. Nothing on the host
// is touched.
func testNetns(t *testing.T, taps ...string) string {
	t.Helper()
	ns := "banger-qsnap-" + strconv.Itoa(os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %v: %v: %s", ns, args, err, out)
		}
	}
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip("link", "add", "br0", "type", "bridge")
	ip("link", "set", "br0", "up")
	for _, tap := range taps {
		ip("tuntap", "add", tap, "mode", "tap")
		ip("link", "set", tap, "master", "br0")
		ip("link", "set", tap, "up")
	}
	return ns
}

// rxMAC is the MAC virtio-net filters received frames by (QMP
// query-rx-filter): what QEMU thinks the guest's address is.
func rxMAC(ctx context.Context, t *testing.T, m vmm.Machine) string {
	t.Helper()
	ret, err := m.(*Machine).execute(ctx, "query-rx-filter", nil)
	if err != nil {
		t.Fatal(err)
	}
	var f []struct {
		MainMAC string `json:"main-mac"`
	}
	if err := json.Unmarshal(ret, &f); err != nil || len(f) != 1 {
		t.Fatalf("query-rx-filter: %s, %v", ret, err)
	}
	return f[0].MainMAC
}

// TestRestoreNICMAC: a clone restored with another tap and another MAC
// on its command line keeps the NIC's old MAC (QEMU restores it with the
// device state, over the command line's), and once the guest sets the
// new MAC (as the agent's reidentify does) QEMU's receive filter follows.
// Traffic is not checked here: the busybox guest answered no ARP on a
// bridge in trials (see the report of h-qsnap); the e2e tests send real
// traffic to restored systemd guests.
func TestRestoreNICMAC(t *testing.T) {
	spec := shellSpec(t)
	ns := testNetns(t, "tsrc", "tclone")
	const oldMAC, newMAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
	spec.NICs = []vmm.NIC{{ID: "eth0", Tap: "tsrc", MAC: oldMAC}}
	d := newShellDriver(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var src vmm.Machine
	inNetns(t, ns, func() { src = startVM(t, d, spec) })
	if src == nil {
		t.FailNow()
	}
	sh := dialShell(ctx, t, src, true)
	sh.run("ip link set eth0 up")
	if got := rxMAC(ctx, t, src); got != oldMAC {
		t.Fatalf("source NIC filters by %s, want %s", got, oldMAC)
	}
	snap := filepath.Join(t.TempDir(), "snap")
	if err := src.(vmm.Snapshotter).Snapshot(ctx, snap); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	src.Kill()

	cspec := cloneSpec(t, spec, "clone", spec.Drives[0].Path)
	cspec.NICs = []vmm.NIC{{ID: "eth0", Tap: "tclone", MAC: newMAC}}
	var clone vmm.Machine
	inNetns(t, ns, func() { clone = restoreVM(ctx, t, d, cspec, snap) })
	if clone == nil {
		t.FailNow()
	}
	csh := dialShell(ctx, t, clone, false)
	guestMAC := strings.TrimSpace(csh.run("cat /sys/class/net/eth0/address"))
	qemuMAC := rxMAC(ctx, t, clone)
	t.Logf("after restore with mac=%s on the command line: guest sees %s, qemu filters by %s", newMAC, guestMAC, qemuMAC)
	if guestMAC != oldMAC || qemuMAC != oldMAC {
		t.Errorf("restored NIC: guest %s, qemu %s; want both still %s", guestMAC, qemuMAC, oldMAC)
	}
	csh.run("ip link set eth0 address " + newMAC)
	if got := rxMAC(ctx, t, clone); got != newMAC {
		t.Errorf("after the guest set %s, qemu filters by %s", newMAC, got)
	}
	if got := strings.TrimSpace(csh.run("cat /sys/class/net/eth0/address")); got != newMAC {
		t.Errorf("guest's eth0 is %s after setting %s", got, newMAC)
	}
}
