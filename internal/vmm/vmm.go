// Package vmm defines the contract between bangerd and a virtual machine
// monitor. Firecracker and QEMU implement it in sub-packages.
package vmm

import (
	"context"
	"errors"
	"net"
)

// Sentinel errors shared by drivers. Wrap them with %w so callers can use
// errors.Is.
var (
	// ErrNotRunning reports that the VMM process is gone.
	ErrNotRunning = errors.New("vmm not running")
	// ErrUnsupported reports that the driver cannot do what was asked.
	ErrUnsupported = errors.New("not supported by this vmm")
	// ErrUnavailable reports that the VMM cannot run on this host (missing
	// binary, no /dev/kvm, ...). The wrapped message says how to fix it.
	ErrUnavailable = errors.New("vmm unavailable")
	// ErrCIDInUse reports that the host refused Spec.VsockCID because
	// another VM on the host (of any VMM or user) holds it. Start fails
	// with it before the guest runs; retry with another context id.
	ErrCIDInUse = errors.New("vsock context id in use on this host")
	// ErrUnresponsive reports that a running VMM did not answer its
	// control channel in time: the process is stopped or wedged.
	ErrUnresponsive = errors.New("vmm not answering")
)

// Accel is the kind of CPU virtualization a driver uses.
type Accel string

const (
	AccelKVM Accel = "kvm" // hardware virtualization through /dev/kvm
	AccelTCG Accel = "tcg" // QEMU software emulation
)

// AgentTransport names how the host reaches the guest agent.
type AgentTransport string

const (
	TransportVirtioSerial AgentTransport = "virtio-serial" // QEMU chardev socket
	TransportVsock        AgentTransport = "vsock"         // AF_VSOCK (vhost-vsock)
	TransportHybridVsock  AgentTransport = "hybrid-vsock"  // Firecracker's uds + CONNECT
)

// Features describes what a driver can do. Capabilities are data.
type Features struct {
	Snapshots bool `json:"snapshots"`
	Pause     bool `json:"pause"`
	// Layers: drives may be qcow2 files (Drive.Format FormatQCOW2) over
	// a backing chain, so a VM's disk can be a thin layer over its image.
	Layers    bool           `json:"layers"`
	Accel     Accel          `json:"accel"`
	Transport AgentTransport `json:"agent_transport"`
}

// Drive is a block device given to the guest. Drives appear in the guest
// in Spec order: the first is /dev/vda, the second /dev/vdb, and so on.
type Drive struct {
	ID       string `json:"id"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only"`
	Root     bool   `json:"root"`
	// Format is the image format: FormatRaw (also when empty) or
	// FormatQCOW2 (QEMU only; the backing chain is in the file's header).
	Format string `json:"format,omitempty"`
}

// Drive formats.
const (
	FormatRaw   = "raw"
	FormatQCOW2 = "qcow2"
)

// DriveDevice is the guest device of the i-th drive of a Spec (from 0):
// /dev/vda, /dev/vdb, ... /dev/vdz, /dev/vdaa, as Linux names virtio disks.
func DriveDevice(i int) string {
	name := ""
	for i++; i > 0; i = (i - 1) / 26 {
		name = string(rune('a'+(i-1)%26)) + name
	}
	return "/dev/vd" + name
}

// NIC is a network interface backed by a host tap device.
type NIC struct {
	ID  string `json:"id"`
	Tap string `json:"tap"`
	MAC string `json:"mac"`
}

// Spec is everything a driver needs to boot one VM.
type Spec struct {
	ID        string `json:"id"`   // stable VM id
	Name      string `json:"name"` // human name, for logs
	Dir       string `json:"dir"`  // per-VM directory: sockets, pid files, logs
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int    `json:"memory_mib"`
	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd,omitempty"`
	// Cmdline is the kernel command line banger needs (root, agent and
	// network glue). Drivers append what they need themselves (console,
	// clock fixes, virtio_mmio.device=...).
	Cmdline    string  `json:"cmdline"`
	Drives     []Drive `json:"drives"`
	NICs       []NIC   `json:"nics,omitempty"`
	ConsoleLog string  `json:"console_log"` // serial console output goes here
	// ConsoleLogMax caps ConsoleLog and its older half ConsoleLog.1
	// together, in bytes (0: DefaultConsoleLogMax). See ConsoleLog.
	ConsoleLogMax int64 `json:"console_log_max,omitempty"`
	// VsockCID is the guest's vsock context id (3 or more), unique on the
	// host; drivers that reach the agent over AF_VSOCK require it.
	VsockCID uint32 `json:"vsock_cid,omitempty"`
}

// Handle is what the daemon persists about a running VMM so that a new
// daemon can re-adopt it. Drivers own the meaning of Data.
type Handle struct {
	Driver string            `json:"driver"`
	PID    int               `json:"pid"`
	Data   map[string]string `json:"data,omitempty"`
}

// Machine is one running VMM process. Implementations must be safe for
// concurrent use.
type Machine interface {
	// Handle returns what must be persisted to Adopt this machine later.
	Handle() Handle
	// DialAgent opens a byte stream to the guest agent channel. It MUST
	// retry until ctx is done while the guest side is not there yet, and
	// return ErrNotRunning once the VMM process has exited.
	DialAgent(ctx context.Context) (net.Conn, error)
	// Shutdown asks the guest to power off (ACPI power button or
	// Ctrl-Alt-Del) and waits for the VMM to exit. When ctx is done first
	// it kills the VMM. It MUST return nil when the VMM has exited.
	Shutdown(ctx context.Context) error
	// Kill ends the VMM process at once. It MUST return nil when the
	// process is already gone.
	Kill() error
	// Done is closed when the VMM process has exited.
	Done() <-chan struct{}
}

// Driver boots and manages microVMs. Implementations must be safe for
// concurrent use.
type Driver interface {
	Name() string
	Features() Features
	// Start boots spec and returns once the VMM runs the guest. On error
	// it MUST leave no process or socket behind.
	Start(ctx context.Context, spec Spec) (Machine, error)
	// Adopt re-attaches to a VMM started by an earlier daemon. It MUST
	// return an error wrapping ErrNotRunning when the process is gone or
	// is not the one h describes.
	Adopt(ctx context.Context, spec Spec, h Handle) (Machine, error)
}

// Checker is implemented by drivers that can tell, before anything is
// created, whether Start can work on this host. Check MUST return nil
// when it can, else an error wrapping ErrUnavailable that says the fix.
type Checker interface {
	Check(ctx context.Context) error
}

// Pauser is implemented by machines that can pause and resume vCPUs.
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

// Snapshotter is implemented by machines that can snapshot their memory
// and device state into dir. A machine not paused is paused for it and
// resumed after; a paused one stays paused. The disks are not copied:
// the caller freezes them while the machine is paused (DiskFreezer),
// before or after Snapshot. dir must not hold a snapshot already; on
// error nothing Snapshot wrote is left in it.
type Snapshotter interface {
	Snapshot(ctx context.Context, dir string) error
}

// Restorer is implemented by drivers that can start a machine from a
// snapshot written by a Snapshotter of the same driver. spec must have the
// vcpus, memory, drives (in the same order, with the same read-only
// flags) and number of NICs the snapshot was taken with; drive paths and
// formats (a clone's disk is an overlay on the frozen one), taps and MACs
// may differ. The guest keeps the MAC it had until its agent sets the new
// one. The machine runs on return; on error no process is left.
type Restorer interface {
	Restore(ctx context.Context, spec Spec, snapDir string) (Machine, error)
}

// DiskFreezer is implemented by machines that can switch a drive to a
// new overlay while running: from then on the guest writes to overlay
// (a qcow2 file whose backing is the drive's current file, created by
// FreezeDisk) and the current file is no longer written, so it can back
// other VMs.
type DiskFreezer interface {
	FreezeDisk(ctx context.Context, driveID, overlay string) error
}

// Versioner is implemented by drivers that can name the version of the
// VMM they run; a snapshot restores only on the version that wrote it.
type Versioner interface {
	Version(ctx context.Context) (string, error)
}
