package e2e

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/internal/crashpoint"
	"banger/internal/disk"
	"banger/internal/prereq"
)

// crashBinDir holds banger, bangerd and banger-agent built with the
// bangercrash tag: $BANGER_CRASH_BIN_DIR (make test builds bin/crash/),
// else built here once.
var crashBinDir string

func crashBins(t *testing.T) string {
	t.Helper()
	if crashBinDir != "" {
		return crashBinDir
	}
	if d := os.Getenv("BANGER_CRASH_BIN_DIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "bangerd")); err != nil {
			t.Fatalf("BANGER_CRASH_BIN_DIR=%s has no bangerd: run make crash", d)
		}
		crashBinDir = d
		return d
	}
	dir, err := os.MkdirTemp("", "banger-e2e-crash-bin-")
	if err != nil {
		t.Fatal(err)
	}
	if err := build(dir, "e2e-crash", "bangercrash"); err != nil {
		t.Fatal(err)
	}
	crashBinDir = dir
	return dir
}

// TestHelperPushCrashImage is not a test: it pushes test/crash:1, two
// small layers, to the registry named by BANGER_E2E_PUSH_CRASH.
func TestHelperPushCrashImage(t *testing.T) {
	reg := os.Getenv("BANGER_E2E_PUSH_CRASH")
	if reg == "" {
		prereq.ByDesign(t, "helper process only")
	}
	busybox := memLayer(t,
		file{name: "bin/busybox", src: "/bin/busybox", mode: 0o755},
		file{name: "bin/sh", link: "busybox", typ: tar.TypeSymlink},
		file{name: "etc/os-release", body: "ID=tiny\nVERSION_ID=1\n"})
	img := platformImage(t, "amd64", busybox, memLayer(t,
		file{name: "sbin/init", link: "/bin/busybox", typ: tar.TypeSymlink},
		file{name: "etc/motd", body: "crash\n"}))
	ref, err := name.ParseReference(reg+"/test/crash:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

// crashCase is one row of the matrix: kill the daemon at point (at its
// nth hit when at is "@n") while op runs; setup runs before, on a daemon
// that is not armed; after runs once the next daemon started, checks the
// half-made object and returns what became of it.
type crashCase struct {
	point crashpoint.Point
	at    string
	setup func(e *env)
	op    []string
	after func(e *env) string
}

// caseFailed unwinds one case of the matrix: its checks record errors in
// a caseRecorder, whose Fatalf panics with it.
type caseFailed struct{}

// caseRecorder is the matrix's testing.TB while a case runs: errors are
// kept for the case's row (and reported on t), a fatal one ends the case,
// not the matrix.
type caseRecorder struct {
	testing.TB
	name string // the case's point, which each error reported on t names
	errs []string
}

func (r *caseRecorder) Errorf(format string, args ...any) {
	r.TB.Helper()
	msg := fmt.Sprintf(format, args...)
	r.errs = append(r.errs, msg)
	r.TB.Errorf("case %s: %s", r.name, msg)
}

func (r *caseRecorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

func (r *caseRecorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(caseFailed{})
}

func (r *caseRecorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// The crash matrix: for every crash point, the daemon is killed there
// (SIGKILL, from inside, at the exact step) while a CLI call runs; the
// next CLI call starts a new daemon, and then nothing leaks (tap, lease,
// nftables rule, port listener, VMM, mount, temp file), the state and the
// files agree, a VM made before keeps working, and the half-made object
// is complete or gone. One VM ("keep") runs throughout; VMs are created
// with --no-start where the point comes before the boot.
func TestCrashMatrix(t *testing.T) {
	start := time.Now()
	e := newEnv(t)
	e.bin = crashBins(t)
	mirror := newDebMirror(t, fixtureDeb(t))
	srv := exec.Command("ip", "netns", "exec", e.ns, "busybox", "httpd", "-f", "-p", mirrorAddr, "-h", mirror.dir)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	os.MkdirAll(filepath.Join(e.home, "config"), 0o755)
	cfg := fmt.Sprintf("debian_mirror = \"http://%s\"\ndebian_keyring = %q\n", mirrorAddr, mirror.keyring())
	if err := os.WriteFile(filepath.Join(e.home, "config", "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The VMs boot kernel "fixture-k"; generic-6.1 is left for the pulls.
	e.ok("kernel", "import", "--deb", fixtureDeb(t), "--name", "fixture-k")
	e.ok("image", "register", "--name", "fixture", "--rootfs", filepath.Join(fixtures(t), "rootfs.ext4"), "--kernel-ref", "fixture-k")
	startRegistry(t, e)
	push := exec.Command("ip", "netns", "exec", e.ns, os.Args[0], "-test.run=^TestHelperPushCrashImage$", "-test.v")
	push.Env = append(os.Environ(), "BANGER_E2E_PUSH_CRASH="+registryAddr)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("pushing test/crash:1: %v\n%s", err, out)
	}
	e.ok("vm", "create", "--image", "fixture", "--name", "keep", "--memory", "512M", "-p", "127.0.0.1:18090:80")
	e.ok("vm", "session", "start", "keep", "--name", "before", "--", "sleep", "100000")
	t.Logf("matrix world ready in %s", time.Since(start).Round(time.Second))

	cases := crashCases(fixtureDeb(t))
	covered := map[crashpoint.Point]bool{}
	for _, c := range cases {
		covered[c.point] = true
	}
	for _, p := range crashpoint.All {
		if !covered[p] {
			t.Errorf("crash point %s has no case in the matrix", p)
		}
	}

	type row struct {
		point, result string
		took          time.Duration
	}
	var rows []row
	matrixStart := time.Now()
	for _, c := range cases {
		caseStart := time.Now()
		res := runCrashCase(t, e, c)
		rows = append(rows, row{string(c.point) + c.at, res, time.Since(caseStart)})
	}
	var b strings.Builder
	fails := 0
	for _, r := range rows {
		if strings.HasPrefix(r.result, "FAIL") {
			fails++
		}
		fmt.Fprintf(&b, "  %-32s %-6s %s\n", r.point, r.took.Round(100*time.Millisecond), r.result)
	}
	t.Logf("crash matrix: %d points, %d cases, %d failed, %s (world set up in %s):\n%s",
		len(crashpoint.All), len(cases), fails, time.Since(matrixStart).Round(time.Second),
		matrixStart.Sub(start).Round(time.Second), b.String())
}

// runCrashCase runs one case and returns its row's result.
func runCrashCase(t *testing.T, e *env, c crashCase) (result string) {
	rec := &caseRecorder{TB: t, name: string(c.point) + c.at}
	e.t = rec
	defer func() { e.t = t }()
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(caseFailed); !ok {
				panic(v)
			}
		}
		if len(rec.errs) > 0 {
			result = "FAIL: " + strings.Join(rec.errs, "; ")
			// The daemon may still be armed (the op never reached the
			// point): the next case must not meet it.
			e.extra = nil
			e.banger("daemon", "stop")
		}
	}()
	if c.setup != nil {
		c.setup(e)
	}
	e.ok("daemon", "stop")
	logBefore := size(filepath.Join(e.home, "state", "bangerd.log"))
	e.extra = []string{crashpoint.EnvVar + "=" + string(c.point) + c.at}
	r := e.banger(c.op...)
	e.extra = nil
	if r.code == 0 {
		rec.Fatalf("%s: banger %s succeeded: the daemon was never killed there", c.point, strings.Join(c.op, " "))
	}
	log, _ := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log"))
	if !strings.Contains(string(log[min(int64(len(log)), logBefore):]), "crashpoint: killed at "+string(c.point)) {
		rec.Fatalf("%s: banger %s failed, but not by the crash point: %s", c.point, strings.Join(c.op, " "), r.stderr)
	}
	if strings.Contains(r.stderr, "panic:") || strings.Contains(r.stderr, "goroutine ") {
		rec.Errorf("%s: the CLI printed a Go stack trace: %s", c.point, r.stderr)
	}
	// The next call starts a daemon that is not armed.
	result = c.after(e)
	checkCrashWorld(rec, e)
	return result
}

// checkCrashWorld asserts what must hold after any crash and restart.
func checkCrashWorld(t testing.TB, e *env) {
	t.Helper()
	checkNoLeaks(t, e, 2)
	checkStateAgrees(t, e)
	// The VM made before the matrix still works, its session too.
	if r := e.banger("vm", "exec", "keep", "--", "echo", "alive"); r.code != 0 || r.stdout != "alive\n" {
		// What the daemon saw is what tells a flake from a bug.
		insp := e.banger("vm", "inspect", "keep")
		t.Fatalf("keep: exec exit %d, said %q\nstderr: %s\nvm inspect keep: %s\nbangerd.log, its end:\n%s",
			r.code, r.stdout, r.stderr, insp.stdout+insp.stderr, logTail(filepath.Join(e.home, "state", "bangerd.log"), 40))
	}
	if s := e.sessions("keep")["before"]; s.State != "running" {
		t.Errorf("keep's session made before the crash: %+v", s)
	}
}

// checkStateAgrees asserts that the state and the files agree: every
// listed VM, layer, snapshot, image and kernel has its files and every
// file its row, nothing temporary is left, the port listeners and NAT
// rules are the running VMs', and nothing is mounted under the state.
func checkStateAgrees(t testing.TB, e *env) {
	t.Helper()
	var vms []struct {
		ID, Name, State, Dir, IP, Tap, Disk string
		Ports                               []struct {
			Proto    string `json:"proto"`
			HostAddr string `json:"host_addr"`
			HostPort int    `json:"host_port"`
			Active   bool   `json:"active"`
		}
	}
	if err := json.Unmarshal([]byte(e.ok("vm", "list", "--json")), &vms); err != nil {
		t.Fatal(err)
	}
	// The state and the files agree: every VM's directory and disk are
	// there (checkNoLeaks checked every directory has its VM), and every
	// qcow2 layer is a VM's disk or under one (a backing file: what a
	// snapshot froze).
	running := map[string]bool{}
	disks := map[string]bool{}
	var listeners []string
	for _, v := range vms {
		disks[v.Disk] = true
		if !exists(v.Dir) || v.Disk == "" || !exists(v.Disk) {
			t.Errorf("vm %s (%s): its directory %s or its disk %q is missing", v.Name, v.State, v.Dir, v.Disk)
		}
		if v.State == "running" {
			running[v.Tap] = true
			for _, p := range v.Ports {
				if !p.Active {
					t.Errorf("vm %s runs but its forward %s:%d is not active", v.Name, p.HostAddr, p.HostPort)
				}
				listeners = append(listeners, p.Proto+" "+fmt.Sprintf("%s:%d", p.HostAddr, p.HostPort))
			}
		}
	}
	for d := range disks {
		for l := qcow2Backing(t, d); l != ""; l = qcow2Backing(t, l) {
			disks[l] = true
		}
	}
	layers, _ := filepath.Glob(filepath.Join(e.home, "state", "layers", "*.qcow2"))
	for _, l := range layers {
		if !disks[l] {
			t.Errorf("layer %s is no listed vm's disk nor under one: leaked", l)
		}
	}
	// Snapshots: every listed one has its directory, every directory is a
	// listed one's.
	var sns []struct{ Name, State, Dir string }
	json.Unmarshal([]byte(e.ok("snapshot", "list", "--json")), &sns)
	snapDirs := map[string]bool{}
	for _, sn := range sns {
		snapDirs[sn.Dir] = true
		if !exists(sn.Dir) {
			t.Errorf("snapshot %s (%s): its directory %s is missing", sn.Name, sn.State, sn.Dir)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(e.home, "state", "snapshots"))
	for _, ent := range ents {
		if d := filepath.Join(e.home, "state", "snapshots", ent.Name()); !snapDirs[d] {
			t.Errorf("%s is no listed snapshot's: leaked", d)
		}
	}
	// Port listeners: exactly the running VMs' forwards (and the guests'
	// DNS on the bridge, port 53, and the web UI on 127.0.0.1:7777).
	sort.Strings(listeners)
	var got []string
	for _, s := range bangerdSockets(t, e) {
		if !strings.HasSuffix(s, ":53") && s != "tcp 127.0.0.1:7777" {
			got = append(got, s)
		}
	}
	if !slices.Equal(got, listeners) {
		t.Errorf("bangerd listens on %v, the running vms forward %v", got, listeners)
	}
	// NAT rules name no tap but a running VM's.
	for _, r := range e.network().Rules {
		for _, tap := range regexp.MustCompile(`bgtap[0-9a-z]+`).FindAllString(r, -1) {
			if !running[tap] {
				t.Errorf("nftables rule %q names tap %s, no running vm's: leaked", r, tap)
			}
		}
	}
	// Images and kernels: every listed one has its files, every entry of
	// the store is listed, and nothing temporary is left anywhere.
	var ims []struct{ Name, Rootfs string }
	json.Unmarshal([]byte(e.ok("image", "list", "--json")), &ims)
	var imNames []string
	for _, im := range ims {
		imNames = append(imNames, im.Name)
		if st, err := os.Stat(im.Rootfs); err != nil || st.Size() == 0 {
			t.Errorf("image %s is listed but its rootfs %s is missing or empty", im.Name, im.Rootfs)
		}
	}
	var ks []struct{ Name, Kernel, Initrd string }
	json.Unmarshal([]byte(e.ok("kernel", "list", "--json")), &ks)
	var kNames []string
	for _, k := range ks {
		kNames = append(kNames, k.Name)
		for _, f := range []string{k.Kernel, k.Initrd} {
			if f != "" && !exists(f) {
				t.Errorf("kernel %s is listed but %s is missing", k.Name, f)
			}
		}
	}
	for dir, names := range map[string][]string{"images": imNames, "kernels": kNames} {
		ents, _ := os.ReadDir(filepath.Join(e.home, "state", dir))
		for _, ent := range ents {
			if !strings.HasPrefix(ent.Name(), ".") && !slices.Contains(names, ent.Name()) {
				t.Errorf("state/%s/%s is not a listed one: leaked", dir, ent.Name())
			}
		}
	}
	for _, root := range []string{filepath.Join(e.home, "state"), filepath.Join(e.home, "cache")} {
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			for _, pre := range []string{".tmp-", ".trash-", ".del-", ".work"} {
				if strings.HasPrefix(fi.Name(), pre) {
					t.Errorf("temp file left behind: %s", p)
				}
			}
			return nil
		})
	}
	// Mounts: none under the env's home.
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(l); len(f) > 4 && slices.Contains(e.mounts, f[4]) {
				continue
			}
			if strings.Contains(l, e.home) {
				t.Errorf("mount left under the state dir: %s", l)
			}
		}
	}
}

// qcow2Backing returns the backing file of the qcow2 file at path
// (disk.Backing, relative names under the file's directory), "" for none
// or for a file that is not qcow2.
func qcow2Backing(t testing.TB, path string) string {
	b, _, err := disk.Backing(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // a missing disk is reported on its own
		t.Errorf("reading the backing file of %s: %v", path, err)
	}
	if b == "" {
		return ""
	}
	if !filepath.IsAbs(b) {
		b = filepath.Join(filepath.Dir(path), b)
	}
	return filepath.Clean(b)
}

// logTail is the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// vmState is the listed state of vm, "" when it is not listed.
func (e *env) vmState(vm string) string {
	for _, v := range e.settle() {
		if v.Name == vm {
			return v.State
		}
	}
	return ""
}

// imageOutcome checks the image a killed pull was making: complete (its
// rootfs in place) or gone; then that a pull of it now succeeds.
func imageOutcome(e *env) string {
	out := "gone"
	for _, im := range e.imagesList() {
		if im.Name == "crash" {
			out = "complete"
		}
	}
	if out == "complete" {
		e.ok("image", "delete", "crash")
	}
	e.ok("image", "pull", registryAddr+"/test/crash:1", "--name", "crash", "--kernel-ref", "fixture-k")
	e.ok("image", "delete", "crash")
	return out + "; pulled again"
}

func (e *env) imagesList() []struct{ Name, Rootfs string } {
	var ims []struct{ Name, Rootfs string }
	json.Unmarshal([]byte(e.ok("image", "list", "--json")), &ims)
	return ims
}

// kernelOutcome checks the kernel a killed pull (or import) was making.
func kernelOutcome(name string, again []string) func(e *env) string {
	return func(e *env) string {
		out := "gone"
		var ks []struct{ Name string }
		json.Unmarshal([]byte(e.ok("kernel", "list", "--json")), &ks)
		for _, k := range ks {
			if k.Name == name {
				out = "complete"
			}
		}
		if out == "complete" {
			e.ok("kernel", "delete", name)
		}
		if again != nil {
			e.ok(again...)
			e.ok("kernel", "delete", name)
			out += "; made again"
		}
		return out
	}
}

// vmOutcome checks the VM a killed create or start was making: it is one
// of want's states; a running one execs. It returns the state.
func vmOutcome(vm string, want ...string) func(e *env) string {
	return func(e *env) string {
		st := e.vmState(vm)
		if st == "" {
			st = "gone"
		}
		if !slices.Contains(want, st) {
			why := ""
			if st != "gone" {
				why = e.inspect(vm).LastError
			}
			e.t.Errorf("vm %s is %s (%s), want one of %v", vm, st, why, want)
		}
		if st == "running" {
			if out := e.ok("vm", "exec", vm, "--", "echo", "ok"); out != "ok\n" {
				e.t.Errorf("vm %s: exec said %q", vm, out)
			}
		}
		return st
	}
}

// thenDelete runs check, then deletes vm if it is there.
func thenDelete(vm string, check func(e *env) string) func(e *env) string {
	return func(e *env) string {
		st := check(e)
		if e.vmState(vm) != "" {
			e.ok("vm", "delete", "--force", vm)
		}
		return st
	}
}

func removeCache(e *env) { os.RemoveAll(filepath.Join(e.home, "cache", "oci")) }

func crashCases(deb string) []crashCase {
	pull := []string{"image", "pull", registryAddr + "/test/crash:1", "--name", "crash", "--kernel-ref", "fixture-k"}
	kpull := []string{"kernel", "pull", "generic-6.1"}
	create := []string{"vm", "create", "--image", "fixture", "--name", "c1", "--memory", "512M", "-p", "127.0.0.1:18091:80"}
	createNoStart := append(slices.Clone(create), "--no-start")
	start := []string{"vm", "start", "s1"}
	var cs []crashCase
	for _, pt := range []struct {
		p  crashpoint.Point
		at string
	}{
		{crashpoint.ImageLayerWritten, ""}, {crashpoint.ImageLayerCached, ""}, {crashpoint.ImageLayerCached, "@2"},
		{crashpoint.ImageLayerUnpacked, "@2"}, {crashpoint.ImageBeforeExt4, ""}, {crashpoint.ImageAfterExt4, ""},
		{crashpoint.ImageBeforeCommit, ""}, {crashpoint.ImageAfterCommit, ""},
	} {
		cs = append(cs, crashCase{point: pt.p, at: pt.at, setup: removeCache, op: pull, after: imageOutcome})
	}
	for _, p := range []crashpoint.Point{crashpoint.KernelAfterFetch, crashpoint.KernelAfterInitrd, crashpoint.KernelBeforeCommit, crashpoint.KernelAfterCommit} {
		again := kpull
		if p != crashpoint.KernelAfterCommit {
			again = nil // one pull again is proof enough; each takes a while
		}
		cs = append(cs, crashCase{point: p, op: kpull, after: kernelOutcome("generic-6.1", again)})
	}
	cs = append(cs, crashCase{point: crashpoint.KernelImportStarted,
		op:    []string{"kernel", "import", "--deb", deb, "--name", "k2"},
		after: kernelOutcome("k2", nil)})
	for _, p := range []crashpoint.Point{crashpoint.VMCreateAfterRow, crashpoint.VMCreateAfterLease, crashpoint.VMCreateAfterDisk} {
		cs = append(cs, crashCase{point: p, op: createNoStart, after: thenDelete("c1", vmOutcome("c1", "gone"))})
	}
	// Before its first boot is recorded a VM is nobody's yet: it goes.
	// Once recorded starting, the next daemon finishes its boot.
	for _, c := range []struct {
		p    crashpoint.Point
		want []string
	}{
		{crashpoint.VMCreateAfterPorts, []string{"gone"}}, {crashpoint.VMCreateAfterTap, []string{"gone"}},
		{crashpoint.VMCreateAfterVMM, []string{"gone"}},
		{crashpoint.VMCreateAfterStarting, []string{"running"}}, {crashpoint.VMCreateAfterReady, []string{"running"}},
	} {
		cs = append(cs, crashCase{point: c.p, op: create, after: thenDelete("c1", vmOutcome("c1", c.want...))})
	}
	// vm start of s1, made with --no-start by the first case.
	makeS1 := func(e *env) {
		if e.vmState("s1") == "" {
			e.ok("vm", "create", "--image", "fixture", "--name", "s1", "--memory", "512M", "--no-start", "-p", "127.0.0.1:18092:80")
		}
	}
	stopS1 := func(check func(e *env) string) func(e *env) string {
		return func(e *env) string {
			st := check(e)
			if st == "running" {
				e.ok("vm", "stop", "s1")
			}
			return st
		}
	}
	for _, c := range []struct {
		p    crashpoint.Point
		want []string
		stop bool
	}{
		{crashpoint.VMStartAfterPorts, []string{"created", "stopped"}, true},
		{crashpoint.VMStartAfterTap, []string{"created", "stopped"}, true},
		{crashpoint.VMStartAfterVMM, []string{"created", "stopped"}, true},
		{crashpoint.VMStartAfterStarting, []string{"running"}, true},
		{crashpoint.VMStartAfterReady, []string{"running"}, false}, // s1 stays up for the stops
	} {
		after := vmOutcome("s1", c.want...)
		if c.stop {
			after = stopS1(after)
		}
		cs = append(cs, crashCase{point: c.p, setup: makeS1, op: start, after: after})
	}
	runS1 := func(e *env) {
		if e.vmState("s1") != "running" {
			e.ok("vm", "start", "s1")
		}
	}
	for _, p := range []crashpoint.Point{crashpoint.VMStopAfterVMM, crashpoint.VMStopAfterDetach} {
		cs = append(cs, crashCase{point: p, setup: runS1, op: []string{"vm", "stop", "s1"}, after: vmOutcome("s1", "stopped")})
	}
	// vm delete of a VM made for it (not booted: delete's own steps).
	for _, c := range []struct {
		p    crashpoint.Point
		want []string
	}{
		{crashpoint.VMDeleteAfterStop, []string{"created", "stopped", "gone"}},
		{crashpoint.VMDeleteAfterMark, []string{"gone"}}, {crashpoint.VMDeleteAfterFiles, []string{"gone"}},
	} {
		cs = append(cs, crashCase{point: c.p,
			setup: func(e *env) { e.ok("vm", "create", "--image", "fixture", "--name", "d1", "--no-start") },
			op:    []string{"vm", "delete", "d1"}, after: thenDelete("d1", vmOutcome("d1", c.want...))})
	}
	// Session start, port add and vm net on the running keep.
	for _, p := range []crashpoint.Point{crashpoint.SessionAfterGuest, crashpoint.SessionAfterRecord} {
		cs = append(cs, crashCase{point: p, op: []string{"vm", "session", "start", "keep", "--name", "crash", "--", "sleep", "100000"},
			after: sessionOutcome})
	}
	for _, p := range []crashpoint.Point{crashpoint.PortAfterRecord, crashpoint.PortAfterListen} {
		cs = append(cs, crashCase{point: p, op: []string{"vm", "port", "add", "keep", "127.0.0.1:18093:80"}, after: portOutcome})
	}
	for _, p := range []crashpoint.Point{crashpoint.NetAfterRecord, crashpoint.NetAfterApply} {
		cs = append(cs, crashCase{point: p, op: []string{"vm", "net", "keep", "--net", "none"}, after: netOutcome})
	}
	// vm snapshot of keep, which is paused from before the save until the
	// end: the snapshot is complete (a VM made from it runs) or gone, and
	// keep runs on (checkCrashWorld execs in it: a guest left paused would
	// not answer).
	for _, p := range []crashpoint.Point{crashpoint.SnapshotAfterRow, crashpoint.SnapshotAfterSave, crashpoint.SnapshotAfterFreeze} {
		cs = append(cs, crashCase{point: p, op: []string{"vm", "snapshot", "keep", "--name", "cs"}, after: snapshotOutcome})
	}
	// vm create --from-snapshot of rs, a snapshot of keep: a VM killed
	// before it was recorded running is gone (a guest that may still have
	// its source's identity is nobody's), and the same create then works.
	makeRS := func(e *env) {
		if e.snapshotState("rs") == "" {
			e.ok("vm", "snapshot", "keep", "--name", "rs")
		}
	}
	for _, p := range []crashpoint.Point{crashpoint.RestoreAfterVMM, crashpoint.RestoreAfterIdentity} {
		cs = append(cs, crashCase{point: p, setup: makeRS, op: []string{"vm", "create", "--from-snapshot", "rs", "--name", "r1"},
			after: restoreOutcome})
	}
	return cs
}

// snapshotState is the listed state of snapshot name, "" when it is not
// listed.
func (e *env) snapshotState(name string) string {
	var sns []struct{ Name, State string }
	json.Unmarshal([]byte(e.ok("snapshot", "list", "--json")), &sns)
	for _, sn := range sns {
		if sn.Name == name {
			return sn.State
		}
	}
	return ""
}

// snapshotOutcome: the snapshot a killed vm snapshot made is listed ready
// and a VM made from it runs, or it is not listed; keep runs; then the
// name is taken again.
func snapshotOutcome(e *env) string {
	if st := e.vmState("keep"); st != "running" {
		e.t.Errorf("keep is %s after a snapshot of it was killed, want running", st)
	}
	out := "gone"
	if st := e.snapshotState("cs"); st != "" {
		out = st
		if st != "ready" {
			e.t.Errorf("snapshot cs is listed %s, want ready or not listed", st)
		}
		e.ok("vm", "create", "--from-snapshot", "cs", "--name", "cs1")
		if got := e.ok("vm", "exec", "cs1", "--", "echo", "ok"); got != "ok\n" {
			e.t.Errorf("cs1 (from cs): exec said %q", got)
		}
		e.ok("vm", "delete", "--force", "cs1")
		e.ok("snapshot", "delete", "cs")
		out += "; restored"
	}
	e.ok("vm", "snapshot", "keep", "--name", "cs")
	e.ok("snapshot", "delete", "cs")
	return out + "; taken again"
}

// restoreOutcome: the VM a killed restore made is gone; the same create
// then makes it, running.
func restoreOutcome(e *env) string {
	st := vmOutcome("r1", "gone")(e)
	if st != "gone" {
		e.ok("vm", "delete", "--force", "r1")
	}
	e.ok("vm", "create", "--from-snapshot", "rs", "--name", "r1")
	if got := e.ok("vm", "exec", "r1", "--", "echo", "ok"); got != "ok\n" {
		e.t.Errorf("r1 made again: exec said %q", got)
	}
	e.ok("vm", "delete", "--force", "r1")
	return st + "; restored again"
}

// sessionOutcome: the session a killed start made is listed and running
// (the next daemon serves the record, or adopts what the guest runs
// without one) and can be stopped, or it is in neither; then the name
// starts again and the guest runs each session's process once.
func sessionOutcome(e *env) string {
	out := "gone"
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if s, ok := e.sessions("keep")["crash"]; ok {
			out = s.State
			if s.State != "running" {
				e.t.Errorf("session crash is %s (%s), want running or not listed", s.State, s.Reason)
			}
			e.ok("vm", "session", "stop", "keep", "crash")
			break
		}
		if e.guestSleeps() == 1 { // only "before": the guest never ran it
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	e.ok("vm", "session", "start", "keep", "--name", "crash", "--", "sleep", "100000")
	if n := e.guestSleeps(); n != 2 {
		e.t.Errorf("guest runs %d sessions' sleeps, want 2 (before, crash): a session leaked in the guest", n)
	}
	e.ok("vm", "session", "stop", "keep", "crash")
	return out + "; started again"
}

// guestSleeps counts the sessions' sleep processes in keep's guest.
func (e *env) guestSleeps() int {
	n := 0
	out := e.ok("vm", "exec", "keep", "--", "sh", "-c", `for p in /proc/[0-9]*; do tr '\0' ' ' <$p/cmdline 2>/dev/null; echo; done`)
	for _, l := range strings.Split(out, "\n") {
		if l == "sleep 100000 " {
			n++
		}
	}
	return n
}

// portOutcome: the forward a killed port add made is listed and
// listening (checkCrashWorld checks listeners), or not listed.
func portOutcome(e *env) string {
	out := "gone"
	if strings.Contains(e.ok("vm", "port", "list", "keep"), "18093") {
		out = "complete"
		e.ok("vm", "port", "rm", "keep", "127.0.0.1:18093")
	}
	return out
}

// netOutcome: the policy a killed vm net set is the recorded one, and the
// rules in force are what a clean restart makes of the record.
func netOutcome(e *env) string {
	var v struct {
		Net struct{ Mode string } `json:"net"`
	}
	json.Unmarshal([]byte(e.ok("vm", "inspect", "keep")), &v)
	got := e.network().Rules
	e.ok("daemon", "stop")
	want := e.network().Rules
	if !slices.Equal(got, want) {
		e.t.Errorf("rules after the crash differ from a clean restart's:\n got %v\nwant %v", got, want)
	}
	e.ok("vm", "net", "keep", "--net", "nat")
	return "policy " + v.Net.Mode
}
