package daemon

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/crashpoint"
	"banger/internal/disk"
	"banger/internal/diskspace"
	"banger/internal/guest"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/portfwd"
	"banger/internal/store"
	"banger/internal/vmm"
)

// vmManager owns the VMs: their records, their disks, their VMM
// processes and their agent connections. It is given the parts it uses
// (vmParts) and knows nothing of HTTP; the Server's handlers call it.
type vmManager struct {
	vmParts

	locks  keyedMutex  // by VM name: one lifecycle change at a time
	layers *layerStore // the qcow2 disks of VMs whose VMM takes them
	dials  keyedMutex  // by VM id: one agent dial at a time

	mu       sync.Mutex               // guards the maps below
	machines map[string]vmm.Machine   // by VM id, while the VMM runs
	agents   map[string]*guest.Client // by VM id, once the agent answered
	infos    map[string]guest.Info    // by VM id: the agent's hello
	warnings map[string][]string      // by VM id: what its last start could not do
	quiets   map[string]*quiet        // by VM id: stops of its guest on purpose (agentwatch.go)
}

// vmParts are what the VMs are made from and kept in.
type vmParts struct {
	store   *store.Store
	images  *image.Store
	kernels *kernel.Store
	net     vmNetwork
	drivers map[string]vmm.Driver
	def     string // driver new VMs use
	cfg     vmSettings
	log     *slog.Logger
	// sessions hears when a VM stops or goes, to end its sessions.
	sessions vmSessions
	// ports serves the VMs' port forwards while they run.
	ports *portfwd.Forwarder
}

// noSessions is vmSessions for a vmManager that serves none (tests).
type noSessions struct{}

func (noSessions) VMGone(string, string) {}
func (noSessions) Forget(store.VM)       {}

// vmSessions is what the VMs tell the sessions (session.Manager).
type vmSessions interface {
	// VMGone ends the running sessions of a VM that stopped.
	VMGone(vmID, reason string)
	// Forget drops what is served for a VM about to be deleted.
	Forget(vm store.VM)
}

// vmNetwork is what the VMs need of the network (netService): an address
// that stays with a VM until it is deleted, and a tap while it runs.
type vmNetwork interface {
	// lease gives the VM its address, or the one it has.
	lease(ctx context.Context, vmID string) (store.Lease, error)
	// attach gives the VM a tap and returns its network interface and the
	// kernel argument that configures the guest's side.
	attach(ctx context.Context, vmID string) (vmm.NIC, string, error)
	// detach takes the VM's tap away; its lease stays.
	detach(ctx context.Context, vmID string)
}

// vmSettings are the parts of the daemon's config the VMs use.
type vmSettings struct {
	VMsDir        string // a VM's files go in VMsDir/<id>
	LayersDir     string // qcow2 layers and their bases; "": beside VMsDir
	SnapshotsDir  string // a snapshot's files go in SnapshotsDir/<id>; "": beside VMsDir
	DefaultImage  string // image of a VM created without one
	ConsoleLogMax int64  // bytes of console log kept per VM
	VCPUs         int    // vCPUs of a VM created without them; 0: defaultVCPUs
	MemoryMiB     int    // memory of a VM created without it; 0: defaultMemoryMiB
	DiskBytes     int64  // root disk of a VM created without one, at least the image's size
	UserSSHKey    string // the user's banger ssh key (private half)
	WarmStart     bool   // keep and restore warm snapshots of images (warm.go)
	Credentials   credentialSettings
}

func newVMManager(p vmParts) *vmManager {
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.sessions == nil {
		p.sessions = noSessions{}
	}
	if p.ports == nil {
		p.ports = portfwd.New(context.Background(), p.log) // tests; the daemon passes its own
	}
	if p.cfg.SnapshotsDir == "" {
		p.cfg.SnapshotsDir = filepath.Join(filepath.Dir(p.cfg.VMsDir), "snapshots")
	}
	if p.cfg.LayersDir == "" {
		p.cfg.LayersDir = filepath.Join(filepath.Dir(p.cfg.VMsDir), "layers")
	}
	return &vmManager{
		vmParts:  p,
		layers:   &layerStore{dir: p.cfg.LayersDir, log: p.log},
		machines: map[string]vmm.Machine{},
		agents:   map[string]*guest.Client{},
		infos:    map[string]guest.Info{},
		warnings: map[string][]string{},
		quiets:   map[string]*quiet{},
	}
}

// lock serializes lifecycle changes of the VM called name.
func (m *vmManager) lock(ctx context.Context, name, what string) (func(), error) {
	ctx, cancel := context.WithTimeout(ctx, vmLockWait)
	defer cancel()
	unlock, err := m.locks.lockFor(ctx, name, what)
	if err != nil {
		code := api.Timeout
		if errors.Is(err, context.Canceled) {
			code = api.Canceled
		}
		return nil, api.Errorf(code, "vm %q is busy: %v", name, err).
			WithHint("try again once it is done; banger vm inspect " + name + " shows its state")
	}
	return unlock, nil
}

// vmLockWait bounds how long a command waits for another one on the
// same VM (a start waits for its guest up to its ready timeout, 90 s by
// default).
const vmLockWait = 3 * time.Minute

func (m *vmManager) machine(id string) vmm.Machine {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.machines[id]
}

var vmNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

const (
	defaultVCPUs        = 2
	defaultMemoryMiB    = 1024
	defaultReadyTimeout = 90 * time.Second
)

// create makes a VM's record and disk, then starts it unless asked not to.
// The VM's name is locked throughout, so no stop or delete of it can
// slip in between.
func (m *vmManager) create(ctx context.Context, req api.CreateVMRequest, p progressFunc) (api.VM, error) {
	if req.FromSnapshot != "" {
		return m.createFromSnapshot(ctx, req, p)
	}
	im, kb, err := m.resolve(ctx, &req)
	if err != nil {
		return api.VM{}, err
	}
	policy, err := m.createPolicy(ctx, req)
	if err != nil {
		return api.VM{}, err
	}
	var plan warmPlan
	if !req.NoStart {
		if plan = m.warmFor(ctx, req, im); plan.found {
			out, err := m.createWarm(ctx, req, plan, p)
			if err == nil || ctx.Err() != nil {
				return out, err
			}
			m.log.Warn("warm start failed; booting cold", "vm", req.Name, "snapshot", plan.sn.Name, "err", err)
			plan = warmPlan{why: fmt.Sprintf("warm start from %s failed: %v", plan.sn.Name, err)}
		}
	}
	unlock, err := m.lock(ctx, req.Name, "vm create")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	id := newID()
	v := store.VM{
		ID: id, Name: req.Name, State: api.StateCreating, Image: im.Name, Kernel: req.Kernel, VMM: m.def,
		VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, DiskBytes: max(req.DiskBytes, im.SizeBytes),
		Dir: filepath.Join(m.cfg.VMsDir, id), Net: marshal(policy),
	}
	if d := m.drivers[m.def]; d != nil && d.Features().Layers {
		// Named in the row before the file exists, so that a gc in
		// between keeps it, and a daemon killed now removes it.
		v.Layer = newLayerName()
	}
	if err := m.store.CreateVM(ctx, v); err != nil {
		if errors.Is(err, store.ErrExist) {
			return api.VM{}, api.Errorf(api.Conflict, "vm name %q is taken", req.Name).
				WithHint(fmt.Sprintf("pick another --name, or delete the old one: banger vm delete %s", req.Name))
		}
		return api.VM{}, err
	}
	crashpoint.Hit(crashpoint.VMCreateAfterRow)
	if _, err := m.net.lease(ctx, id); err != nil {
		m.store.DeleteVM(context.WithoutCancel(ctx), id)
		return api.VM{}, err
	}
	crashpoint.Hit(crashpoint.VMCreateAfterLease)
	if err := m.recordCreatePorts(ctx, id, req.Ports); err != nil {
		m.store.DeleteVM(context.WithoutCancel(ctx), id) // and its lease
		return api.VM{}, err
	}
	if err := m.makeDisk(ctx, &v, im, p); err != nil {
		os.RemoveAll(v.Dir)
		m.store.DeleteVM(context.WithoutCancel(ctx), id) // and its lease
		m.gcLayers(context.WithoutCancel(ctx), false)
		return api.VM{}, fullDisk(err, "creating vm "+strconv.Quote(v.Name), m.cfg.VMsDir, "vm")
	}
	crashpoint.Hit(crashpoint.VMCreateAfterDisk)
	// Until its first write below the record says creating: a daemon
	// killed now removes the VM at its next start, as nobody has it yet.
	if req.NoStart {
		v.State = api.StateCreated
		if err := m.store.UpdateVM(ctx, v); err != nil {
			return api.VM{}, err
		}
		return m.view(ctx, v), nil
	}
	boot := api.BootInfo{Mode: api.BootCold, Why: plan.why}
	v.Boot = marshal(boot)
	var ready func(*store.VM)
	if plan.make != "" {
		ready = func(v *store.VM) {
			p("taking the warm snapshot of image "+im.Name, 0, 0)
			m.takeWarm(ctx, v, im, plan.make, &boot)
			v.Boot = marshal(boot)
		}
	}
	out, err := m.startThen(ctx, &v, kb, time.Duration(req.ReadyTimeoutSeconds)*time.Second, p, ready)
	if err != nil && v.State == api.StateCreating {
		// It failed before booting: the VM is made, just not started.
		v.State = api.StateCreated
		m.store.UpdateVM(context.WithoutCancel(ctx), v)
	}
	return out, err
}

// resolve fills in req's defaults and checks it: the name, the image and
// its kernel, the sizes, and that the VMM can run here.
func (m *vmManager) resolve(ctx context.Context, req *api.CreateVMRequest) (image.Image, kernel.Bundle, error) {
	if req.Name == "" {
		req.Name = m.generateName(ctx)
	}
	if !vmNameRE.MatchString(req.Name) {
		return image.Image{}, kernel.Bundle{}, api.Errorf(api.InvalidArgument, "vm name %q: use lowercase letters, digits and '-' (at most 40, starting with a letter or digit)", req.Name)
	}
	if err := m.checkCreatePorts(ctx, req.Ports); err != nil {
		return image.Image{}, kernel.Bundle{}, err
	}
	if req.Image == "" {
		req.Image = m.cfg.DefaultImage
	}
	im, err := m.images.Get(req.Image)
	if err != nil {
		return image.Image{}, kernel.Bundle{}, err
	}
	if req.Kernel == "" {
		req.Kernel = im.KernelRef
	}
	kb, err := m.kernels.Get(req.Kernel)
	if err != nil {
		return image.Image{}, kernel.Bundle{}, api.Errorf(api.NotFound, "kernel %q of image %q is not installed", req.Kernel, im.Name).
			WithHint("pull it with: banger kernel pull " + req.Kernel)
	}
	if req.VCPUs == 0 {
		req.VCPUs = cmp.Or(m.cfg.VCPUs, defaultVCPUs)
	}
	if req.MemoryMiB == 0 {
		req.MemoryMiB = cmp.Or(m.cfg.MemoryMiB, defaultMemoryMiB)
	}
	if req.VCPUs < 1 || req.VCPUs > 64 {
		return image.Image{}, kernel.Bundle{}, api.Errorf(api.InvalidArgument, "--cpus %d: must be between 1 and 64", req.VCPUs)
	}
	if req.MemoryMiB < 128 {
		return image.Image{}, kernel.Bundle{}, api.Errorf(api.InvalidArgument, "--memory %dM: at least 128M is needed", req.MemoryMiB)
	}
	if req.DiskBytes != 0 && req.DiskBytes < im.SizeBytes {
		return image.Image{}, kernel.Bundle{}, tooSmall(req.DiskBytes, im)
	}
	if req.DiskBytes == 0 {
		// The default is a floor: an image larger than vm_disk keeps its size.
		req.DiskBytes = max(m.cfg.DiskBytes, im.SizeBytes)
	}
	if c, ok := m.drivers[m.def].(vmm.Checker); ok {
		if err := c.Check(ctx); err != nil {
			return image.Image{}, kernel.Bundle{}, api.Errorf(api.Unavailable, "vmm %s cannot run here: %v", m.def, err).WithHint("see banger doctor")
		}
	}
	return im, kb, nil
}

// tooSmall refuses a --disk below the image's size, naming the smallest
// size accepted in a form --disk takes (whole MiB, rounded up).
func tooSmall(size int64, im image.Image) error {
	minMiB := (im.SizeBytes + 1<<20 - 1) >> 20
	return api.Errorf(api.InvalidArgument, "--disk %s is smaller than image %s, which needs at least %dM; a disk can only be larger than its image",
		config.FormatSize(size), im.Name, minMiB).WithHint(fmt.Sprintf("use --disk %dM or more, or leave --disk out for the default (vm_disk in config.toml)", minMiB))
}

// makeDisk makes v's directory and root disk from im, with the guest's
// seed, and sets v.DiskMethod. It writes nothing to the state. A VM with
// a layer gets a qcow2 layer over the image (nothing is copied: the
// same cost for any image size); others a copy of the image's file
// (reflink where the filesystem can).
func (m *vmManager) makeDisk(ctx context.Context, v *store.VM, im image.Image, p progressFunc) error {
	if err := os.MkdirAll(v.Dir, 0o700); err != nil {
		return err
	}
	if err := m.prepareGuest(ctx, *v, im); err != nil {
		return err
	}
	if v.Layer != "" {
		if err := m.layers.overImage(ctx, im, v.Layer, v.DiskBytes, p); err != nil {
			return fmt.Errorf("making the disk of vm %q: %w", v.Name, err)
		}
		v.DiskMethod = disk.MethodOverlay
		return nil
	}
	root := filepath.Join(v.Dir, rootDiskFile)
	method, err := disk.Clone(ctx, im.Rootfs, root, func(d, t int64) { p("copying rootfs", d, t) })
	if err != nil {
		return err
	}
	// Only the file grows (sparse) when the guest can grow its
	// filesystem online at boot; else resize2fs grows it here.
	if _, err := disk.Grow(ctx, root, v.DiskBytes); err != nil {
		return err
	}
	v.DiskMethod = method
	return nil
}

func (m *vmManager) generateName(ctx context.Context) string {
	adj := []string{"brave", "calm", "eager", "fuzzy", "jolly", "keen", "lucky", "nimble", "quiet", "rapid", "shiny", "witty"}
	noun := []string{"otter", "falcon", "badger", "lynx", "heron", "panda", "gecko", "koala", "raven", "tapir", "walrus", "yak"}
	for {
		b := make([]byte, 3)
		rand.Read(b)
		name := fmt.Sprintf("%s-%s-%d", adj[int(b[0])%len(adj)], noun[int(b[1])%len(noun)], int(b[2])%100)
		if _, err := m.store.VMByName(ctx, name); errors.Is(err, store.ErrNotExist) {
			return name
		}
	}
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// view turns a record into what the API shows.
func (m *vmManager) view(ctx context.Context, v store.VM) api.VM {
	out := api.VM{
		ID: v.ID, Name: v.Name, State: v.State, Image: v.Image, Kernel: v.Kernel, VMM: v.VMM,
		VCPUs: v.VCPUs, MemoryMiB: v.MemoryMiB, DiskBytes: v.DiskBytes, DiskMethod: v.DiskMethod,
		Disk: m.rootDisk(v).Path, Dir: v.Dir, ConsoleLog: filepath.Join(v.Dir, consoleLogFile), LastError: v.LastError, CreatedAt: v.CreatedAt,
		VsockCID: v.VsockCID, Workspace: workspaceOf(v), Net: m.netView(v), Origin: v.Origin,
	}
	if v.Boot != "" {
		out.Boot = &api.BootInfo{}
		if json.Unmarshal([]byte(v.Boot), out.Boot) != nil {
			out.Boot = &api.BootInfo{Why: v.Boot} // a row from before boot was JSON
		}
	}
	if d, ok := m.drivers[v.VMM]; ok {
		out.Accel = string(d.Features().Accel)
	}
	if mc := m.machine(v.ID); mc != nil {
		out.PID = mc.Handle().PID
	}
	if l, err := m.store.LeaseOf(ctx, v.ID); err == nil {
		out.IP, out.MAC, out.Tap = l.IP.String(), l.MAC, l.Tap
	}
	m.mu.Lock()
	if info, ok := m.infos[v.ID]; ok {
		out.Agent = info.AgentVersion
	}
	out.Warnings = m.warnings[v.ID]
	m.mu.Unlock()
	json.Unmarshal([]byte(v.Synced), &out.Credentials)
	out.Ports = m.portsView(ctx, v.ID)
	return out
}

// list is every VM as the API shows it.
func (m *vmManager) list(ctx context.Context) ([]api.VM, error) {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := []api.VM{}
	for _, v := range vms {
		out = append(out, m.view(ctx, v))
	}
	return out, nil
}

func (m *vmManager) get(ctx context.Context, name string) (store.VM, error) {
	v, err := m.store.VMByName(ctx, name)
	if errors.Is(err, store.ErrNotExist) {
		return v, api.Errorf(api.NotFound, "vm %q does not exist", name).WithHint("see banger vm list")
	}
	return v, err
}

// kernelOf is the kernel bundle v boots.
func (m *vmManager) kernelOf(v store.VM) (kernel.Bundle, error) {
	kb, err := m.kernels.Get(v.Kernel)
	if err != nil {
		return kb, api.Errorf(api.NotFound, "kernel %q of vm %q is not installed", v.Kernel, v.Name).
			WithHint("pull it with: banger kernel pull " + v.Kernel)
	}
	return kb, nil
}

// The files of a VM's directory that the daemon names.
const (
	rootDiskFile   = "rootfs.ext4"
	consoleLogFile = "console.log"
)

// specFor builds the whole boot spec of v with kernel kb and network
// interface nic: the drives in their order (root, the kernel's modules
// when it has them, the seed when v has one), the guest device of each
// taken from that order, and the kernel command line banger's initrd and
// agent read. The vsock context id is set by bootVMM.
func (m *vmManager) specFor(v store.VM, kb kernel.Bundle, nic vmm.NIC, netArg string) vmm.Spec {
	spec := vmm.Spec{
		ID: v.ID, Name: v.Name, Dir: v.Dir, VCPUs: v.VCPUs, MemoryMiB: v.MemoryMiB,
		Kernel: kb.Kernel, Initrd: kb.Initrd, ConsoleLog: filepath.Join(v.Dir, consoleLogFile),
		ConsoleLogMax: m.cfg.ConsoleLogMax,
		NICs:          []vmm.NIC{nic},
	}
	attach := func(d vmm.Drive) string {
		spec.Drives = append(spec.Drives, d)
		return vmm.DriveDevice(len(spec.Drives) - 1)
	}
	args := []string{"root=" + attach(m.rootDisk(v))}
	if kb.Modules != "" {
		args = append(args, "banger.modules="+attach(vmm.Drive{ID: "modules", Path: kb.Modules, ReadOnly: true}))
	}
	args = append(args, "rw", "banger.hostname="+v.Name)
	if seed := filepath.Join(v.Dir, seedFileName); fileExists(seed) {
		args = append(args, "banger.seed="+attach(vmm.Drive{ID: "seed", Path: seed, ReadOnly: true}))
	}
	spec.Cmdline = strings.Join(append(args, netArg), " ")
	return spec
}

// rootDisk is v's root drive: its qcow2 layer, or its raw disk in its
// directory.
func (m *vmManager) rootDisk(v store.VM) vmm.Drive {
	if v.Layer != "" {
		return vmm.Drive{ID: "root", Path: m.layers.path(v.Layer), Root: true, Format: vmm.FormatQCOW2}
	}
	return vmm.Drive{ID: "root", Path: filepath.Join(v.Dir, rootDiskFile), Root: true}
}

// gcLayers removes the layer files no VM (or snapshot) builds on; see
// layerStore.gc.
func (m *vmManager) gcLayers(ctx context.Context, startup bool) {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		m.log.Warn("listing vms for layer gc", "err", err)
		return
	}
	snaps, err := m.store.ListSnapshots(ctx)
	if err != nil {
		m.log.Warn("listing snapshots for layer gc", "err", err)
		return
	}
	var inUse []string
	for _, v := range vms {
		if v.Layer != "" {
			inUse = append(inUse, v.Layer)
		}
	}
	for _, sn := range snaps {
		if sn.Layer != "" {
			inUse = append(inUse, sn.Layer)
		}
	}
	var images []image.Image
	if m.images != nil {
		if images, err = m.images.List(); err != nil {
			m.log.Warn("listing images for layer gc", "err", err)
			return
		}
	}
	m.layers.gc(inUse, images, startup)
}

// maxCIDRetries bounds how many context ids a start tries when the host
// refuses them.
const maxCIDRetries = 16

// bootVMM starts the VMM of v with spec, after giving spec v's vsock
// context id (allocated in the state on first use, then kept; unique
// among this daemon's VMs). When the host refuses the id because another
// VM on the host holds it, v gets another and the start is retried.
func (m *vmManager) bootVMM(ctx context.Context, d vmm.Driver, v store.VM, spec *vmm.Spec) (vmm.Machine, error) {
	return m.bootWith(ctx, v, spec, d.Start)
}

// bootWith is bootVMM with start in place of the driver's Start (a
// Restore, say).
func (m *vmManager) bootWith(ctx context.Context, v store.VM, spec *vmm.Spec, start func(context.Context, vmm.Spec) (vmm.Machine, error)) (vmm.Machine, error) {
	avoid := map[uint32]bool{}
	for {
		cid, err := m.store.AllocateCID(ctx, v.ID, avoid)
		if err != nil {
			return nil, err
		}
		spec.VsockCID = cid
		mc, err := start(ctx, *spec)
		if errors.Is(err, vmm.ErrCIDInUse) && len(avoid) < maxCIDRetries {
			m.log.Info("vsock cid taken on the host; trying another", "vm", v.Name, "cid", cid)
			avoid[cid] = true
			continue
		}
		return mc, err
	}
}

func marshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// fullDisk is err, or when err is a full file system, an error that says
// which one and how much it has free, that nothing of what (a "vm", a
// "snapshot") was kept, and what to do. dir is the file system to name
// when err names no file.
func fullDisk(err error, doing, dir, what string) error {
	if !diskspace.IsFull(err) {
		return err
	}
	return api.Errorf(api.Unavailable, "%s: %s is full: %v (nothing of the %s was kept)",
		doing, diskspace.Describe(diskspace.Dir(err, dir)), err, what).
		WithHint("free space there, then run the same command again")
}
