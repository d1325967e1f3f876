package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/image"
	"banger/internal/store"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// The snapshot tests run over a MemDriver with snapshots and qcow2
// layers. Its pretend guests serve the real agent, whose key lives in the
// pretend guest's memory: a restored machine answers to its source's key
// until reidentify gives it its own, as a real restored guest does.
// Reidentify runs in Pretend mode: nothing of the test machine changes.

// guestLog records what the pretend guests' reidentify changed, by
// machine (spec id).
type guestLog struct {
	mu    sync.Mutex
	steps map[string][]string
}

func (g *guestLog) of(id string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.steps[id]...)
}

// snapAgent serves the real agent on conn with the key of the machine's
// guest: the one its memory holds (a restored machine's: its source's),
// written on first use to a file of this machine, where reidentify saves
// the new one.
func snapAgent(g *guestLog) func(ctx context.Context, mc *vmmtest.MemMachine, conn net.Conn) {
	return func(ctx context.Context, mc *vmmtest.MemMachine, conn net.Conn) {
		spec := mc.Spec()
		keyFile := filepath.Join(spec.Dir, "guest-agent.key")
		if mem := mc.Memory(); mem["guest-of"] != spec.ID {
			key := mem["agent-key"]
			if key == "" { // a cold boot: the seed's key
				b, _ := os.ReadFile(filepath.Join(spec.Dir, agentKeyFile))
				key = string(b)
				mc.SetMemory("agent-key", key)
			}
			os.WriteFile(keyFile, []byte(key), 0o600)
			mc.SetMemory("guest-of", spec.ID)
		}
		root := filepath.Join(spec.Dir, "guest-root")
		os.MkdirAll(filepath.Join(root, "etc", "ssh"), 0o755)
		srv := agent.NewServer(nil, func() error { mc.PowerOff(); return nil })
		srv.SetKeyFile(keyFile)
		srv.Pretend(root, func(step, what string) {
			g.mu.Lock()
			g.steps[spec.ID] = append(g.steps[spec.ID], step+" "+what)
			g.mu.Unlock()
		})
		srv.ServeConn(ctx, conn, "test")
	}
}

// running creates and starts a VM of image deb in r.
func running(t *testing.T, r *lifeRig, name string) store.VM {
	t.Helper()
	_, v := r.mustCreate(t, api.CreateVMRequest{Name: name, Image: "deb", DiskBytes: 256 << 20, ReadyTimeoutSeconds: 5})
	if v.State != api.StateRunning {
		t.Fatalf("vm %s is %s", name, v.State)
	}
	return v
}

func newSnapRig(t *testing.T, opts vmmtest.MemOptions) (*lifeRig, *guestLog) {
	t.Helper()
	opts.Layers = true
	return snapRig(t, opts)
}

// newRawSnapRig is newSnapRig over a MemDriver that takes raw disks only,
// as Firecracker does.
func newRawSnapRig(t *testing.T, opts vmmtest.MemOptions) (*lifeRig, *guestLog) {
	t.Helper()
	opts.Layers = false
	return snapRig(t, opts)
}

func snapRig(t *testing.T, opts vmmtest.MemOptions) (*lifeRig, *guestLog) {
	t.Helper()
	needLayerTools(t)
	g := &guestLog{steps: map[string][]string{}}
	opts.Agent = snapAgent(g)
	r := layerRigWith(t, opts)
	r.addImage(t, "deb", 64<<20)
	return r, g
}

// A snapshot of a running VM pauses it, saves its memory, freezes its
// disk (the VM goes on on a new layer over the frozen one) and resumes
// it; a VM created from the snapshot runs on a layer of its own over the
// frozen one, with the source's memory, and its agent took its new
// identity and key. While VMs build on the snapshot it cannot be deleted.
func TestSnapshotAndRestore(t *testing.T) {
	r, g := newSnapRig(t, vmmtest.MemOptions{})
	ctx := t.Context()
	src := running(t, r, "src")
	r.d.Machine(src.ID).SetMemory("process", "sleep 1000 started before the snapshot")

	sn, err := r.m.snapshot(ctx, "src", api.SnapshotVMRequest{Name: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if sn.State != api.SnapshotReady || sn.SourceVM != "src" || sn.VMM != "mem" || sn.VMMVersion != "mem 1" ||
		sn.Kernel != "k" || sn.Image != "deb" || sn.VCPUs != src.VCPUs || sn.MemoryMiB != src.MemoryMiB ||
		sn.DiskBytes != 256<<20 || !sn.Memory || sn.Bytes == 0 || sn.Disk != api.SnapshotDiskLayer {
		t.Errorf("snapshot %+v", sn)
	}
	if got := ops(r.d, src.ID); !slices.Equal(got[len(got)-4:], []string{vmmtest.OpPause, vmmtest.OpSnapshot, vmmtest.OpFreeze, vmmtest.OpResume}) {
		t.Errorf("source ops %v, want pause, snapshot, freeze, resume last", got)
	}
	srcNow := r.state(t, "src")
	stored, _ := r.st.SnapshotByName(ctx, "s1")
	if srcNow.Layer == src.Layer || stored.Layer != src.Layer || srcNow.State != api.StateRunning {
		t.Errorf("source layer %s -> %s (%s), snapshot's %s: want the source on a new layer, the old one the snapshot's", src.Layer, srcNow.Layer, srcNow.State, stored.Layer)
	}
	if b, _, _ := disk.Backing(r.m.layers.path(srcNow.Layer)); b != r.m.layers.path(stored.Layer) {
		t.Errorf("source's new layer backs onto %s, want the frozen layer", b)
	}
	if spec := r.d.Machine(src.ID).Spec(); spec.Drives[0].Path != r.m.layers.path(srcNow.Layer) {
		t.Errorf("the source's vmm writes %s, want its new layer", spec.Drives[0].Path)
	}

	out, err := r.m.create(ctx, api.CreateVMRequest{Name: "clone", FromSnapshot: "s1", ReadyTimeoutSeconds: 5}, nop)
	if err != nil {
		t.Fatal(err)
	}
	clone := r.state(t, "clone")
	if out.State != api.StateRunning || out.Origin != "s1" || out.DiskMethod != disk.MethodOverlay || clone.VCPUs != src.VCPUs {
		t.Errorf("clone %+v", out)
	}
	mc := r.d.Machine(clone.ID)
	if !mc.Restored() || mc.Memory()["process"] == "" {
		t.Errorf("clone restored %v with memory %v, want the source's", mc.Restored(), mc.Memory())
	}
	if b, _, _ := disk.Backing(r.m.layers.path(clone.Layer)); b != r.m.layers.path(stored.Layer) {
		t.Errorf("clone's layer backs onto %s, want the frozen layer", b)
	}
	steps := strings.Join(g.of(clone.ID), "\n")
	for _, want := range []string{"hostname clone", "network 02:00:00:00:00:01 10.0.0.2/24 via 10.0.0.1", "clock ", "sshd reloaded"} {
		if !strings.Contains(steps, want) {
			t.Errorf("clone's reidentify did %q; want %q", steps, want)
		}
	}
	host, _ := os.ReadFile(filepath.Join(clone.Dir, "guest-root", "etc", "ssh", "ssh_host_ed25519_key.pub"))
	if want, _ := hostKey(clone); strings.TrimSpace(string(host)) != want {
		t.Errorf("clone's guest host key %q, want the one banger pinned for it %q", host, want)
	}
	srcKey, _ := loadAgentKey(src)
	cloneKey, _ := loadAgentKey(clone)
	guestKey, _ := os.ReadFile(filepath.Join(clone.Dir, "guest-agent.key"))
	if string(srcKey) == string(cloneKey) || !strings.Contains(string(guestKey), hexKey(cloneKey)) {
		t.Errorf("the clone's guest answers to %q, want its own key, not its source's", guestKey)
	}

	// A snapshot of the clone builds on s1 too.
	if _, err := r.m.snapshot(ctx, "clone", api.SnapshotVMRequest{Name: "s2"}); err != nil {
		t.Fatal(err)
	}
	if got := r.m.snapView(ctx, stored).UsedBy; !slices.Equal(got, []string{"clone", "s2"}) {
		t.Errorf("s1 used by %v, want clone and s2 (its source's disk goes on from it: not a user)", got)
	}
	err = r.m.deleteSnapshot(ctx, "s1")
	if err == nil || !strings.Contains(err.Error(), "vms: clone; snapshots: s2") {
		t.Errorf("delete of a snapshot a VM and a snapshot build on: %v, want a refusal naming them", err)
	}
	if err := r.m.delete(ctx, "clone", true); err != nil {
		t.Fatal(err)
	}
	if err := r.m.deleteSnapshot(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	// Its source still builds on it: the snapshot goes, its layer stays
	// in the source's chain.
	if err := r.m.deleteSnapshot(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if !fileExists(r.m.layers.path(stored.Layer)) {
		t.Error("the frozen layer the source builds on was removed with the snapshot")
	}
	if err := r.m.delete(ctx, "src", true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stored.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("snapshot dir after delete: %v", err)
	}
	for _, f := range r.layerFiles(t) {
		if !strings.HasPrefix(f, "base/") {
			t.Errorf("layer %s left after every vm and snapshot went", f)
		}
	}
}

func hexKey(k []byte) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for _, c := range k {
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&15])
	}
	return b.String()
}

// A restore where it would not work is refused naming what differs, and
// leaves no VM behind.
func TestRestoreRefusals(t *testing.T) {
	r, _ := newSnapRig(t, vmmtest.MemOptions{})
	ctx := t.Context()
	running(t, r, "src")
	if _, err := r.m.snapshot(ctx, "src", api.SnapshotVMRequest{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		req  api.CreateVMRequest
		want []string
	}{
		{"hardware", api.CreateVMRequest{VCPUs: 4, MemoryMiB: 2048}, []string{"cpus: the snapshot's is 2, this one 4", "memory: the snapshot's is 1024M, this one 2048M"}},
		{"image", api.CreateVMRequest{Image: "other"}, []string{"image: the snapshot's is deb, this one other"}},
		{"missing", api.CreateVMRequest{FromSnapshot: "nope"}, []string{`snapshot "nope" does not exist`}},
	} {
		req := c.req
		req.Name = "x"
		if req.FromSnapshot == "" {
			req.FromSnapshot = "s1"
		}
		_, err := r.m.create(ctx, req, nop)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to say %q", c.name, err, w)
			}
		}
	}
	// Another VMM version, and the kernel imported again since.
	r.m.drivers["mem"] = vmmtest.NewMemDriver(vmmtest.MemOptions{Layers: true, Version: "mem 2"})
	os.WriteFile(filepath.Join(r.dir, "kernels", "k", "manifest.json"), []byte(`{"name":"k","kernel":"vmlinux","sha256":"new"}`), 0o644)
	_, err := r.m.create(ctx, api.CreateVMRequest{Name: "x", FromSnapshot: "s1"}, nop)
	for _, w := range []string{"vmm version: the snapshot's is mem 1, this one mem 2", "kernel: k was pulled or imported again"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("restore elsewhere: %v, want it to say %q", err, w)
		}
	}
	if _, err := r.st.VMByName(ctx, "x"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("a refused restore left vm x: %v", err)
	}
}

// A snapshot that fails (the disk fills while the memory is written, or
// the freeze fails) lists nothing, leaves no files, and the VM runs on.
// A stopped VM is refused: snapshots hold memory.
func TestSnapshotFailures(t *testing.T) {
	var failOp string
	r, _ := newSnapRig(t, vmmtest.MemOptions{Fail: func(op string) error {
		if op == failOp {
			return errors.New("no space left on device")
		}
		return nil
	}})
	ctx := t.Context()
	v := running(t, r, "src")
	for _, op := range []string{vmmtest.OpSnapshot, vmmtest.OpFreeze} {
		failOp = op
		_, err := r.m.snapshot(ctx, "src", api.SnapshotVMRequest{Name: "s-" + op})
		if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "nothing of the snapshot was kept") {
			t.Errorf("%s failing: %v", op, err)
		}
		if list, _ := r.m.listSnapshots(ctx); len(list) != 0 {
			t.Errorf("%s failing: snapshots listed %v", op, list)
		}
		if ents, _ := os.ReadDir(r.m.cfg.SnapshotsDir); len(ents) != 0 {
			t.Errorf("%s failing: %d snapshot dirs left", op, len(ents))
		}
		mc := r.d.Machine(v.ID)
		if mc == nil || mc.Paused() || r.state(t, "src").State != api.StateRunning {
			t.Errorf("%s failing: the source is not running on", op)
		}
	}
	failOp = ""
	if _, err := r.m.stop(ctx, "src", true, time.Second); err != nil {
		t.Fatal(err)
	}
	_, err := r.m.snapshot(ctx, "src", api.SnapshotVMRequest{})
	if err == nil || !strings.Contains(err.Error(), "is stopped") || !strings.Contains(err.Error(), "snapshots of stopped vms are not supported") {
		t.Errorf("snapshot of a stopped vm: %v", err)
	}
}

// A daemon killed in the middle of a snapshot left a creating row, its
// directory and the source's new layer: the next start removes the
// snapshot and moves the source onto the new layer (a layer over its
// own: the same disk whether the VMM switched or not).
func TestSnapshotCrashCleanup(t *testing.T) {
	r, _ := newSnapRig(t, vmmtest.MemOptions{})
	ctx := t.Context()
	v := running(t, r, "src")
	next := newLayerName()
	if err := disk.CreateOverlay(ctx, r.m.layers.path(v.Layer), vmm.FormatQCOW2, r.m.layers.path(next), 0); err != nil {
		t.Fatal(err)
	}
	sn := store.Snapshot{ID: "half1", Name: "half", State: api.SnapshotCreating, SourceVM: "src", Layer: v.Layer,
		Dir: filepath.Join(r.m.cfg.SnapshotsDir, "half1"), Meta: marshal(snapshotMeta{Next: next})}
	os.MkdirAll(sn.Dir, 0o700)
	os.WriteFile(filepath.Join(sn.Dir, "state"), []byte("half"), 0o600)
	stray := filepath.Join(r.m.cfg.SnapshotsDir, "stray")
	os.MkdirAll(stray, 0o700)
	if err := r.st.CreateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	m := r.manager(r.d.Restart())
	m.images, m.kernels, m.cfg.UserSSHKey = r.m.images, r.m.kernels, r.m.cfg.UserSSHKey
	if err := m.adoptAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.SnapshotByName(ctx, "half"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("half-made snapshot: %v, want removed", err)
	}
	for _, d := range []string{sn.Dir, stray} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want removed", d, err)
		}
	}
	now := r.state(t, "src")
	if now.Layer != next {
		t.Errorf("source's layer %s, want the new one %s", now.Layer, next)
	}
	for _, l := range []string{v.Layer, next} {
		if !fileExists(m.layers.path(l)) {
			t.Errorf("layer %s of the source's chain was removed", l)
		}
	}
}

// fork is a snapshot and a restore in one step, the source running on;
// a fork that fails leaves neither a VM nor its snapshot.
func TestFork(t *testing.T) {
	var failRestore bool
	r, _ := newSnapRig(t, vmmtest.MemOptions{Fail: func(op string) error {
		if op == vmmtest.OpRestore && failRestore {
			return errors.New("vmm died")
		}
		return nil
	}})
	ctx := t.Context()
	src := running(t, r, "src")
	out, err := r.m.fork(ctx, "src", api.ForkVMRequest{Name: "f1", ReadyTimeoutSeconds: 5}, nop)
	if err != nil {
		t.Fatal(err)
	}
	if out.State != api.StateRunning || out.Origin != "f1-origin" || r.d.Machine(src.ID) == nil {
		t.Errorf("fork %+v; the source runs: %v", out, r.d.Machine(src.ID) != nil)
	}
	if _, err := r.m.fork(ctx, "src", api.ForkVMRequest{}, nop); err == nil || !strings.Contains(err.Error(), "--name") {
		t.Errorf("fork without a name: %v", err)
	}
	failRestore = true
	_, err = r.m.fork(ctx, "src", api.ForkVMRequest{Name: "f2", ReadyTimeoutSeconds: 5}, nop)
	if err == nil || !strings.Contains(err.Error(), "vmm died") {
		t.Fatalf("fork with a failing restore: %v", err)
	}
	if _, err := r.st.VMByName(ctx, "f2"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("failed fork's vm: %v", err)
	}
	if _, err := r.st.SnapshotByName(ctx, "f2-origin"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("failed fork's snapshot: %v", err)
	}
	if r.d.Machine(src.ID) == nil || r.state(t, "src").State != api.StateRunning {
		t.Error("the source does not run on after a failed fork")
	}
}

// pause stops a running VM's vCPUs and resume lets them go; either of a
// VM in the wrong state is refused.
func TestPauseResume(t *testing.T) {
	r, _ := newSnapRig(t, vmmtest.MemOptions{})
	ctx := t.Context()
	v := running(t, r, "src")
	if _, err := r.m.pause(ctx, "src", false); err == nil || !strings.Contains(err.Error(), "only a paused vm can resume") {
		t.Errorf("resume of a running vm: %v", err)
	}
	out, err := r.m.pause(ctx, "src", true)
	if err != nil || out.State != api.StatePaused || !r.d.Machine(v.ID).Paused() {
		t.Fatalf("pause: %v, %+v", err, out)
	}
	if out, err := r.m.pause(ctx, "src", false); err != nil || out.State != api.StateRunning || r.d.Machine(v.ID).Paused() {
		t.Fatalf("resume: %v, %+v", err, out)
	}
	r.m.pause(ctx, "src", true)
	// A paused VM stops cleanly (resumed first, so it hears the request).
	if _, err := r.m.stop(ctx, "src", false, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	got := ops(r.d, v.ID)
	tail := got[slices.Index(got[3:], vmmtest.OpPause)+4:] // after the second pause
	if len(tail) < 2 || tail[0] != vmmtest.OpResume || tail[len(tail)-1] != vmmtest.OpExit || slices.Contains(got, vmmtest.OpKill) {
		t.Errorf("ops %v, want a resume then a clean exit", got)
	}
	if _, err := r.m.pause(ctx, "src", true); err == nil || !strings.Contains(err.Error(), "is stopped") {
		t.Errorf("pause of a stopped vm: %v", err)
	}
}

// An image that a snapshot was taken from cannot be deleted; the refusal
// names it.
func TestImageDeleteNamesSnapshots(t *testing.T) {
	r, _ := newSnapRig(t, vmmtest.MemOptions{})
	running(t, r, "src")
	if _, err := r.m.snapshot(t.Context(), "src", api.SnapshotVMRequest{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	s := &Server{store: r.st}
	users, err := s.imageUsers(t.Context(), "deb")
	if err != nil || !slices.Equal(users, []string{"src", "snapshot s1"}) {
		t.Errorf("users of image deb: %v, %v", users, err)
	}
}

// A daemon killed while a snapshot had the VM paused leaves it paused,
// with a record that says running: the next daemon resumes it. A VM
// recorded paused stays paused.
func TestAdoptResumesVMLeftPaused(t *testing.T) {
	r, _ := newSnapRig(t, vmmtest.MemOptions{})
	ctx := t.Context()
	v := running(t, r, "src")
	w := running(t, r, "kept-paused")
	if _, err := r.m.pause(ctx, "kept-paused", true); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Machine(v.ID).Pause(ctx); err != nil { // as snapshotLocked does, then the kill
		t.Fatal(err)
	}
	d2 := r.d.Restart()
	m := r.manager(d2)
	m.images, m.kernels, m.cfg.UserSSHKey = r.m.images, r.m.kernels, r.m.cfg.UserSSHKey
	if err := m.adoptAll(ctx); err != nil {
		t.Fatal(err)
	}
	if r.d.Machine(v.ID).Paused() {
		t.Error("a vm recorded running, left paused by a killed daemon, is still paused")
	}
	if !r.d.Machine(w.ID).Paused() {
		t.Error("a vm recorded paused was resumed")
	}
}

// markDisk writes mark into the last block of the raw disk at path;
// diskMark reads it back.
func markDisk(t *testing.T, path, mark string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if _, err := f.WriteAt([]byte(fmt.Sprintf("%-16s", mark)), st.Size()-4096); err != nil {
		t.Fatal(err)
	}
}

func diskMark(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	b := make([]byte, 16)
	f.ReadAt(b, st.Size()-4096)
	return strings.TrimSpace(string(b))
}

// A VM with a raw disk (as the Firecracker driver gives) is snapshotted
// with a copy of its disk made while it is paused, and goes on on its
// own disk; a VM created from the snapshot gets a copy of the snapshot's
// disk (not the source's later writes), the source's memory and its own
// identity. Nothing builds on such a snapshot, so it can be deleted while
// its clone runs. Warm starts stay off: each would copy the whole disk.
func TestRawDiskSnapshot(t *testing.T) {
	r, g := newRawSnapRig(t, vmmtest.MemOptions{})
	ctx := t.Context()
	src := running(t, r, "src")
	srcDisk := r.m.rootDisk(src).Path
	if src.Layer != "" || src.DiskMethod == disk.MethodOverlay {
		t.Fatalf("source on layer %q by %s: want a raw disk", src.Layer, src.DiskMethod)
	}
	r.d.Machine(src.ID).SetMemory("process", "started before the snapshot")
	markDisk(t, srcDisk, "before")

	sn, err := r.m.snapshot(ctx, "src", api.SnapshotVMRequest{Name: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := ops(r.d, src.ID); !slices.Equal(got[len(got)-3:], []string{vmmtest.OpPause, vmmtest.OpSnapshot, vmmtest.OpResume}) {
		t.Errorf("source ops %v, want pause, snapshot, resume last (no freeze)", got)
	}
	stored, _ := r.st.SnapshotByName(ctx, "s1")
	snapDisk := filepath.Join(stored.Dir, rootDiskFile)
	if stored.Layer != "" || stored.State != api.SnapshotReady || diskMark(t, snapDisk) != "before" {
		t.Errorf("snapshot layer %q, %s, its disk marked %q: want a ready copy of the disk as it was", stored.Layer, stored.State, diskMark(t, snapDisk))
	}
	if sn.Disk != api.SnapshotDiskCopy {
		t.Errorf("snapshot disk %q, want %q", sn.Disk, api.SnapshotDiskCopy)
	}
	if sn.Bytes < allocated(srcDisk) {
		t.Errorf("snapshot takes %d bytes, the disk %d: its disk copy is not counted", sn.Bytes, allocated(srcDisk))
	}
	if now := r.state(t, "src"); now.Layer != "" || now.State != api.StateRunning || r.d.Machine(src.ID).Spec().Drives[0].Path != srcDisk {
		t.Errorf("source after the snapshot: layer %q, %s, writing %s; want running on its own disk", now.Layer, now.State, r.d.Machine(src.ID).Spec().Drives[0].Path)
	}
	markDisk(t, srcDisk, "after")

	out, err := r.m.create(ctx, api.CreateVMRequest{Name: "clone", FromSnapshot: "s1", ReadyTimeoutSeconds: 5}, nop)
	if err != nil {
		t.Fatal(err)
	}
	clone := r.state(t, "clone")
	cloneDisk := r.m.rootDisk(clone).Path
	if out.State != api.StateRunning || clone.Layer != "" || (out.DiskMethod != disk.MethodReflink && out.DiskMethod != disk.MethodSparse) {
		t.Errorf("clone %s on layer %q by %q: want running on a copy", out.State, clone.Layer, out.DiskMethod)
	}
	mc := r.d.Machine(clone.ID)
	if !mc.Restored() || mc.Memory()["process"] == "" || mc.Spec().Drives[0].Path != cloneDisk {
		t.Errorf("clone restored %v, memory %v, disk %s: want the source's memory on its own disk %s", mc.Restored(), mc.Memory(), mc.Spec().Drives[0].Path, cloneDisk)
	}
	if got := diskMark(t, cloneDisk); got != "before" {
		t.Errorf("clone's disk marked %q, want the snapshot's (before)", got)
	}
	if diskMark(t, srcDisk) != "after" {
		t.Error("the source's disk lost its write after the snapshot")
	}
	if steps := strings.Join(g.of(clone.ID), "\n"); !strings.Contains(steps, "hostname clone") {
		t.Errorf("clone's reidentify did %q", steps)
	}

	if used := r.m.snapView(ctx, stored).UsedBy; len(used) != 0 {
		t.Errorf("raw snapshot used by %v, want nothing (its clones have copies)", used)
	}
	if err := r.m.deleteSnapshot(ctx, "s1"); err != nil {
		t.Fatalf("delete of a raw snapshot with a clone running: %v", err)
	}
	if !fileExists(cloneDisk) || r.state(t, "clone").State != api.StateRunning {
		t.Error("the clone lost its disk with the snapshot")
	}

	r.m.cfg.WarmStart = true
	plan := r.m.warmFor(ctx, api.CreateVMRequest{Image: "deb", Kernel: "k", VCPUs: src.VCPUs, MemoryMiB: src.MemoryMiB, DiskBytes: src.DiskBytes}, image.Image{Name: "deb"})
	if plan.found || plan.make != "" || !strings.Contains(plan.why, "raw disks") {
		t.Errorf("warm plan over raw disks %+v: want cold, no warm snapshot, saying why", plan)
	}

	for _, name := range []string{"clone", "src"} {
		if err := r.m.delete(ctx, name, true); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(r.m.cfg.SnapshotsDir); len(ents) != 0 {
		t.Errorf("snapshot files left: %v", ents)
	}
}
