package daemon

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/crashpoint"
	"banger/internal/disk"
	"banger/internal/diskspace"
	"banger/internal/guest"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/network"
	"banger/internal/store"
	"banger/internal/vmm"
)

// A snapshot is a running VM's memory and device state (written by the
// VMM into <state>/snapshots/<id>/) and its disk, frozen: the VM's layer
// at that moment, which from then on nobody writes (the VM goes on on a
// new layer over it). VMs restored from it get their own layer over the
// frozen one. Its row says creating until all of that is done; a daemon
// killed before removes it at its next start.

// snapshotMeta is what the daemon keeps of a snapshot beyond its columns.
type snapshotMeta struct {
	// Next is the layer the source VM goes on writing once its disk is
	// frozen (its backing file is the snapshot's layer).
	Next string `json:"next,omitempty"`
	// KernelStamp tells the kernel bundle the VM ran from another of the
	// same name (one pulled again since); ImageStamp the same of its
	// image (warm start restores only onto the image it booted).
	KernelStamp string `json:"kernel_stamp,omitempty"`
	ImageStamp  string `json:"image_stamp,omitempty"`
}

// snapshotAgentKey is the source VM's agent key, kept in the snapshot's
// directory: a restored guest's agent answers to it until reidentified.
const snapshotAgentKey = agentKeyFile

var snapNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func kernelStamp(kb kernel.Bundle) string {
	return kb.SHA256 + "@" + strconv.FormatInt(kb.CreatedAt.UnixNano(), 10)
}

// pause stops a running VM's vCPUs; resume lets them go on.
func (m *vmManager) pause(ctx context.Context, name string, paused bool) (api.VM, error) {
	unlock, err := m.lock(ctx, name, "vm pause/resume")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	v, err := m.get(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	op, want := "pause", api.StateRunning
	if !paused {
		op, want = "resume", api.StatePaused
	}
	mc := m.machine(v.ID)
	if mc == nil || v.State != want {
		return api.VM{}, api.Errorf(api.Conflict, "vm %q is %s: only a %s vm can %s", v.Name, v.State, want, op).
			WithHint(map[bool]string{true: "start it with banger vm start " + v.Name, false: "it is not paused"}[paused])
	}
	p, ok := mc.(vmm.Pauser)
	if !ok {
		return api.VM{}, api.Errorf(api.Unavailable, "vmm %s cannot %s a vm", v.VMM, op)
	}
	defer m.hush(v.ID)()
	if paused {
		err = p.Pause(ctx)
		v.State = api.StatePaused
	} else {
		err = p.Resume(ctx)
		v.State = api.StateRunning
	}
	if err != nil {
		return api.VM{}, fmt.Errorf("%s vm %q: %w", op, v.Name, err)
	}
	if err := m.store.UpdateVM(context.WithoutCancel(ctx), v); err != nil {
		return api.VM{}, err
	}
	return m.view(ctx, v), nil
}

// snapshot takes a snapshot of the running VM called name.
func (m *vmManager) snapshot(ctx context.Context, name string, req api.SnapshotVMRequest) (api.Snapshot, error) {
	unlock, err := m.lock(ctx, name, "vm snapshot")
	if err != nil {
		return api.Snapshot{}, err
	}
	defer unlock()
	v, err := m.get(ctx, name)
	if err != nil {
		return api.Snapshot{}, err
	}
	sn, err := m.snapshotLocked(ctx, &v, req.Name, api.SnapshotUser)
	if err != nil {
		return api.Snapshot{}, err
	}
	return m.snapView(ctx, sn), nil
}

// snapshotLocked snapshots v, whose lock the caller holds: pause, the
// VMM writes memory and device state, the root disk is frozen onto a new
// layer the VM goes on with (a raw disk, which has no layers, is copied
// into the snapshot), the records are written in one transaction,
// resume. A paused VM stays paused. On error nothing of the
// snapshot is left and the VM runs on (on the new layer, when its disk
// was switched to it before the error).
func (m *vmManager) snapshotLocked(ctx context.Context, v *store.VM, name, kind string) (store.Snapshot, error) {
	mc := m.machine(v.ID)
	// A warm snapshot is taken as the guest became ready, before the
	// start has marked it running.
	starting := kind == api.SnapshotWarm && v.State == api.StateStarting
	if mc == nil || (v.State != api.StateRunning && v.State != api.StatePaused && !starting) {
		return store.Snapshot{}, api.Errorf(api.Conflict, "vm %q is %s: a snapshot holds a running vm's memory, and snapshots of stopped vms are not supported", v.Name, v.State).
			WithHint("start it first: banger vm start " + v.Name)
	}
	// A VM on a qcow2 layer has its disk frozen (DiskFreezer); a raw
	// disk (Firecracker's) is copied while the guest is paused.
	snapper, ok1 := mc.(vmm.Snapshotter)
	freezer, ok2 := mc.(vmm.DiskFreezer)
	pauser, ok3 := mc.(vmm.Pauser)
	raw := v.Layer == ""
	if !ok1 || !ok3 || (!raw && !ok2) {
		return store.Snapshot{}, api.Errorf(api.Unavailable, "vm %q cannot be snapshotted: vmm %s has no memory snapshots", v.Name, v.VMM).
			WithHint("snapshots need the qemu or firecracker vmm")
	}
	if name == "" {
		name = v.Name + "-" + time.Now().UTC().Format("20060102-150405")
	}
	if !snapNameRE.MatchString(name) {
		return store.Snapshot{}, api.Errorf(api.InvalidArgument, "snapshot name %q: use lowercase letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)", name)
	}
	version := ""
	if vr, ok := m.drivers[v.VMM].(vmm.Versioner); ok {
		var err error
		if version, err = vr.Version(ctx); err != nil {
			return store.Snapshot{}, fmt.Errorf("vmm version: %w", err)
		}
	}
	kb, err := m.kernelOf(*v)
	if err != nil {
		return store.Snapshot{}, err
	}
	key, err := loadAgentKey(*v)
	if err != nil {
		return store.Snapshot{}, err
	}
	id := newID()
	meta := snapshotMeta{KernelStamp: kernelStamp(kb)}
	if !raw {
		meta.Next = newLayerName()
	}
	if m.images != nil {
		if im, err := m.images.Get(v.Image); err == nil {
			meta.ImageStamp = imageStamp(im)
		}
	}
	sn := store.Snapshot{
		ID: id, Name: name, State: api.SnapshotCreating, Kind: kind, SourceVM: v.Name,
		Image: v.Image, Kernel: v.Kernel, VMM: v.VMM, VMMVersion: version,
		VCPUs: v.VCPUs, MemoryMiB: v.MemoryMiB, DiskBytes: v.DiskBytes,
		Layer: v.Layer, Dir: filepath.Join(m.cfg.SnapshotsDir, id), Spec: v.Spec, Meta: marshal(meta),
	}
	if err := m.store.CreateSnapshot(ctx, sn); err != nil {
		if errors.Is(err, store.ErrExist) {
			return store.Snapshot{}, api.Errorf(api.Conflict, "snapshot name %q is taken", name).
				WithHint("pick another --name, or delete the old one: banger snapshot delete " + name)
		}
		return store.Snapshot{}, err
	}
	fail := func(err error) (store.Snapshot, error) {
		m.abandonSnapshot(context.WithoutCancel(ctx), sn, v)
		if diskspace.IsFull(err) {
			return store.Snapshot{}, fullDisk(fmt.Errorf("%w (a snapshot takes up to the vm's memory, %d MiB)", err, v.MemoryMiB),
				fmt.Sprintf("snapshot of vm %q", v.Name), m.cfg.SnapshotsDir, "snapshot")
		}
		return store.Snapshot{}, fmt.Errorf("snapshot of vm %q: %w (nothing of the snapshot was kept)", v.Name, err)
	}
	crashpoint.Hit(crashpoint.SnapshotAfterRow)
	if err := os.MkdirAll(sn.Dir, 0o700); err != nil {
		return fail(err)
	}
	if err := saveAgentKey(sn.Dir, key); err != nil {
		return fail(err)
	}
	defer m.hush(v.ID)()
	if v.State != api.StatePaused {
		if err := pauser.Pause(ctx); err != nil {
			return fail(fmt.Errorf("pausing: %w", err))
		}
		defer pauser.Resume(context.WithoutCancel(ctx))
	}
	if err := snapper.Snapshot(ctx, sn.Dir); err != nil {
		return fail(err)
	}
	if raw {
		// The guest is paused, so the copy is of the disk as its memory
		// knows it.
		if _, err := disk.Clone(ctx, m.rootDisk(*v).Path, filepath.Join(sn.Dir, rootDiskFile), nil); err != nil {
			return fail(fmt.Errorf("copying the disk: %w", err))
		}
	}
	// On the disk before the row says ready: a power loss must not leave
	// a listed snapshot whose memory (or raw disk) is half there.
	if err := syncTree(sn.Dir); err != nil {
		return fail(fmt.Errorf("syncing the snapshot: %w", err))
	}
	crashpoint.Hit(crashpoint.SnapshotAfterSave)
	if raw {
		sn.State = api.SnapshotReady
		if err := m.store.FinishSnapshot(context.WithoutCancel(ctx), sn, v.ID, ""); err != nil {
			sn.State = api.SnapshotCreating
			return fail(err)
		}
	} else if err := m.freeze(ctx, freezer, &sn, v, meta.Next); err != nil {
		return fail(err)
	}
	crashpoint.Hit(crashpoint.SnapshotAfterFreeze)
	return sn, nil
}

// freeze switches v's root disk onto layer next and records the
// snapshot whole, with the frozen layer its own, under the layer
// store's lock: gc never sees next before a row names it.
func (m *vmManager) freeze(ctx context.Context, freezer vmm.DiskFreezer, sn *store.Snapshot, v *store.VM, next string) error {
	m.layers.mu.Lock()
	defer m.layers.mu.Unlock()
	if err := freezer.FreezeDisk(ctx, "root", m.layers.path(next)); err != nil {
		return fmt.Errorf("freezing the disk: %w", err)
	}
	sn.State = api.SnapshotReady
	if err := m.store.FinishSnapshot(context.WithoutCancel(ctx), *sn, v.ID, next); err != nil {
		sn.State = api.SnapshotCreating
		return err
	}
	v.Layer = next
	// The running spec names the drive the VMM now writes.
	var spec vmm.Spec
	if json.Unmarshal([]byte(v.Spec), &spec) == nil && len(spec.Drives) > 0 && spec.Drives[0].Root {
		spec.Drives[0] = m.rootDisk(*v)
		v.Spec = marshal(spec)
		m.store.UpdateVM(context.WithoutCancel(ctx), *v)
	}
	return nil
}

// abandonSnapshot removes a snapshot that was not made whole: its files
// and row. When its source's new layer exists, the source VM moves onto
// it: a layer over the VM's own is the same disk, whether the VMM
// switched to it or not, so that is safe either way, while leaving it
// could lose what the VM wrote to it.
func (m *vmManager) abandonSnapshot(ctx context.Context, sn store.Snapshot, v *store.VM) {
	var meta snapshotMeta
	json.Unmarshal([]byte(sn.Meta), &meta)
	m.layers.mu.Lock()
	if meta.Next != "" && fileExists(m.layers.path(meta.Next)) && v != nil && v.Layer == sn.Layer {
		v.Layer = meta.Next
		var spec vmm.Spec
		if json.Unmarshal([]byte(v.Spec), &spec) == nil && len(spec.Drives) > 0 && spec.Drives[0].Root {
			spec.Drives[0] = m.rootDisk(*v)
			v.Spec = marshal(spec)
		}
		if err := m.store.UpdateVM(ctx, *v); err != nil {
			m.log.Error("moving a vm onto its new layer", "vm", v.Name, "err", err)
		}
	}
	m.layers.mu.Unlock()
	if sn.Dir != "" {
		os.RemoveAll(sn.Dir)
	}
	m.store.DeleteSnapshot(ctx, sn.ID)
}

// cleanSnapshots removes the snapshots an earlier daemon was making when
// it died (state creating): their files, rows, and their source VMs go
// on on the new layer when it was made (see abandonSnapshot).
func (m *vmManager) cleanSnapshots(ctx context.Context) {
	snaps, err := m.store.ListSnapshots(ctx)
	if err != nil {
		m.log.Error("listing snapshots", "err", err)
		return
	}
	for _, sn := range snaps {
		if sn.State != api.SnapshotCreating {
			continue
		}
		m.log.Info("removing half-made snapshot", "snapshot", sn.Name)
		var v *store.VM
		if src, err := m.store.VMByName(ctx, sn.SourceVM); err == nil {
			v = &src
		}
		m.abandonSnapshot(ctx, sn, v)
	}
	// Directories no row names (a daemon killed between mkdir and row, or
	// after the row went).
	known := map[string]bool{}
	snaps, _ = m.store.ListSnapshots(ctx)
	for _, sn := range snaps {
		known[sn.Dir] = true
	}
	ents, _ := os.ReadDir(m.cfg.SnapshotsDir)
	for _, e := range ents {
		if p := filepath.Join(m.cfg.SnapshotsDir, e.Name()); e.IsDir() && !known[p] {
			os.RemoveAll(p)
		}
	}
}

// getSnapshot is the snapshot called name, or a not-found error that
// says where to look.
func (m *vmManager) getSnapshot(ctx context.Context, name string) (store.Snapshot, error) {
	sn, err := m.store.SnapshotByName(ctx, name)
	if errors.Is(err, store.ErrNotExist) {
		return sn, api.Errorf(api.NotFound, "snapshot %q does not exist", name).WithHint("see banger snapshot list")
	}
	return sn, err
}

func (m *vmManager) listSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	snaps, err := m.store.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	out := []api.Snapshot{}
	for _, sn := range snaps {
		out = append(out, m.snapView(ctx, sn))
	}
	return out, nil
}

// snapView is a snapshot as the API shows it.
func (m *vmManager) snapView(ctx context.Context, sn store.Snapshot) api.Snapshot {
	out := api.Snapshot{
		ID: sn.ID, Name: sn.Name, State: sn.State, Kind: sn.Kind, SourceVM: sn.SourceVM,
		Image: sn.Image, Kernel: sn.Kernel, VMM: sn.VMM, VMMVersion: sn.VMMVersion,
		VCPUs: sn.VCPUs, MemoryMiB: sn.MemoryMiB, DiskBytes: sn.DiskBytes, Memory: true,
		Dir: sn.Dir, CreatedAt: sn.CreatedAt,
	}
	out.Bytes, out.Disk = allocated(sn.Dir), api.SnapshotDiskCopy
	if sn.Layer != "" {
		out.Bytes, out.Disk = out.Bytes+allocated(m.layers.path(sn.Layer)), api.SnapshotDiskLayer
	}
	vms, snaps, _ := m.usersOf(ctx, sn)
	out.UsedBy = append(vms, snaps...)
	return out
}

// allocated is what path (a file, or a directory's files) takes on disk.
func allocated(path string) int64 {
	var n int64
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// usersOf names the VMs and the other snapshots that depend on sn: those
// whose disks build on its frozen layer (it is in their layer chain),
// but for its source VM and that VM's later snapshots, whose disks go on
// from it as their own history. Deleting sn leaves them working: the
// frozen layer stays while a chain needs it (gc); only the snapshot's
// record and memory go.
func (m *vmManager) usersOf(ctx context.Context, sn store.Snapshot) (vms, snaps []string, err error) {
	if sn.Layer == "" {
		return nil, nil, nil // a raw disk: VMs made from it have copies
	}
	frozen := m.layers.path(sn.Layer)
	inChain := func(layer string) bool {
		if layer == "" {
			return false
		}
		chain, _ := m.layers.chain(layer)
		for _, p := range chain {
			if p == frozen {
				return true
			}
		}
		return false
	}
	all, err := m.store.ListVMs(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, v := range all {
		if v.Name != sn.SourceVM && inChain(v.Layer) {
			vms = append(vms, v.Name)
		}
	}
	others, err := m.store.ListSnapshots(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, o := range others {
		if o.ID != sn.ID && o.SourceVM != sn.SourceVM && inChain(o.Layer) {
			snaps = append(snaps, o.Name)
		}
	}
	return vms, snaps, nil
}

// deleteSnapshot removes a snapshot nothing builds on: its files, its
// row, and its layer (by gc, once no chain needs it).
func (m *vmManager) deleteSnapshot(ctx context.Context, name string) error {
	sn, err := m.getSnapshot(ctx, name)
	if err != nil {
		return err
	}
	vms, snaps, err := m.usersOf(ctx, sn)
	if err != nil {
		return err
	}
	if len(vms)+len(snaps) > 0 {
		var what []string
		if len(vms) > 0 {
			what = append(what, "vms: "+strings.Join(vms, ", "))
		}
		if len(snaps) > 0 {
			what = append(what, "snapshots: "+strings.Join(snaps, ", "))
		}
		return api.Errorf(api.Conflict, "snapshot %q is used by %s: their disks build on it", sn.Name, strings.Join(what, "; ")).
			WithHint("delete those first")
	}
	if err := os.RemoveAll(sn.Dir); err != nil {
		return fmt.Errorf("removing %s: %w", sn.Dir, err)
	}
	if err := m.store.DeleteSnapshot(ctx, sn.ID); err != nil {
		return err
	}
	m.gcLayers(ctx, false)
	return nil
}

// restoreCheck refuses to restore sn where it would not work, naming
// every difference: another VMM or VMM version, a kernel gone or pulled
// again since, or a request that asks for other hardware or image.
func (m *vmManager) restoreCheck(ctx context.Context, sn store.Snapshot, req api.CreateVMRequest) (vmm.Restorer, kernel.Bundle, error) {
	if sn.State != api.SnapshotReady {
		return nil, kernel.Bundle{}, api.Errorf(api.Conflict, "snapshot %q is %s, not ready", sn.Name, sn.State)
	}
	var diffs []string
	differ := func(what, snap, here string) {
		if snap != here {
			diffs = append(diffs, fmt.Sprintf("%s: the snapshot's is %s, this one %s", what, snap, here))
		}
	}
	differ("vmm", sn.VMM, m.def)
	d := m.drivers[sn.VMM]
	r, ok := d.(vmm.Restorer)
	if d != nil && !ok {
		diffs = append(diffs, "vmm "+sn.VMM+" cannot restore snapshots")
	}
	if vr, ok := d.(vmm.Versioner); ok && d != nil {
		version, err := vr.Version(ctx)
		if err != nil {
			return nil, kernel.Bundle{}, fmt.Errorf("vmm version: %w", err)
		}
		differ("vmm version", sn.VMMVersion, version)
	}
	kb, err := m.kernels.Get(sn.Kernel)
	if err != nil {
		diffs = append(diffs, fmt.Sprintf("kernel: the snapshot's, %s, is not installed", sn.Kernel))
	} else {
		var meta snapshotMeta
		json.Unmarshal([]byte(sn.Meta), &meta)
		if meta.KernelStamp != kernelStamp(kb) {
			diffs = append(diffs, fmt.Sprintf("kernel: %s was pulled or imported again since the snapshot", sn.Kernel))
		}
	}
	if req.Image != "" {
		differ("image", sn.Image, req.Image)
	}
	if req.Kernel != "" {
		differ("kernel", sn.Kernel, req.Kernel)
	}
	if req.VCPUs != 0 {
		differ("cpus", strconv.Itoa(sn.VCPUs), strconv.Itoa(req.VCPUs))
	}
	if req.MemoryMiB != 0 {
		differ("memory", strconv.Itoa(sn.MemoryMiB)+"M", strconv.Itoa(req.MemoryMiB)+"M")
	}
	if req.DiskBytes != 0 {
		differ("disk", strconv.FormatInt(sn.DiskBytes>>20, 10)+"M", strconv.FormatInt(req.DiskBytes>>20, 10)+"M")
	}
	if len(diffs) > 0 {
		return nil, kernel.Bundle{}, api.Errorf(api.Conflict, "snapshot %q cannot be restored here: %s", sn.Name, strings.Join(diffs, "; ")).
			WithHint(fmt.Sprintf("leave out --image, --kernel, --cpus, --memory and --disk, or boot a new vm of the image: banger vm create --image %s", sn.Image))
	}
	return r, kb, nil
}

// createFromSnapshot makes a VM from the snapshot req names: a new layer
// over its frozen disk, a fresh seed and keys, then the VMM restores the
// snapshot's memory and the guest's agent takes its new identity (MAC,
// address, hostname, machine-id, SSH host key, agent key, clock).
func (m *vmManager) createFromSnapshot(ctx context.Context, req api.CreateVMRequest, p progressFunc) (api.VM, error) {
	sn, err := m.getSnapshot(ctx, req.FromSnapshot)
	if err != nil {
		return api.VM{}, err
	}
	restorer, kb, err := m.restoreCheck(ctx, sn, req)
	if err != nil {
		return api.VM{}, err
	}
	return m.createFrom(ctx, req, sn, restorer, kb, api.BootInfo{Mode: api.BootSnapshot, Snapshot: sn.Name}, p)
}

// createFrom is createFromSnapshot once sn passed restoreCheck; boot is
// what vm inspect says of the start.
func (m *vmManager) createFrom(ctx context.Context, req api.CreateVMRequest, sn store.Snapshot, restorer vmm.Restorer, kb kernel.Bundle, boot api.BootInfo, p progressFunc) (api.VM, error) {
	if req.Name == "" {
		req.Name = m.generateName(ctx)
	}
	if !vmNameRE.MatchString(req.Name) {
		return api.VM{}, api.Errorf(api.InvalidArgument, "vm name %q: use lowercase letters, digits and '-' (at most 40, starting with a letter or digit)", req.Name)
	}
	if req.NoStart {
		return api.VM{}, api.Errorf(api.InvalidArgument, "--no-start with --from-snapshot: a vm made from a snapshot starts from its memory").
			WithHint("leave out --no-start")
	}
	if err := m.checkCreatePorts(ctx, req.Ports); err != nil {
		return api.VM{}, err
	}
	policy, err := m.createPolicy(ctx, req)
	if err != nil {
		return api.VM{}, err
	}
	unlock, err := m.lock(ctx, req.Name, "vm create --from-snapshot")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	id := newID()
	v := store.VM{
		ID: id, Name: req.Name, State: api.StateCreating, Image: sn.Image, Kernel: sn.Kernel, VMM: sn.VMM,
		VCPUs: sn.VCPUs, MemoryMiB: sn.MemoryMiB, DiskBytes: sn.DiskBytes, DiskMethod: disk.MethodOverlay,
		Dir: filepath.Join(m.cfg.VMsDir, id), Net: marshal(policy), Layer: newLayerName(), Origin: sn.Name,
		Boot: marshal(boot),
	}
	if sn.Layer == "" { // a raw disk in the snapshot: the VM gets a copy
		v.Layer, v.DiskMethod = "", ""
	}
	if err := m.store.CreateVM(ctx, v); err != nil {
		if errors.Is(err, store.ErrExist) {
			return api.VM{}, api.Errorf(api.Conflict, "vm name %q is taken", req.Name).
				WithHint(fmt.Sprintf("pick another --name, or delete the old one: banger vm delete %s", req.Name))
		}
		return api.VM{}, err
	}
	undo := func(err error) (api.VM, error) {
		bg := context.WithoutCancel(ctx)
		if mc := m.machine(id); mc != nil {
			mc.Kill()
			<-mc.Done()
			m.forget(id, nil)
		}
		m.net.detach(bg, id)
		os.RemoveAll(v.Dir)
		m.store.DeleteVM(bg, id)
		m.gcLayers(bg, false)
		return api.VM{}, err
	}
	if _, err := m.net.lease(ctx, id); err != nil {
		return undo(err)
	}
	if err := m.recordCreatePorts(ctx, id, req.Ports); err != nil {
		return undo(err)
	}
	if err := os.MkdirAll(v.Dir, 0o700); err != nil {
		return undo(err)
	}
	if err := m.prepareGuest(ctx, v, image.Image{Name: sn.Image}); err != nil {
		return undo(err)
	}
	if v.Layer == "" {
		method, err := disk.Clone(ctx, filepath.Join(sn.Dir, rootDiskFile), m.rootDisk(v).Path,
			func(d, t int64) { p("copying the snapshot's disk", d, t) })
		if err != nil {
			return undo(fullDisk(fmt.Errorf("making the disk of vm %q: %w", v.Name, err), "creating vm "+strconv.Quote(v.Name), m.cfg.VMsDir, "vm"))
		}
		v.DiskMethod = method
	} else if err := m.layers.over(ctx, sn.Layer, v.Layer, sn.DiskBytes); err != nil {
		return undo(fmt.Errorf("making the disk of vm %q: %w", v.Name, err))
	}
	out, err := m.restoreLocked(ctx, &v, sn, restorer, kb, time.Duration(req.ReadyTimeoutSeconds)*time.Second, p)
	if err != nil {
		return undo(fmt.Errorf("restoring vm %q from snapshot %q: %w", v.Name, sn.Name, err))
	}
	return out, nil
}

// restoreLocked starts v from sn (v's lock held) and gives the guest its
// identity. Unlike a cold start, a failure here removes the VM (the
// caller does): a half-restored guest still has its source's identity.
func (m *vmManager) restoreLocked(ctx context.Context, v *store.VM, sn store.Snapshot, r vmm.Restorer, kb kernel.Bundle, readyTimeout time.Duration, p progressFunc) (api.VM, error) {
	t0 := time.Now()
	if err := m.openPorts(ctx, *v); err != nil {
		return api.VM{}, err
	}
	defer m.closePortsUnlessRunning(v.ID)
	nic, netArg, err := m.net.attach(ctx, v.ID)
	if err != nil {
		return api.VM{}, fmt.Errorf("network: %w", err)
	}
	spec := m.specFor(*v, kb, nic, netArg)
	vmm.RemoveConsoleLog(spec.ConsoleLog)
	if f, err := openNoFollow(spec.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err == nil {
		f.Close()
	}
	p("restoring "+sn.VMM+" snapshot "+sn.Name, 0, 0)
	mc, err := m.bootWith(ctx, *v, &spec, func(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
		return r.Restore(ctx, spec, sn.Dir)
	})
	if err != nil {
		return api.VM{}, err
	}
	// v stays creating until the guest has its identity: a daemon that
	// dies before has left a guest with its source's, which the next one
	// removes with the rest of the half-made VM (its VMM is found by the
	// handle recorded here).
	v.Spec, v.Handle, v.VsockCID = marshal(spec), marshal(mc.Handle()), spec.VsockCID
	if err := m.store.UpdateVM(ctx, *v); err != nil {
		mc.Kill()
		return api.VM{}, err
	}
	m.track(ctx, *v, mc)
	crashpoint.Hit(crashpoint.RestoreAfterVMM)
	if readyTimeout <= 0 {
		readyTimeout = defaultReadyTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	p("giving the guest its identity", 0, 0)
	t1 := time.Now()
	if err := m.reidentifyAndDial(rctx, *v, sn, mc, netArg, nic.MAC); err != nil {
		return api.VM{}, err
	}
	t2 := time.Now()
	crashpoint.Hit(crashpoint.RestoreAfterIdentity)
	m.afterBoot(ctx, v)
	v.State = api.StateRunning
	if err := m.store.UpdateVM(ctx, *v); err != nil {
		return api.VM{}, err
	}
	m.log.Info("restored", "vm", v.Name, "snapshot", sn.Name, "vmm", t1.Sub(t0).Round(time.Millisecond).String(),
		"identity", t2.Sub(t1).Round(time.Millisecond).String(), "after-boot", time.Since(t2).Round(time.Millisecond).String())
	return m.view(ctx, *v), nil
}

// reidentifyAndDial gives the restored guest of v its identity and keeps
// the connection that did it as v's agent client, holding v's dial lock
// throughout: on the serial transport a second dial (a waiter, a CLI
// call) would break into that session. The session was opened with the
// snapshot's key, over v's own transport, so it reaches v's guest alone;
// later connections authenticate with v's key, in force in the agent
// from its answer on. Keeping it saves a reconnect (a quarter of a warm
// start under software emulation).
func (m *vmManager) reidentifyAndDial(ctx context.Context, v store.VM, sn store.Snapshot, mc vmm.Machine, netArg, mac string) error {
	defer m.dials.lock(v.ID)()
	a, info, err := m.reidentify(ctx, v, sn, mc, netArg, mac)
	if err != nil {
		return err
	}
	m.keepAgent(ctx, v.ID, a, info)
	return nil
}

// reidentify tells the restored guest's agent (which still answers to
// the snapshot source's key) its new identity, with v's own keys from
// its seed, and returns the client that did it: the agent takes v's
// agent key last, so the next connection (m.agent) authenticates as v.
func (m *vmManager) reidentify(ctx context.Context, v store.VM, sn store.Snapshot, mc vmm.Machine, netArg, mac string) (*guest.Client, guest.Info, error) {
	srcKey, err := loadAgentKey(store.VM{Name: "snapshot " + sn.Name, Dir: sn.Dir})
	if err != nil {
		return nil, guest.Info{}, err
	}
	newKey, err := loadAgentKey(v)
	if err != nil {
		return nil, guest.Info{}, err
	}
	gc, err := network.ParseBangerNet(netArg)
	if err != nil {
		return nil, guest.Info{}, err
	}
	seed, err := readSeed(filepath.Join(v.Dir, seedFileName))
	if err != nil {
		return nil, guest.Info{}, fmt.Errorf("reading the seed of vm %q: %w", v.Name, err)
	}
	req := guest.ReidentifyRequest{
		Hostname: v.Name, MAC: mac, Address: gc.Address.String(), Gateway: gc.Gateway.String(),
		MachineID: newID() + newID(), AgentKey: hex.EncodeToString(newKey),
	}
	for _, d := range gc.DNS {
		req.DNS = append(req.DNS, d.String())
	}
	for _, f := range seed {
		switch f.path {
		case "etc/ssh/ssh_host_ed25519_key":
			req.HostKey = f.data
		case "etc/ssh/ssh_host_ed25519_key.pub":
			req.HostKeyPub = strings.TrimSpace(f.data)
		}
	}
	var last error
	t0 := time.Now()
	for {
		a, err := m.connectAgent(ctx, mc, srcKey)
		if err == nil {
			t1 := time.Now()
			req.Time = time.Now().UTC()
			// The hello goes beside the request, on a stream of its own:
			// under emulation each round trip to a just-restored guest
			// costs tens of milliseconds.
			var info guest.Info
			var herr error
			hello := make(chan struct{})
			go func() {
				defer close(hello)
				info, herr = a.Hello(ctx)
			}()
			err = a.Reidentify(ctx, req)
			<-hello
			if herr != nil && (err == nil || errors.Is(herr, guest.ErrVersionMismatch)) {
				err = herr
			}
			if err == nil {
				info.Hostname = req.Hostname // the hello may have seen the old one
				m.log.Info("reidentified", "vm", v.Name, "waited", t1.Sub(t0).Round(time.Millisecond).String(),
					"took", time.Since(t1).Round(time.Millisecond).String())
				return a, info, nil
			}
			a.Close()
			var re *guest.RemoteError
			if errors.As(err, &re) {
				return nil, guest.Info{}, err
			}
		}
		if errors.Is(err, guest.ErrUnauthenticated) || errors.Is(err, vmm.ErrNotRunning) || errors.Is(err, guest.ErrVersionMismatch) {
			return nil, guest.Info{}, err
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, guest.Info{}, fmt.Errorf("the restored guest's agent never answered: %w (last error: %w)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// fork snapshots the running VM called name and makes a VM from the
// snapshot; the source runs on. A fork that fails removes its snapshot
// too.
func (m *vmManager) fork(ctx context.Context, name string, req api.ForkVMRequest, p progressFunc) (api.VM, error) {
	if req.Name == "" {
		return api.VM{}, api.Errorf(api.InvalidArgument, "vm fork needs --name, the new vm's name")
	}
	if !vmNameRE.MatchString(req.Name) {
		return api.VM{}, api.Errorf(api.InvalidArgument, "vm name %q: use lowercase letters, digits and '-' (at most 40, starting with a letter or digit)", req.Name)
	}
	if _, err := m.store.VMByName(ctx, req.Name); err == nil {
		return api.VM{}, api.Errorf(api.Conflict, "vm name %q is taken", req.Name).WithHint("pick another --name")
	}
	unlock, err := m.lock(ctx, name, "vm fork")
	if err != nil {
		return api.VM{}, err
	}
	v, err := m.get(ctx, name)
	if err != nil {
		unlock()
		return api.VM{}, err
	}
	p("snapshotting "+v.Name, 0, 0)
	sn, err := m.snapshotLocked(ctx, &v, req.Name+"-origin", api.SnapshotUser)
	unlock()
	if err != nil {
		return api.VM{}, err
	}
	out, err := m.createFromSnapshot(ctx, api.CreateVMRequest{Name: req.Name, FromSnapshot: sn.Name, ReadyTimeoutSeconds: req.ReadyTimeoutSeconds}, p)
	if err != nil {
		if derr := m.deleteSnapshot(context.WithoutCancel(ctx), sn.Name); derr != nil {
			m.log.Error("removing the snapshot of a failed fork", "snapshot", sn.Name, "err", derr)
		}
		return api.VM{}, err
	}
	return out, nil
}

// syncTree syncs the regular files directly in dir, dir itself and its
// parent (which names it).
func syncTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			if err := syncPath(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syncPath(dir); err != nil {
		return err
	}
	return syncPath(filepath.Dir(dir))
}

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
