package firecracker

import (
	"banger/internal/prereq"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// TestContractJailer boots under a stand-in jailer: firecracker sees
// paths inside its chroot, the VM's files are linked into it, and the
// snapshot is moved out of it.
func TestContractJailer(t *testing.T) {
	apiSpec := loadSpec(t)
	d, logPath := newStandinDriver(t, modeOK)
	d.opts.JailerBin = d.opts.Bin
	d.opts.JailerUID, d.opts.JailerGID = os.Getuid(), os.Getgid()
	spec := testSpec(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	m := vmmtest.Start(ctx, t, d, spec)
	root := filepath.Join(spec.Dir, "jail", filepath.Base(d.opts.Bin), instanceID(spec), "root")
	if got := m.Handle().Data[dataJailRoot]; got != root {
		t.Errorf("jail root = %q, want %q", got, root)
	}
	for _, f := range []string{"0-vmlinux", "1-initrd.img", "drive-root", "drive-modules"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("not linked into the jail: %v", err)
		}
	}
	echoThroughAgent(ctx, t, m)
	adopted, err := New(d.opts).Adopt(ctx, spec, m.Handle())
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	snapDir := t.TempDir()
	if err := adopted.(vmm.Snapshotter).Snapshot(ctx, snapDir); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	for _, f := range []string{SnapshotStateName, SnapshotMemoryName} {
		if _, err := os.Stat(filepath.Join(snapDir, f)); err != nil {
			t.Errorf("snapshot not moved out of the jail: %v", err)
		}
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	vmmtest.WaitDone(t, m)
	vmmtest.WaitDone(t, adopted)

	reqs := readRecorded(t, logPath)
	if err := checkOrder(reqs); err != nil {
		t.Error(err)
	}
	got := map[string]string{}
	for _, r := range reqs {
		var b map[string]any
		json.Unmarshal(r.Body, &b)
		for _, k := range []string{"kernel_image_path", "initrd_path", "path_on_host", "uds_path", "log_path", "metrics_path", "snapshot_path"} {
			if v, ok := b[k].(string); ok {
				got[r.Path+" "+k] = v
			}
		}
	}
	want := map[string]string{
		"/boot-source kernel_image_path": "/0-vmlinux",
		"/boot-source initrd_path":       "/1-initrd.img",
		"/drives/root path_on_host":      "/drive-root",
		"/drives/modules path_on_host":   "/drive-modules",
		"/vsock uds_path":                "/" + VsockSocketName,
		"/logger log_path":               "/" + LogName,
		"/metrics metrics_path":          "/" + MetricsName,
		"/snapshot/create snapshot_path": "/" + SnapshotStateName,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("paths firecracker sees (-want +got):\n%s", diff)
	}
	vmmtest.AssertNoLeftovers(t, spec.Dir)
	if _, err := os.Stat(filepath.Join(spec.Dir, "jail")); !os.IsNotExist(err) {
		t.Errorf("jail left behind after exit: %v", err)
	}
	for _, dr := range spec.Drives {
		if _, err := os.Stat(dr.Path); err != nil {
			t.Errorf("removing the jail removed the drive: %v", err)
		}
	}
	validateAll(t, apiSpec, reqs)
}

// The jailer is told to drop to JailerUID/JailerGID, and everything the
// jailed firecracker must open is theirs (and no one else's).
func TestJailerDropsToUID(t *testing.T) {
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root to give the jail to another uid")
	}
	d, _ := newStandinDriver(t, modeOK)
	d.opts.JailerBin = d.opts.Bin
	d.opts.JailerUID, d.opts.JailerGID = 65534, 65533
	spec := testSpec(t)
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	lay, cmd, err := d.jailerCommand(spec)
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(cmd.Args, " ")
	if !strings.Contains(args, "--uid 65534 --gid 65533") {
		t.Errorf("jailer args %q do not drop to 65534:65533", args)
	}
	linked, err := lay.guestPath(spec.Drives[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{lay.jailRoot, filepath.Join(lay.jailRoot, linked)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 65534 || st.Gid != 65533 || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: owner %d:%d mode %04o, want 65534:65533 and private", p, st.Uid, st.Gid, fi.Mode().Perm())
		}
	}
}
