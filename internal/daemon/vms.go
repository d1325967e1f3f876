package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/guest"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/store"
	"banger/internal/vmm"
)

// vmManager owns the VMs: their records, their VMM processes and their
// agent connections.
type vmManager struct {
	s       *Server
	drivers map[string]vmm.Driver
	def     string // driver new VMs use

	mu       sync.Mutex               // guards the maps below
	machines map[string]vmm.Machine   // by VM id, while the VMM runs
	agents   map[string]*guest.Client // by VM id, once the agent answered
	locks    map[string]*sync.Mutex   // by VM id: one lifecycle change at a time
	infos    map[string]guest.Info    // by VM id: the agent's hello
}

func newVMManager(s *Server, drivers map[string]vmm.Driver, def string) *vmManager {
	return &vmManager{
		s: s, drivers: drivers, def: def,
		machines: map[string]vmm.Machine{},
		agents:   map[string]*guest.Client{},
		locks:    map[string]*sync.Mutex{},
		infos:    map[string]guest.Info{},
	}
}

// lock serializes lifecycle changes of one VM.
func (m *vmManager) lock(id string) func() {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

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
func (m *vmManager) create(ctx context.Context, req api.CreateVMRequest, p progressFunc) (api.VM, error) {
	if req.Name == "" {
		req.Name = m.generateName(ctx)
	}
	if !vmNameRE.MatchString(req.Name) {
		return api.VM{}, api.Errorf(api.InvalidArgument, "vm name %q: use lowercase letters, digits and '-' (at most 40, starting with a letter or digit)", req.Name)
	}
	if req.Image == "" {
		req.Image = m.s.opts.Config.DefaultImageName
	}
	im, err := m.s.images.Get(req.Image)
	if err != nil {
		return api.VM{}, unknownImage(req.Image, m.s.images.Names())
	}
	kname := im.KernelRef
	if req.Kernel != "" {
		kname = req.Kernel
	}
	if _, err := m.s.kernels.Get(kname); err != nil {
		return api.VM{}, api.Errorf(api.NotFound, "kernel %q of image %q is not installed", kname, im.Name).
			WithHint("pull it with: banger kernel pull " + kname)
	}
	if req.VCPUs == 0 {
		req.VCPUs = defaultVCPUs
	}
	if req.MemoryMiB == 0 {
		req.MemoryMiB = defaultMemoryMiB
	}
	if req.VCPUs < 1 || req.VCPUs > 64 {
		return api.VM{}, api.Errorf(api.InvalidArgument, "--cpus %d: must be between 1 and 64", req.VCPUs)
	}
	if req.MemoryMiB < 128 {
		return api.VM{}, api.Errorf(api.InvalidArgument, "--memory %dM: at least 128M is needed", req.MemoryMiB)
	}
	if req.DiskBytes != 0 && req.DiskBytes < im.SizeBytes {
		return api.VM{}, api.Errorf(api.InvalidArgument, "--disk %dM is smaller than image %s (%dM); disks can only grow",
			req.DiskBytes>>20, im.Name, im.SizeBytes>>20)
	}
	if c, ok := m.drivers[m.def].(vmm.Checker); ok {
		if err := c.Check(ctx); err != nil {
			return api.VM{}, api.Errorf(api.Unavailable, "vmm %s cannot run here: %v", m.def, err).WithHint("see banger doctor")
		}
	}
	id := newID()
	v := store.VM{
		ID: id, Name: req.Name, State: api.StateCreating, Image: im.Name, Kernel: kname, VMM: m.def,
		VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, DiskBytes: max(req.DiskBytes, im.SizeBytes),
		Dir: filepath.Join(m.s.opts.Dirs.State, "vms", id),
	}
	if err := m.s.store.CreateVM(ctx, v); err != nil {
		if errors.Is(err, store.ErrExist) {
			return api.VM{}, api.Errorf(api.Conflict, "vm name %q is taken", req.Name).
				WithHint(fmt.Sprintf("pick another --name, or delete the old one: banger vm delete %s", req.Name))
		}
		return api.VM{}, err
	}
	if _, err := m.s.net.lease(ctx, id); err != nil {
		m.s.store.DeleteVM(context.WithoutCancel(ctx), id)
		return api.VM{}, err
	}
	if err := m.makeDisk(ctx, &v, im, p); err != nil {
		os.RemoveAll(v.Dir)
		m.s.store.DeleteVM(context.WithoutCancel(ctx), id) // and its lease
		return api.VM{}, err
	}
	if req.NoStart {
		return m.view(v), nil
	}
	return m.start(ctx, v.Name, time.Duration(req.ReadyTimeoutSeconds)*time.Second, p)
}

func unknownImage(name string, valid []string) error {
	list := "none yet"
	if len(valid) > 0 {
		list = strings.Join(valid, ", ")
	}
	return api.Errorf(api.NotFound, "image %q does not exist (images: %s)", name, list).
		WithHint("see banger image list, or add one with banger image register")
}

func (m *vmManager) makeDisk(ctx context.Context, v *store.VM, im image.Image, p progressFunc) error {
	if err := os.MkdirAll(v.Dir, 0o700); err != nil {
		return err
	}
	root := filepath.Join(v.Dir, "rootfs.ext4")
	method, err := disk.Clone(ctx, im.Rootfs, root, func(d, t int64) { p("copying rootfs", d, t) })
	if err != nil {
		return err
	}
	if err := m.prepareGuest(ctx, *v, im, root); err != nil {
		return err
	}
	if v.DiskBytes > im.SizeBytes {
		p("growing disk", 0, 0)
		if err := disk.Grow(ctx, root, v.DiskBytes); err != nil {
			return err
		}
	}
	v.DiskMethod, v.State = method, api.StateCreated
	return m.s.store.UpdateVM(ctx, *v)
}

func (m *vmManager) generateName(ctx context.Context) string {
	adj := []string{"brave", "calm", "eager", "fuzzy", "jolly", "keen", "lucky", "nimble", "quiet", "rapid", "shiny", "witty"}
	noun := []string{"otter", "falcon", "badger", "lynx", "heron", "panda", "gecko", "koala", "raven", "tapir", "walrus", "yak"}
	for {
		b := make([]byte, 3)
		rand.Read(b)
		name := fmt.Sprintf("%s-%s-%d", adj[int(b[0])%len(adj)], noun[int(b[1])%len(noun)], int(b[2])%100)
		if _, err := m.s.store.VMByName(ctx, name); errors.Is(err, store.ErrNotExist) {
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
func (m *vmManager) view(v store.VM) api.VM {
	out := api.VM{
		ID: v.ID, Name: v.Name, State: v.State, Image: v.Image, Kernel: v.Kernel, VMM: v.VMM,
		VCPUs: v.VCPUs, MemoryMiB: v.MemoryMiB, DiskBytes: v.DiskBytes, DiskMethod: v.DiskMethod,
		Dir: v.Dir, ConsoleLog: filepath.Join(v.Dir, "console.log"), LastError: v.LastError, CreatedAt: v.CreatedAt,
		VsockCID: v.VsockCID,
	}
	if d, ok := m.drivers[v.VMM]; ok {
		out.Accel = string(d.Features().Accel)
	}
	if mc := m.machine(v.ID); mc != nil {
		out.PID = mc.Handle().PID
	}
	if l, err := m.s.store.LeaseOf(context.Background(), v.ID); err == nil {
		out.IP, out.MAC, out.Tap = l.IP.String(), l.MAC, l.Tap
	}
	m.mu.Lock()
	if info, ok := m.infos[v.ID]; ok {
		out.Agent = info.AgentVersion
	}
	m.mu.Unlock()
	return out
}

func (m *vmManager) get(ctx context.Context, name string) (store.VM, error) {
	v, err := m.s.store.VMByName(ctx, name)
	if errors.Is(err, store.ErrNotExist) {
		return v, api.Errorf(api.NotFound, "vm %q does not exist", name).WithHint("see banger vm list")
	}
	return v, err
}

// specFor builds the boot spec of v. A VM made before agent keys existed
// gets one here, on its seed drive. The vsock context id is set by
// bootVMM.
func (m *vmManager) specFor(v store.VM) (vmm.Spec, error) {
	kb, err := m.s.kernels.Get(v.Kernel)
	if err != nil {
		return vmm.Spec{}, api.Errorf(api.NotFound, "kernel %q of vm %q is not installed", v.Kernel, v.Name).
			WithHint("pull it with: banger kernel pull " + v.Kernel)
	}
	if err := ensureAgentKey(v); err != nil {
		return vmm.Spec{}, err
	}
	spec := vmm.Spec{
		ID: v.ID, Name: v.Name, Dir: v.Dir, VCPUs: v.VCPUs, MemoryMiB: v.MemoryMiB,
		Kernel: kb.Kernel, Initrd: kb.Initrd, ConsoleLog: filepath.Join(v.Dir, "console.log"),
		ConsoleLogMax: int64(m.s.opts.Config.ConsoleLogMaxMiB) << 20,
		Drives:        []vmm.Drive{{ID: "root", Path: filepath.Join(v.Dir, "rootfs.ext4"), Root: true}},
	}
	modulesDev := ""
	if kb.Modules != "" {
		spec.Drives = append(spec.Drives, vmm.Drive{ID: "modules", Path: kb.Modules, ReadOnly: true})
		modulesDev = "/dev/vdb"
	}
	spec.Cmdline = kernel.Cmdline("/dev/vda", modulesDev) + " rw banger.hostname=" + v.Name
	if seed := filepath.Join(v.Dir, seedFileName); fileExists(seed) {
		spec.Drives = append(spec.Drives, vmm.Drive{ID: "seed", Path: seed, ReadOnly: true})
		spec.Cmdline += " banger.seed=/dev/vd" + string(rune('a'+len(spec.Drives)-1))
	}
	return spec, nil
}

// maxCIDRetries bounds how many context ids a start tries when the host
// refuses them.
const maxCIDRetries = 16

// bootVMM starts the VMM of v with spec, after giving spec v's vsock
// context id (allocated in the state on first use, then kept; unique
// among this daemon's VMs). When the host refuses the id because another
// VM on the host holds it, v gets another and the start is retried.
func (m *vmManager) bootVMM(ctx context.Context, d vmm.Driver, v store.VM, spec *vmm.Spec) (vmm.Machine, error) {
	avoid := map[uint32]bool{}
	for {
		cid, err := m.s.store.AllocateCID(ctx, v.ID, avoid)
		if err != nil {
			return nil, err
		}
		spec.VsockCID = cid
		mc, err := d.Start(ctx, *spec)
		if errors.Is(err, vmm.ErrCIDInUse) && len(avoid) < maxCIDRetries {
			m.s.log.Info("vsock cid taken on the host; trying another", "vm", v.Name, "cid", cid)
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
