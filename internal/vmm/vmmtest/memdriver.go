package vmmtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"banger/internal/vmm"
)

// memFirstPID is above any PID Linux hands out (PID_MAX_LIMIT is 1<<22).
const memFirstPID = 1 << 22

// memMaxDir is the longest Spec.Dir MemDriver takes: the shortest limit
// of the real drivers, whose sockets live in Spec.Dir.
const memMaxDir = 85

// MemGuest is how the pretend guest of one machine behaves. The zero
// value boots at once, answers on its agent and powers off when asked.
type MemGuest struct {
	// IgnoreShutdown: Shutdown's request is ignored, so Shutdown kills
	// the machine once its ctx is done.
	IgnoreShutdown bool
	// AgentDelay: DialAgent connects only this long after Start.
	AgentDelay time.Duration
	// NoAgent: DialAgent never connects; it retries until its ctx is done.
	NoAgent bool
}

// MemOptions configure a MemDriver. Every field is optional. Hooks are
// called on the goroutine that calls the driver: guard what they share
// with the test.
type MemOptions struct {
	// Name is Driver.Name and Handle.Driver. Default "mem".
	Name string
	// Accel is Features.Accel. Default vmm.AccelKVM.
	Accel vmm.Accel
	// Transport is Features.Transport. Default vmm.TransportVsock, with
	// which Start guards vsock context ids as the host does.
	Transport vmm.AgentTransport
	// Layers is Features.Layers: drives may be qcow2. Without it Start
	// refuses a qcow2 drive, as Firecracker does.
	Layers bool
	// Version is what Version returns; default "mem 1".
	Version string
	// Fail, when set, is asked before each Snapshot, FreezeDisk and
	// Restore (op OpSnapshot, OpFreeze, OpRestore); an error it returns
	// fails that call, as a full disk or a dead VMM would.
	Fail func(op string) error
	// Unavailable, when set, makes Check and every Start fail with
	// vmm.ErrUnavailable and this message.
	Unavailable string
	// StartHook, when set, sees each spec that passed validation; an
	// error it returns is Start's error, as it is, and nothing starts.
	StartHook func(spec vmm.Spec) error
	// Guest says how the guest of spec behaves. Default: MemGuest{}.
	Guest func(spec vmm.Spec) MemGuest
	// Agent serves the guest end of each DialAgent connection until ctx,
	// which ends with the machine, is done. Default: echo what it reads.
	Agent func(ctx context.Context, m *MemMachine, conn net.Conn)
}

// Event ops, in MemDriver.Events.
const (
	OpStart       = "start"        // Start succeeded; Spec set
	OpStartFailed = "start-failed" // Start refused; Spec and Err set
	OpAdopt       = "adopt"        // Adopt succeeded
	OpDialAgent   = "dial-agent"   // DialAgent connected
	OpPause       = "pause"
	OpResume      = "resume"
	OpShutdown    = "shutdown" // Shutdown asked the guest to power off
	OpKill        = "kill"     // Kill of a running machine
	OpExit        = "exit"     // the machine ended; Detail says how
)

// Event is one thing that happened on a MemDriver's host.
type Event struct {
	Op     string
	ID     string   // Spec.ID of the machine
	PID    int      // 0 on start-failed
	Spec   vmm.Spec // on start and start-failed
	Err    error    // on start-failed
	Detail string   // on exit: "killed", "crashed", "powered off"
}

// MemDriver is an in-memory vmm.Driver; see the package comment. It is
// safe for concurrent use.
type MemDriver struct {
	opts MemOptions
	host *memHost
}

var (
	_ vmm.Driver  = (*MemDriver)(nil)
	_ vmm.Checker = (*MemDriver)(nil)
)

// memHost is what the drivers of one pretend host share.
type memHost struct {
	mu      sync.Mutex // guards the fields below
	nextPID int
	vms     map[int]*memVM // running machines by pid
	held    map[uint32]bool
	events  []Event
}

// NewMemDriver returns a MemDriver on a new, empty pretend host.
func NewMemDriver(opts MemOptions) *MemDriver {
	if opts.Name == "" {
		opts.Name = "mem"
	}
	if opts.Accel == "" {
		opts.Accel = vmm.AccelKVM
	}
	if opts.Transport == "" {
		opts.Transport = vmm.TransportVsock
	}
	if opts.Guest == nil {
		opts.Guest = func(vmm.Spec) MemGuest { return MemGuest{} }
	}
	if opts.Agent == nil {
		opts.Agent = func(_ context.Context, _ *MemMachine, conn net.Conn) { io.Copy(conn, conn) }
	}
	return &MemDriver{opts: opts, host: &memHost{nextPID: memFirstPID, vms: map[int]*memVM{}, held: map[uint32]bool{}}}
}

// Restart returns the driver a restarted daemon would make: the same
// options on the same host, so that Adopt finds what d started. Machines
// from d keep working.
func (d *MemDriver) Restart() *MemDriver { return &MemDriver{opts: d.opts, host: d.host} }

// Name returns MemOptions.Name.
func (d *MemDriver) Name() string { return d.opts.Name }

// Features reports pause and snapshots (machines implement vmm.Pauser,
// vmm.Snapshotter and vmm.DiskFreezer; the driver vmm.Restorer and
// vmm.Versioner), and the layers, accelerator and transport of
// MemOptions.
func (d *MemDriver) Features() vmm.Features {
	return vmm.Features{Snapshots: true, Pause: true, Layers: d.opts.Layers, Accel: d.opts.Accel, Transport: d.opts.Transport}
}

// Check fails with vmm.ErrUnavailable when MemOptions.Unavailable is set.
func (d *MemDriver) Check(context.Context) error {
	if d.opts.Unavailable != "" {
		return fmt.Errorf("%w: %s", vmm.ErrUnavailable, d.opts.Unavailable)
	}
	return nil
}

// HoldCID marks cid as taken on the host by a VM banger does not know:
// Start with it fails with vmm.ErrCIDInUse (with the vsock transport).
func (d *MemDriver) HoldCID(cid uint32) {
	d.host.mu.Lock()
	d.host.held[cid] = true
	d.host.mu.Unlock()
}

// Events returns what happened on the host so far, oldest first.
func (d *MemDriver) Events() []Event {
	d.host.mu.Lock()
	defer d.host.mu.Unlock()
	return append([]Event(nil), d.host.events...)
}

// Machine returns the running machine whose Spec.ID is id, or nil.
func (d *MemDriver) Machine(id string) *MemMachine {
	d.host.mu.Lock()
	defer d.host.mu.Unlock()
	for _, vm := range d.host.vms {
		if vm.spec.ID == id {
			return &MemMachine{vm: vm}
		}
	}
	return nil
}

func (h *memHost) record(e Event) {
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}

// Start validates spec as the real drivers do, then starts a machine
// whose guest is "booted" at once.
func (d *MemDriver) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	m, err := d.start(ctx, spec)
	if err != nil {
		d.host.record(Event{Op: OpStartFailed, ID: spec.ID, Spec: spec, Err: err})
		return nil, err
	}
	return m, nil
}

func (d *MemDriver) start(ctx context.Context, spec vmm.Spec) (*MemMachine, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting vm %q: %w", spec.Name, err)
	}
	if err := d.Check(ctx); err != nil {
		return nil, err
	}
	if err := d.validate(spec); err != nil {
		return nil, fmt.Errorf("invalid vm spec %q: %w", spec.Name, err)
	}
	if d.opts.StartHook != nil {
		if err := d.opts.StartHook(spec); err != nil {
			return nil, err
		}
	}
	h := d.host
	h.mu.Lock()
	defer h.mu.Unlock()
	vsock := d.opts.Transport == vmm.TransportVsock
	for _, vm := range h.vms {
		if vm.spec.Dir == spec.Dir {
			return nil, fmt.Errorf("vm dir %s is in use by vmm pid %d", spec.Dir, vm.pid)
		}
		if vsock && vm.spec.VsockCID == spec.VsockCID {
			return nil, fmt.Errorf("vsock cid %d: %w", spec.VsockCID, vmm.ErrCIDInUse)
		}
	}
	if vsock && h.held[spec.VsockCID] {
		return nil, fmt.Errorf("vsock cid %d: %w", spec.VsockCID, vmm.ErrCIDInUse)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	vm := &memVM{
		d: d, spec: spec, pid: h.nextPID, guest: d.opts.Guest(spec), bootedAt: time.Now(), memory: map[string]string{},
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	h.nextPID++
	h.vms[vm.pid] = vm
	h.events = append(h.events, Event{Op: OpStart, ID: spec.ID, PID: vm.pid, Spec: spec})
	writeConsole(spec, "vmmtest: guest "+spec.Name+" booted\n")
	return &MemMachine{vm: vm}, nil
}

// validate refuses what the real drivers refuse.
func (d *MemDriver) validate(s vmm.Spec) error {
	var errs []error
	switch {
	case s.Dir == "":
		errs = append(errs, errors.New("dir is empty"))
	case !filepath.IsAbs(s.Dir):
		errs = append(errs, fmt.Errorf("dir %q is not an absolute path", s.Dir))
	case len(s.Dir) > memMaxDir:
		errs = append(errs, fmt.Errorf("dir %q is too long for a unix socket path (max %d bytes)", s.Dir, memMaxDir))
	}
	if s.Kernel == "" {
		errs = append(errs, errors.New("kernel is empty"))
	}
	if s.VCPUs < 1 || s.VCPUs > 32 {
		errs = append(errs, fmt.Errorf("vcpus %d: must be 1 to 32", s.VCPUs))
	}
	if s.MemoryMiB < 16 {
		errs = append(errs, fmt.Errorf("memory %d MiB: must be at least 16", s.MemoryMiB))
	}
	for i, dr := range s.Drives {
		if dr.ID == "" || dr.Path == "" {
			errs = append(errs, fmt.Errorf("drive %d %q: id and path must be set", i, dr.ID))
		}
		switch dr.Format {
		case "", vmm.FormatRaw:
		case vmm.FormatQCOW2:
			if !d.opts.Layers {
				errs = append(errs, fmt.Errorf("drive %q: format qcow2: this vmm takes raw disks only", dr.ID))
			}
		default:
			errs = append(errs, fmt.Errorf("drive %q: format %q: use raw or qcow2", dr.ID, dr.Format))
		}
		if dr.Root && i != 0 {
			errs = append(errs, fmt.Errorf("root drive %q must be the first drive", dr.ID))
		}
	}
	for _, n := range s.NICs {
		if n.ID == "" || n.Tap == "" {
			errs = append(errs, fmt.Errorf("nic %q: id and tap must be set", n.ID))
		}
	}
	if d.opts.Transport == vmm.TransportVsock && s.VsockCID < 3 {
		errs = append(errs, fmt.Errorf("vsock cid %d: must be at least 3", s.VsockCID))
	}
	return errors.Join(errs...)
}

// writeConsole appends line to the spec's console log, if it can.
func writeConsole(spec vmm.Spec, line string) {
	if spec.ConsoleLog == "" {
		return
	}
	f, err := os.OpenFile(spec.ConsoleLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	f.WriteString(line)
	f.Close()
}

// Adopt returns a new machine on a running one of the host. The handle
// must be of this driver and name a running machine of spec.Dir, else the
// error wraps vmm.ErrNotRunning.
func (d *MemDriver) Adopt(ctx context.Context, spec vmm.Spec, h vmm.Handle) (vmm.Machine, error) {
	if h.Driver != d.opts.Name {
		return nil, fmt.Errorf("handle of driver %q, not %q: %w", h.Driver, d.opts.Name, vmm.ErrNotRunning)
	}
	d.host.mu.Lock()
	vm := d.host.vms[h.PID]
	d.host.mu.Unlock()
	switch {
	case vm == nil:
		return nil, fmt.Errorf("adopting vm %q: no vmm with pid %d: %w", spec.Name, h.PID, vmm.ErrNotRunning)
	case vm.spec.Dir != spec.Dir:
		return nil, fmt.Errorf("adopting vm %q: pid %d is the vmm of another vm: %w", spec.Name, h.PID, vmm.ErrNotRunning)
	}
	d.host.record(Event{Op: OpAdopt, ID: spec.ID, PID: vm.pid})
	return &MemMachine{vm: vm}, nil
}
