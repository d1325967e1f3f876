package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// TestContractSnapshotRestoreElsewhere snapshots a running VM and
// restores it, beside the source, in another directory, from disks at
// other paths and with another tap: what `vm fork` does. The agent
// connection open at snapshot time is reset; new dials work on both.
func TestContractSnapshotRestoreElsewhere(t *testing.T) {
	apiSpec := loadSpec(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dA, logA := newStandinDriver(t, modeOK)
	specA := testSpec(t)
	a := vmmtest.Start(ctx, t, dA, specA)
	before := dialAgent(ctx, t, a)
	defer before.Close()

	snapDir := t.TempDir()
	if err := a.(vmm.Snapshotter).Snapshot(ctx, snapDir); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	assertReset(t, before)
	echoThroughAgent(ctx, t, a) // the source runs on, and its agent answers

	dB, logB := newStandinDriver(t, modeOK)
	specB := testSpec(t) // another directory, other drive files
	specB.ID, specB.Name = "vm-fork0001", "fork"
	specB.NICs[0].Tap = "tap-test1"
	b, err := dB.Restore(ctx, specB, snapDir)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(func() { b.Kill() })
	checkDriveLinks(t, specB)
	echoThroughAgent(ctx, t, b)
	echoThroughAgent(ctx, t, a)
	for _, m := range []vmm.Machine{a, b} {
		if err := m.Kill(); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		vmmtest.WaitDone(t, m)
	}

	reqsA, reqsB := readRecorded(t, logA), readRecorded(t, logB)
	wantA := []string{
		"GET /version", "PUT /logger", "PUT /metrics",
		"PUT /machine-config", "PUT /boot-source", "PUT /drives/root", "PUT /drives/modules",
		"PUT /network-interfaces/eth0", "PUT /vsock", "PUT /actions InstanceStart",
		"PATCH /vm Paused", "PUT /snapshot/create", "PATCH /vm Resumed",
	}
	if diff := cmp.Diff(wantA, calls(reqsA)); diff != "" {
		t.Errorf("source request sequence (-want +got):\n%s", diff)
	}
	var create SnapshotCreate
	json.Unmarshal(reqsA[len(reqsA)-2].Body, &create)
	wantCreate := SnapshotCreate{SnapshotType: "Full", SnapshotPath: filepath.Join(snapDir, SnapshotStateName), MemFilePath: filepath.Join(snapDir, SnapshotMemoryName)}
	if diff := cmp.Diff(wantCreate, create); diff != "" {
		t.Errorf("snapshot create body (-want +got):\n%s", diff)
	}
	wantB := []string{"GET /version", "PUT /logger", "PUT /metrics", "PUT /snapshot/load"}
	if diff := cmp.Diff(wantB, calls(reqsB)); diff != "" {
		t.Errorf("restore request sequence (-want +got):\n%s", diff)
	}
	for _, reqs := range [][]recorded{reqsA, reqsB} {
		if err := checkOrder(reqs); err != nil {
			t.Error(err)
		}
	}
	var load SnapshotLoad
	json.Unmarshal(reqsB[len(reqsB)-1].Body, &load)
	wantLoad := SnapshotLoad{
		SnapshotPath:     filepath.Join(snapDir, SnapshotStateName),
		MemBackend:       MemoryBackend{BackendType: "File", BackendPath: filepath.Join(snapDir, SnapshotMemoryName)},
		ResumeVM:         true,
		NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", HostDevName: "tap-test1"}},
		VsockOverride:    &VsockOverride{UDSPath: filepath.Join(specB.Dir, VsockSocketName)},
	}
	if diff := cmp.Diff(wantLoad, load); diff != "" {
		t.Errorf("snapshot load body (-want +got):\n%s", diff)
	}
	for _, dir := range []string{specA.Dir, specB.Dir} {
		vmmtest.AssertNoLeftovers(t, dir, "drive-root", "drive-modules")
	}
	validateAll(t, apiSpec, append(reqsA, reqsB...))
}

// dialAgent opens an agent connection and checks it echoes.
func dialAgent(ctx context.Context, t *testing.T, m vmm.Machine) net.Conn {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := m.DialAgent(dctx)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := vmmtest.Echo(dctx, conn); err != nil {
		t.Fatal(err)
	}
	return conn
}

// assertReset checks that conn was closed by the other side, as
// Firecracker's vsock transport reset does at snapshot time.
func assertReset(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("agent connection open at snapshot time still open after it (read: %v): the stand-in should reset it", err)
	}
}

// TestSnapshotPausedStaysPaused: a paused VM is not resumed by a snapshot.
func TestSnapshotPausedStaysPaused(t *testing.T) {
	apiSpec := loadSpec(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	d, logPath := newStandinDriver(t, modeOK)
	m := vmmtest.Start(ctx, t, d, testSpec(t))
	t.Cleanup(func() { m.Kill() })
	if err := m.(vmm.Pauser).Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.(vmm.Snapshotter).Snapshot(ctx, t.TempDir()); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	info, err := m.(*machine).client.Instance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != "Paused" {
		t.Errorf("state after snapshot of a paused vm = %q, want Paused", info.State)
	}
	reqs := readRecorded(t, logPath)
	got := calls(reqs)
	if diff := cmp.Diff([]string{"PATCH /vm Paused", "PUT /snapshot/create", "GET /"}, got[len(got)-3:]); diff != "" {
		t.Errorf("requests after boot (-want +got):\n%s", diff)
	}
	m.Kill()
	validateAll(t, apiSpec, reqs)
}

// TestSnapshotFault: a 400 from /snapshot/create (the disk filled up)
// comes back with Firecracker's fault_message, the VM is resumed, and
// no part of the snapshot is left, in dir or in the jail.
func TestSnapshotFault(t *testing.T) {
	for _, jailed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "jailer"}[jailed], func(t *testing.T) {
			apiSpec := loadSpec(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			d, logPath := newStandinDriver(t, modeSnapFault)
			if jailed {
				d.opts.JailerBin = d.opts.Bin
				d.opts.JailerUID, d.opts.JailerGID = os.Getuid(), os.Getgid()
			}
			m := vmmtest.Start(ctx, t, d, testSpec(t))
			t.Cleanup(func() { m.Kill() })
			snapDir := t.TempDir()
			err := m.(vmm.Snapshotter).Snapshot(ctx, snapDir)
			want := "PUT /snapshot/create: firecracker answered 400: Cannot create snapshot: Memory snapshot error: No space left on device"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Snapshot error = %v, want one containing %q", err, want)
			}
			assertEmpty(t, snapDir)
			if root := m.Handle().Data[dataJailRoot]; root != "" {
				for _, n := range []string{SnapshotStateName, SnapshotMemoryName} {
					if _, err := os.Stat(filepath.Join(root, n)); err == nil {
						t.Errorf("partial snapshot file %s left in the jail", n)
					}
				}
			}
			got := calls(readRecorded(t, logPath))
			if last := got[len(got)-1]; last != "PATCH /vm Resumed" {
				t.Errorf("last request %q: the vm must be resumed after a failed snapshot", last)
			}
			if m.(*machine).paused {
				t.Error("machine believes it is paused after a failed snapshot")
			}
			echoThroughAgent(ctx, t, m)
			m.Kill()
			validateAll(t, apiSpec, readRecorded(t, logPath))
		})
	}
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in snapshot directory: %s", e.Name())
	}
}

// TestSnapshotBadDir: a missing snapshot directory fails before the VM
// is paused.
func TestSnapshotBadDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	d, logPath := newStandinDriver(t, modeOK)
	m := vmmtest.Start(ctx, t, d, testSpec(t))
	t.Cleanup(func() { m.Kill() })
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	n := len(readRecorded(t, logPath))
	for dir, want := range map[string]string{
		filepath.Join(t.TempDir(), "missing"): "create it first",
		file:                                  "is not a directory",
		"":                                    "no snapshot directory",
	} {
		err := m.(vmm.Snapshotter).Snapshot(ctx, dir)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Snapshot(%q) = %v, want an error containing %q", dir, err, want)
		}
	}
	if got := readRecorded(t, logPath)[n:]; len(got) != 0 {
		t.Errorf("requests sent for a bad snapshot directory: %v", calls(got))
	}
}

// TestRestoreBadSnapshotDir: a directory that holds no snapshot is
// refused before any process or file is made.
func TestRestoreBadSnapshotDir(t *testing.T) {
	noMem := t.TempDir()
	os.WriteFile(filepath.Join(noMem, SnapshotStateName), []byte("{}"), 0o600)
	stateDir := t.TempDir()
	os.Mkdir(filepath.Join(stateDir, SnapshotStateName), 0o700)
	os.WriteFile(filepath.Join(stateDir, SnapshotMemoryName), nil, 0o600)
	tests := map[string]struct{ dir, want string }{
		"missing":        {filepath.Join(t.TempDir(), "nope"), "create it first"},
		"empty":          {t.TempDir(), "is not a firecracker snapshot"},
		"no memory":      {noMem, "is not a firecracker snapshot"},
		"state is a dir": {stateDir, "vmstate is not a regular file"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			d, logPath := newStandinDriver(t, modeOK)
			spec := testSpec(t)
			_, err := d.Restore(t.Context(), spec, tt.dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Restore = %v, want an error containing %q", err, tt.want)
			}
			if _, err := os.Stat(spec.Dir); !os.IsNotExist(err) {
				t.Errorf("vm directory made for a bad snapshot: %v", err)
			}
			if pids := standinPIDs(t, logPath); len(pids) != 0 {
				t.Errorf("firecracker started for a bad snapshot: pids %v", pids)
			}
		})
	}
}

// TestRestoreLoadFails: when /snapshot/load answers 400 the error says
// why, and no process, socket, link or directory is left, whether
// firecracker ends itself (as it does) or stays.
func TestRestoreLoadFails(t *testing.T) {
	snap := func(t *testing.T) string {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		d, _ := newStandinDriver(t, modeOK)
		m := vmmtest.Start(ctx, t, d, testSpec(t))
		defer m.Kill()
		dir := t.TempDir()
		if err := m.(vmm.Snapshotter).Snapshot(ctx, dir); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name, mode string
		change     func(*vmm.Spec)
		want       string
	}{
		{"drive missing", modeOK, func(s *vmm.Spec) { os.Remove(s.Drives[0].Path) }, "firecracker answered 400: Load snapshot error: Failed to restore block device root"},
		{"drive missing, firecracker stays", modeLoadStays, func(s *vmm.Spec) { os.Remove(s.Drives[0].Path) }, "Failed to restore block device root"},
		{"drive id not in spec", modeOK, func(s *vmm.Spec) { s.Drives = s.Drives[:1] }, "Failed to restore block device modules"},
		{"no tap for eth0", modeOK, func(s *vmm.Spec) { s.NICs = nil }, "no network override for eth0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			apiSpec := loadSpec(t)
			dir := snap(t)
			d, logPath := newStandinDriver(t, tt.mode)
			spec := testSpec(t)
			tt.change(&spec)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			m, err := d.Restore(ctx, spec, dir)
			if err == nil {
				m.Kill()
				t.Fatal("Restore succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "restoring vm test") {
				t.Errorf("Restore error %q, want one naming the vm and containing %q", err, tt.want)
			}
			pids := standinPIDs(t, logPath)
			if len(pids) != 1 {
				t.Fatalf("stand-in pids %v, want one", pids)
			}
			assertDead(t, pids[0])
			if _, err := os.Stat(spec.Dir); !os.IsNotExist(err) {
				ents, _ := os.ReadDir(spec.Dir)
				t.Errorf("vm directory left after a failed restore: %v %v", err, ents)
			}
			validateAll(t, apiSpec, readRecorded(t, logPath))
		})
	}
}

// standinPIDs lists the stand-in processes started with logPath.
func standinPIDs(t *testing.T, logPath string) []int {
	t.Helper()
	b, err := os.ReadFile(logPath + ".pids")
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, n)
	}
	return pids
}

// assertDead checks that pid is gone (reaped, not only a zombie).
func assertDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Errorf("firecracker pid %d still there after a failed restore", pid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJailRestore snapshots a jailed VM and restores it into
// another jail: the snapshot files and the drives are linked into the new
// root, under the names the snapshot recorded, and the jail goes with
// the process.
func TestJailRestore(t *testing.T) {
	apiSpec := loadSpec(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	jail := func(d *Driver) {
		d.opts.JailerBin = d.opts.Bin
		d.opts.JailerUID, d.opts.JailerGID = os.Getuid(), os.Getgid()
	}
	dA, _ := newStandinDriver(t, modeOK)
	jail(dA)
	a := vmmtest.Start(ctx, t, dA, testSpec(t))
	snapDir := t.TempDir()
	if err := a.(vmm.Snapshotter).Snapshot(ctx, snapDir); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	a.Kill()

	dB, logB := newStandinDriver(t, modeOK)
	jail(dB)
	spec := testSpec(t)
	spec.ID = "vm-fork0002"
	b, err := dB.Restore(ctx, spec, snapDir)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(func() { b.Kill() })
	root := b.Handle().Data[dataJailRoot]
	if root == "" || !strings.HasPrefix(root, spec.Dir) {
		t.Fatalf("jail root %q not under %s", root, spec.Dir)
	}
	for _, dr := range spec.Drives {
		if !sameFile(t, filepath.Join(root, driveName(dr.ID)), dr.Path) {
			t.Errorf("drive %s: the jail's %s is not a link of %s", dr.ID, driveName(dr.ID), dr.Path)
		}
	}
	echoThroughAgent(ctx, t, b)
	b.Kill()
	vmmtest.WaitDone(t, b)
	reqs := readRecorded(t, logB)
	var load SnapshotLoad
	json.Unmarshal(reqs[len(reqs)-1].Body, &load)
	want := SnapshotLoad{
		SnapshotPath:     "/0-" + SnapshotStateName,
		MemBackend:       MemoryBackend{BackendType: "File", BackendPath: "/1-" + SnapshotMemoryName},
		ResumeVM:         true,
		NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", HostDevName: "tap-test0"}},
		VsockOverride:    &VsockOverride{UDSPath: "/" + VsockSocketName},
	}
	if diff := cmp.Diff(want, load); diff != "" {
		t.Errorf("snapshot load body, paths inside the jail (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, "jail")); !os.IsNotExist(err) {
		t.Errorf("jail left behind after exit: %v", err)
	}
	for _, f := range []string{SnapshotStateName, SnapshotMemoryName} {
		if _, err := os.Stat(filepath.Join(snapDir, f)); err != nil {
			t.Errorf("removing the jail removed the snapshot: %v", err)
		}
	}
	validateAll(t, apiSpec, reqs)
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// TestCopyFile: copyFile, the fallback of moveOut when
// the snapshot directory is on another filesystem than the jail, moves
// the content and leaves no source.
func TestCopyFile(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	os.WriteFile(src, []byte("memory"), 0o600)
	if err := copyFile(src, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "memory" {
		t.Errorf("dst = %q", b)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("src left: %v", err)
	}
	if err := copyFile(src, filepath.Join(dir, "nope", "dst")); err == nil {
		t.Error("copy of a missing file succeeded")
	}
}

// TestVersion: Version reports `firecracker --version` and runs it once
// per binary file.
func TestVersion(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	bin := filepath.Join(dir, "firecracker")
	script := func(out string) {
		os.WriteFile(bin, []byte("#!/bin/sh\necho run >> "+count+"\nprintf '"+out+"'\n"), 0o755)
	}
	runs := func() int {
		b, _ := os.ReadFile(count)
		return strings.Count(string(b), "run")
	}
	script(`Firecracker v1.16.1\n\n`)
	d := New(Options{Bin: bin, CheckKVM: func() error { return nil }})
	for range 2 {
		v, err := d.Version(t.Context())
		if err != nil || v != "1.16.1" {
			t.Fatalf("Version = %q, %v; want 1.16.1", v, err)
		}
	}
	if n := runs(); n != 1 {
		t.Errorf("firecracker --version ran %d times, want once (cached)", n)
	}
	// A replaced binary is asked again.
	script(`Firecracker v1.17.0\n\n`)
	os.Chtimes(bin, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	if v, err := d.Version(t.Context()); err != nil || v != "1.17.0" {
		t.Errorf("Version after the binary changed = %q, %v; want 1.17.0", v, err)
	}
	script(`hello\n`)
	os.Chtimes(bin, time.Now().Add(2*time.Minute), time.Now().Add(2*time.Minute))
	if _, err := d.Version(t.Context()); err == nil || !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), "no version") {
		t.Errorf("Version of a binary printing no version = %v, want ErrUnavailable saying so", err)
	}
	missing := New(Options{Bin: filepath.Join(dir, "absent")})
	if _, err := missing.Version(t.Context()); !errors.Is(err, vmm.ErrUnavailable) {
		t.Errorf("Version of a missing binary = %v, want ErrUnavailable", err)
	}
}
