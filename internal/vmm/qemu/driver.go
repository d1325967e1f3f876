// Package qemu implements vmm.Driver with qemu-system-x86_64's microvm
// machine: virtio-mmio devices, KVM when /dev/kvm is usable and TCG
// (software emulation) otherwise, and QMP over a Unix socket for control.
//
// QEMU runs in its own session with its output in the VM directory, so it
// outlives the daemon that started it; a later daemon re-attaches with
// Adopt. Under TCG the driver passes the host's TSC frequency to the guest
// kernel, without which about one microvm boot in four hangs.
//
// Files in the VM directory (vmm.Spec.Dir): qmp.sock (QMP), agent.sock
// (the virtio-serial agent channel), qemu.pid, qemu.log (QEMU's own
// stdout and stderr, truncated on each Start) and memory (the guest RAM
// of a cold-booted VM, a sparse file mapped shared; left for the caller
// to remove with the directory).
//
// The driver opens the drives itself and QEMU inherits them as fd sets
// (/dev/fdset/N, a read-only and a read-write descriptor each, no image
// locking), so that QEMU, after -runas, can still reopen them, as a
// migration's end and cont do. Snapshots (snapshot.go) are QEMU
// migrations into a file the driver passes as a descriptor too. The serial console is
// appended to vmm.Spec.ConsoleLog, which the Machine keeps under
// Spec.ConsoleLogMax with vmm.TrimConsoleFile (its older half in
// ConsoleLog.1) while the daemon runs.
//
// Without /dev/vhost-vsock the guest agent is reached through a
// virtserialport named "banger.agent" (guest: /dev/vportNp1 whose sysfs
// name is banger.agent). QEMU serves one host client on agent.sock at a
// time; a second connection waits until the first closes, so callers
// multiplex over one connection.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/kvmcheck"
)

const driverName = "qemu"

// adoptQMPTimeout bounds the QMP handshake when adopting a running QEMU.
const adoptQMPTimeout = 5 * time.Second

// DefaultBin is the QEMU binary used when Options.Bin is empty.
const DefaultBin = "qemu-system-x86_64"

// Options configure a Driver. The zero value picks everything itself.
type Options struct {
	// Bin is the QEMU binary, a name looked up in PATH or a path.
	// Default DefaultBin.
	Bin string
	// Logger receives lifecycle events. Default: discard.
	Logger *slog.Logger
	// Accel forces an accelerator. Default: KVM when it works here
	// (kvmcheck.Check), else TCG.
	Accel vmm.Accel
	// Transport forces the agent channel. Default: vsock when
	// /dev/vhost-vsock opens read-write, else virtio-serial.
	Transport vmm.AgentTransport
	// TSCkHz is the host TSC frequency passed to TCG guests. Default:
	// HostTSCkHz, measured once per Driver.
	TSCkHz int
	// RunAs, when set, is the user (name or uid:gid) QEMU drops to with
	// -runas once it has opened its disks, tap, sockets and log as root.
	// Default: QEMU stays root.
	RunAs string
	// NoSandbox turns off QEMU's seccomp filter (-sandbox). Default: on.
	NoSandbox bool
}

// Driver starts and adopts QEMU microVMs. It is safe for concurrent use.
type Driver struct {
	bin       string
	log       *slog.Logger
	accel     vmm.Accel
	transport vmm.AgentTransport
	tscKHz    func() (int, error)
	runAs     string
	sandbox   bool

	versionMu sync.Mutex // guards version
	version   string     // cached by Version once known
}

var (
	_ vmm.Driver    = (*Driver)(nil)
	_ vmm.Restorer  = (*Driver)(nil)
	_ vmm.Versioner = (*Driver)(nil)
)

// New returns a Driver. It probes /dev/kvm and /dev/vhost-vsock now; the
// binary is looked up on each Start.
func New(opts Options) *Driver {
	d := &Driver{
		bin:       opts.Bin,
		log:       opts.Logger,
		accel:     opts.Accel,
		transport: opts.Transport,
		runAs:     opts.RunAs,
		sandbox:   !opts.NoSandbox,
	}
	if d.bin == "" {
		d.bin = DefaultBin
	}
	if d.log == nil {
		d.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if d.accel == "" {
		d.accel = vmm.AccelTCG
		if kvmcheck.Check(context.Background(), "/dev/kvm", d.bin) == nil {
			d.accel = vmm.AccelKVM
		}
	}
	if d.transport == "" {
		d.transport = vmm.TransportVirtioSerial
		if usable("/dev/vhost-vsock") {
			d.transport = vmm.TransportVsock
		}
	}
	if opts.TSCkHz > 0 {
		d.tscKHz = func() (int, error) { return opts.TSCkHz, nil }
	} else {
		d.tscKHz = sync.OnceValues(HostTSCkHz)
	}
	return d
}

// Name returns "qemu".
func (d *Driver) Name() string { return driverName }

// Features reports pause and snapshot support, the accelerator and the
// agent channel.
func (d *Driver) Features() vmm.Features {
	return vmm.Features{Pause: true, Snapshots: true, Layers: true, Accel: d.accel, Transport: d.transport}
}

// Start boots spec and returns once QEMU answers on QMP. The serial
// console is appended to spec.ConsoleLog (capped); QEMU's own output goes to
// qemu.log in spec.Dir and its tail is part of the error when QEMU exits
// at once. On error no process or socket is left behind.
//
// Guest RAM is the file "memory" in spec.Dir, mapped shared, so that
// Snapshot saves only the device state and copies the file. Start
// replaces a file left there by an earlier run; the Machine leaves it
// when QEMU exits (emptied, on a normal exit): the caller removes it
// with the VM directory.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	l, bin, err := d.prepare(spec)
	if err != nil {
		return nil, err
	}
	// A stale file would keep its data (not sparse, copied by every
	// snapshot) or have the wrong size.
	if err := os.Remove(l.paths.Memory); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing stale guest memory file: %w", err)
	}
	// Made here, 0600, so that QEMU (which would make it with its umask,
	// 0644) opens a file only the daemon can read: it is the guest's RAM.
	f, err := os.OpenFile(l.paths.Memory, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("making the guest memory file: %w", err)
	}
	f.Close()
	l.mem = memory{path: l.paths.Memory, shared: true}
	m, err := d.spawn(bin, l)
	if err != nil {
		os.Remove(l.paths.Memory)
		return nil, err
	}
	if err := m.waitQMP(ctx); err != nil {
		m.Kill()
		return nil, fmt.Errorf("starting qemu for vm %q: %w", spec.Name, err)
	}
	if err := m.writePID(); err != nil {
		m.Kill()
		return nil, fmt.Errorf("writing pid file: %w", err)
	}
	m.log.Info("qemu started", "accel", d.accel, "transport", d.transport, "tsc_khz", l.tscKHz, "runas", d.runAs, "sandbox", d.sandbox)
	return m, nil
}

// prepare checks spec and the binary, makes spec.Dir and clears stale
// sockets: everything Start and Restore do before spawning QEMU.
func (d *Driver) prepare(spec vmm.Spec) (launch, string, error) {
	if err := validateSpec(spec); err != nil {
		return launch{}, "", fmt.Errorf("invalid vm spec %q: %w", spec.Name, err)
	}
	if d.transport == vmm.TransportVsock && spec.VsockCID < 3 {
		return launch{}, "", fmt.Errorf("invalid vm spec %q: vsock cid %d: must be at least 3", spec.Name, spec.VsockCID)
	}
	bin, err := exec.LookPath(d.bin)
	if err != nil {
		return launch{}, "", fmt.Errorf("qemu binary %q: %w (install qemu-system-x86 or set the qemu binary path): %w", d.bin, vmm.ErrUnavailable, err)
	}
	l := launch{spec: spec, accel: d.accel, transport: d.transport, paths: pathsFor(spec.Dir), runAs: d.runAs, sandbox: d.sandbox}
	if d.accel == vmm.AccelTCG {
		if l.tscKHz, err = d.tscKHz(); err != nil {
			d.log.Warn("host tsc frequency unknown; tcg boots may hang in early boot", "err", err)
		}
	}
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return launch{}, "", fmt.Errorf("creating vm dir: %w", err)
	}
	os.Remove(l.paths.QMP) // stale sockets from a crashed run
	os.Remove(l.paths.Agent)
	return l, bin, nil
}

// spawn starts QEMU in its own session with its output in qemu.log.
func (d *Driver) spawn(bin string, l launch) (*Machine, error) {
	logf, err := os.OpenFile(l.paths.Log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening qemu log: %w", err)
	}
	defer logf.Close()
	args := l.args()
	d.log.Debug("starting qemu", "vm", l.spec.Name, "bin", bin, "args", args)
	// Not CommandContext: QEMU must outlive the request and the daemon.
	cmd := exec.Command(bin, args...)
	cmd.Dir = l.spec.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	files, err := openDrives(l.spec)
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = files
	err = cmd.Start()
	for _, f := range files {
		f.Close() // QEMU has its own copies
	}
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", bin, err)
	}
	pidfd, err := openPidfd(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	m := newMachine(d, l.spec, cmd.Process.Pid, pidfd, cmd)
	m.accel, m.transport = l.accel, l.transport
	if l.mem.shared {
		m.memFile = l.mem.path
	}
	return m, nil
}

// openDrives opens the descriptors of driveFDs, in order.
func openDrives(spec vmm.Spec) ([]*os.File, error) {
	var files []*os.File
	for _, d := range driveFDs(spec) {
		flag := os.O_RDWR
		if d.readOnly {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(d.drive.Path, flag, 0)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("opening drive %q: %w", d.drive.ID, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// Adopt re-attaches to a QEMU started by an earlier daemon. It checks
// that h.PID is alive and is a QEMU serving this VM's QMP socket, then
// reconnects QMP. Otherwise the error wraps vmm.ErrNotRunning.
func (d *Driver) Adopt(ctx context.Context, spec vmm.Spec, h vmm.Handle) (vmm.Machine, error) {
	if h.Driver != "" && h.Driver != driverName {
		return nil, fmt.Errorf("handle of driver %q, not %q: %w", h.Driver, driverName, vmm.ErrNotRunning)
	}
	if h.PID <= 0 {
		return nil, fmt.Errorf("handle has no pid: %w", vmm.ErrNotRunning)
	}
	p := pathsFor(spec.Dir)
	pidfd, err := openPidfd(h.PID)
	if err != nil {
		return nil, fmt.Errorf("adopting vm %q: %w", spec.Name, err)
	}
	// Checked after opening the pidfd, so the fd names the checked process.
	if err := vmm.CheckCmdline(h.PID, "qemu", qmpArg(p.QMP)); err != nil {
		syscall.Close(pidfd)
		return nil, fmt.Errorf("adopting vm %q: %w", spec.Name, err)
	}
	// Bounded: a QMP socket still held by another daemon never greets.
	dctx, cancel := context.WithTimeout(ctx, adoptQMPTimeout)
	c, err := dialQMP(dctx, p.QMP)
	cancel()
	if err != nil {
		gone := exitedPidfd(pidfd)
		syscall.Close(pidfd)
		if gone {
			err = fmt.Errorf("%w (%w)", err, vmm.ErrNotRunning)
		}
		// When alive, the process is left alone: another daemon may hold
		// its QMP connection.
		return nil, fmt.Errorf("adopting vm %q: connecting to qmp: %w", spec.Name, err)
	}
	m := newMachine(d, spec, h.PID, pidfd, nil)
	m.accel = vmm.Accel(h.Data[dataAccel])
	// Without it (a handle from before memory files), snapshots stream
	// the RAM, which works with any backend.
	m.memFile = h.Data[dataMemory]
	m.transport = vmm.AgentTransport(h.Data[dataTransport])
	if m.transport == "" {
		m.transport = d.transport
	}
	m.qmpMu.Lock()
	m.qmp = c
	m.qmpMu.Unlock()
	m.log.Info("qemu adopted")
	return m, nil
}
