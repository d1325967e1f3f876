// Package firecracker drives Firecracker microVMs through their REST API
// on a Unix socket. It starts and supervises the firecracker process
// (optionally under the jailer), configures the VM before InstanceStart,
// pauses, snapshots and restores it, and dials the guest agent over
// Firecracker's hybrid vsock. The requests it sends are checked against
// the Firecracker v1.16.1 API spec by the contract tests of this package.
package firecracker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/fchost"
)

// Name is the driver name stored in vmm.Handle.Driver.
const Name = "firecracker"

// Files Firecracker uses inside spec.Dir.
const (
	APISocketName   = "firecracker.sock"
	VsockSocketName = "vsock.sock"
	LogName         = "firecracker.log"
	MetricsName     = "firecracker.metrics"
	// Snapshot files inside a snapshot directory.
	SnapshotStateName  = "vmstate"
	SnapshotMemoryName = "memory"
)

// defaultCID is the guest vsock CID when the spec does not set one.
const defaultCID = 3

// bootArgs are the kernel parameters banger adds for Firecracker: a serial
// console (its output is Firecracker's stdout, the console log), reboot
// through the keyboard controller so a guest reboot or Ctrl-Alt-Del ends
// the firecracker process, a quick panic exit, and no i8042 probes that
// only slow boot (the keyboard controller itself must stay: Ctrl-Alt-Del
// goes through it). Firecracker itself appends virtio_mmio.device= for
// each device, root= for the root drive and pci=off.
const bootArgs = "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd"

// Options configure a Driver. Every field is optional.
type Options struct {
	// Bin is the firecracker binary: a path, or a name looked up in PATH.
	// Default "firecracker".
	Bin string
	// JailerBin, when set, starts firecracker under Firecracker's jailer.
	JailerBin string
	// JailerUID and JailerGID are the ids the jailed firecracker runs as.
	// Taps must be usable by them (created with this owner).
	JailerUID, JailerGID int
	// JailerArgs are extra jailer arguments placed before "--", such as
	// "--cgroup-version", "2" or "--netns", "/var/run/netns/x".
	JailerArgs []string
	// Logger receives the driver's logs. Default: discard.
	Logger *slog.Logger
	// SocketTimeout bounds the wait for the API socket after the process
	// starts. Default 10s.
	SocketTimeout time.Duration
	// CheckKVM reports whether /dev/kvm is usable. Default CheckKVM; tests
	// replace it on hosts without KVM.
	CheckKVM func() error
}

// Driver starts Firecracker microVMs. It is safe for concurrent use.
type Driver struct {
	opts Options
	log  *slog.Logger

	verMu sync.Mutex // guards ver
	ver   cachedVersion
}

// cachedVersion is the output of `firecracker --version` for one
// binary file, so that replacing the binary is noticed.
type cachedVersion struct {
	path    string
	size    int64
	modTime time.Time
	version string
}

var (
	_ vmm.Driver    = (*Driver)(nil)
	_ vmm.Restorer  = (*Driver)(nil)
	_ vmm.Versioner = (*Driver)(nil)
)

// New returns a driver with opts.
func New(opts Options) *Driver {
	if opts.Bin == "" {
		opts.Bin = "firecracker"
	}
	if opts.SocketTimeout <= 0 {
		opts.SocketTimeout = 10 * time.Second
	}
	if opts.CheckKVM == nil {
		opts.CheckKVM = fchost.CheckKVM
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{opts: opts, log: log}
}

// Name returns "firecracker".
func (d *Driver) Name() string { return Name }

// Features reports snapshots (Snapshotter, Restorer) and pause, KVM and
// hybrid vsock.
func (d *Driver) Features() vmm.Features {
	return vmm.Features{Snapshots: true, Pause: true, Accel: vmm.AccelKVM, Transport: vmm.TransportHybridVsock}
}

// Version returns the version of the firecracker binary ("1.16.1"), as
// `firecracker --version` prints it. It is cached until the binary file
// changes. A snapshot restores only on the version that wrote it.
func (d *Driver) Version(ctx context.Context) (string, error) {
	if err := fchost.CheckBinary(d.opts.Bin); err != nil {
		return "", err
	}
	path, err := exec.LookPath(d.opts.Bin)
	if err != nil {
		return "", fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
	}
	d.verMu.Lock()
	defer d.verMu.Unlock()
	c := d.ver
	if c.version != "" && c.path == path && c.size == fi.Size() && c.modTime.Equal(fi.ModTime()) {
		return c.version, nil
	}
	v, err := fchost.Probe(ctx, path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
	}
	d.ver = cachedVersion{path: path, size: fi.Size(), modTime: fi.ModTime(), version: v}
	return v, nil
}

// Start boots spec: it starts firecracker, configures logger, metrics,
// machine, boot source, drives, network interfaces and vsock, and sends
// InstanceStart last. On error it leaves no process or socket behind.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := d.preflight(spec); err != nil {
		return nil, err
	}
	m, err := d.launch(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := m.boot(ctx); err != nil {
		m.abort()
		return nil, fmt.Errorf("starting vm %s: %w", spec.Name, err)
	}
	d.log.Info("firecracker vm started", "vm", spec.Name, "pid", m.proc.pid, "version", m.version)
	return m, nil
}

// Restore starts a fresh firecracker and loads the snapshot in snapDir
// (written by Machine.Snapshot) into it, with spec's drives, taps and
// vsock socket, and resumes it. spec must have the drive ids and NIC ids
// the snapshot was taken with; their paths and taps may differ. The
// guest's agent connections were reset by the snapshot: DialAgent opens
// new ones. On error it leaves no process or socket behind.
func (d *Driver) Restore(ctx context.Context, spec vmm.Spec, snapDir string) (vmm.Machine, error) {
	if err := d.preflight(spec); err != nil {
		return nil, err
	}
	snapDir, err := checkSnapshot(snapDir)
	if err != nil {
		return nil, fmt.Errorf("restoring vm %s: %w", spec.Name, err)
	}
	m, err := d.launch(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := m.load(ctx, snapDir); err != nil {
		m.abort()
		return nil, fmt.Errorf("restoring vm %s: %w", spec.Name, err)
	}
	d.log.Info("firecracker vm restored", "vm", spec.Name, "pid", m.proc.pid, "snapshot", snapDir)
	return m, nil
}

// checkSnapshot returns snapDir made absolute once both snapshot files
// are in it, so that a wrong directory fails before anything is started.
func checkSnapshot(snapDir string) (string, error) {
	dir, err := snapshotDir(snapDir)
	if err != nil {
		return "", err
	}
	for _, n := range []string{SnapshotStateName, SnapshotMemoryName} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			return "", fmt.Errorf("%s is not a firecracker snapshot: %w", dir, err)
		}
		if !fi.Mode().IsRegular() {
			return "", fmt.Errorf("%s is not a firecracker snapshot: %s is not a regular file", dir, n)
		}
	}
	return dir, nil
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// preflight checks everything it can before anything is created.
func (d *Driver) preflight(spec vmm.Spec) error {
	if err := fchost.CheckBinary(d.opts.Bin); err != nil {
		return err
	}
	if d.opts.JailerBin != "" {
		if err := fchost.CheckJailer(d.opts.JailerBin); err != nil {
			return err
		}
	}
	if err := d.opts.CheckKVM(); err != nil {
		return err
	}
	return validateSpec(spec)
}

func validateSpec(spec vmm.Spec) error {
	switch {
	case spec.Dir == "" || !filepath.IsAbs(spec.Dir):
		return fmt.Errorf("vm directory %q must be an absolute path", spec.Dir)
	case spec.VCPUs < 1 || spec.VCPUs > 32:
		return fmt.Errorf("firecracker supports 1 to 32 vcpus, not %d", spec.VCPUs)
	case spec.MemoryMiB < 1:
		return fmt.Errorf("memory must be at least 1 MiB, not %d", spec.MemoryMiB)
	case spec.Kernel == "":
		return fmt.Errorf("no kernel given")
	}
	// Unix socket paths are limited to 107 bytes.
	if p := filepath.Join(spec.Dir, VsockSocketName) + "_4294967295"; len(p) > 107 {
		return fmt.Errorf("vm directory %s is too long for Unix socket paths (max %d bytes)", spec.Dir, 107-len("/"+VsockSocketName+"_4294967295"))
	}
	for i, dr := range spec.Drives {
		if !idRe.MatchString(dr.ID) {
			return fmt.Errorf("drive id %q: use 1-64 letters, digits, _ or -", dr.ID)
		}
		if dr.Root && i != 0 {
			return fmt.Errorf("root drive %q must be the first drive (Firecracker makes it /dev/vda)", dr.ID)
		}
	}
	for _, n := range spec.NICs {
		if !idRe.MatchString(n.ID) {
			return fmt.Errorf("network interface id %q: use 1-64 letters, digits, _ or -", n.ID)
		}
		if n.Tap == "" {
			return fmt.Errorf("network interface %q has no tap device", n.ID)
		}
	}
	return nil
}

// bootArgsFor returns the boot_args for spec: banger's Firecracker
// parameters first, so that init arguments after a "--" in spec.Cmdline
// stay last.
func bootArgsFor(spec vmm.Spec) string {
	return strings.TrimSpace(bootArgs + " " + spec.Cmdline)
}

// prepareDir creates spec.Dir and the files Firecracker writes to, and
// removes sockets left over by an earlier firecracker of this VM.
func prepareDir(spec vmm.Spec, lay *layout) error {
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return fmt.Errorf("creating vm directory: %w", err)
	}
	if live(lay.apiSock) {
		return fmt.Errorf("a firecracker already serves %s: stop it first", lay.apiSock)
	}
	for _, p := range []string{lay.apiSock, lay.vsock} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("removing stale socket: %w", err)
		}
	}
	for _, p := range []string{lay.log, lay.metrics} {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Base(p), err)
		}
		f.Close()
		if lay.owner != nil {
			if err := os.Chown(p, lay.owner[0], lay.owner[1]); err != nil {
				return fmt.Errorf("giving %s to the jailer user: %w", filepath.Base(p), err)
			}
		}
	}
	return nil
}
