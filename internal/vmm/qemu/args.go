package qemu

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"banger/internal/vmm"
)

// Files the driver keeps in a VM's directory (vmm.Spec.Dir).
const (
	qmpSocketName   = "qmp.sock"
	agentSocketName = "agent.sock"
	pidFileName     = "qemu.pid"
	logFileName     = "qemu.log" // QEMU's own stdout and stderr
	// memoryFileName holds the guest RAM of a cold-booted VM (a shared
	// file mapping), so that a snapshot saves only the device state and
	// copies this file. It is as large as the memory the guest touched.
	memoryFileName = "memory"
)

// memoryBackendID names the guest RAM backend. It is the same in every
// form (shared file, private file, anonymous) because migration matches
// RAM blocks by this name: a snapshot restores into any of them.
const memoryBackendID = "mem"

// agentPortName is the virtio-serial port name the guest agent looks for
// (/sys/class/virtio-ports/*/name, or /dev/virtio-ports/<name> with udev).
const agentPortName = "banger.agent"

// maxUnixPath is the longest path a Unix socket address can hold.
const maxUnixPath = 107

// paths are the per-VM files the driver uses.
type paths struct {
	QMP, Agent, PID, Log, Memory string
}

func pathsFor(dir string) paths {
	return paths{
		QMP:    filepath.Join(dir, qmpSocketName),
		Agent:  filepath.Join(dir, agentSocketName),
		PID:    filepath.Join(dir, pidFileName),
		Log:    filepath.Join(dir, logFileName),
		Memory: filepath.Join(dir, memoryFileName),
	}
}

// launch is everything that shapes the QEMU command line.
type launch struct {
	spec      vmm.Spec
	accel     vmm.Accel
	transport vmm.AgentTransport
	tscKHz    int // 0: do not pass tsc_early_khz
	paths     paths
	runAs     string // -runas user; empty: QEMU stays root
	sandbox   bool   // -sandbox on,...
	mem       memory
	incoming  bool // -incoming defer -S: wait for migrate-incoming, then cont
}

// memory is how a launch backs guest RAM.
type memory struct {
	path   string // file that backs the RAM; "" for anonymous RAM
	shared bool   // share=on: guest writes reach path; else a private COW mapping
}

// validateSpec rejects specs QEMU would fail on late or misread.
func validateSpec(s vmm.Spec) error {
	var errs []error
	if s.Dir == "" {
		errs = append(errs, errors.New("dir is empty"))
	}
	if s.Kernel == "" {
		errs = append(errs, errors.New("kernel is empty"))
	}
	if s.ConsoleLog == "" {
		errs = append(errs, errors.New("console log path is empty"))
	}
	if s.VCPUs < 1 {
		errs = append(errs, fmt.Errorf("vcpus %d: must be at least 1", s.VCPUs))
	}
	if s.MemoryMiB < 16 {
		errs = append(errs, fmt.Errorf("memory %d MiB: must be at least 16", s.MemoryMiB))
	}
	for _, n := range s.NICs {
		if n.Tap == "" || strings.ContainsAny(n.Tap, ", ") {
			errs = append(errs, fmt.Errorf("nic %q: bad tap name %q", n.ID, n.Tap))
		}
		if n.MAC != "" && strings.ContainsAny(n.MAC, ", ") {
			errs = append(errs, fmt.Errorf("nic %q: bad mac %q", n.ID, n.MAC))
		}
	}
	for _, d := range s.Drives {
		if d.Path == "" {
			errs = append(errs, fmt.Errorf("drive %q: path is empty", d.ID))
		}
		if d.Format != "" && d.Format != vmm.FormatRaw && d.Format != vmm.FormatQCOW2 {
			errs = append(errs, fmt.Errorf("drive %q: format %q: use raw or qcow2", d.ID, d.Format))
		}
	}
	if p := pathsFor(s.Dir); len(p.Agent) > maxUnixPath || len(p.QMP) > maxUnixPath {
		errs = append(errs, fmt.Errorf("dir %q is too long for a unix socket path", s.Dir))
	}
	return errors.Join(errs...)
}

// opt escapes a value for QEMU's key=value,... option syntax, where a
// literal comma is written as two.
func opt(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// qmpArg is the -qmp argument of a VM whose QMP socket is at path; Adopt
// finds it on the command line of the process it adopts.
func qmpArg(path string) string { return "unix:" + opt(path) + ",server=on,wait=off" }

// args builds QEMU's argument list (without argv[0]).
func (l launch) args() []string {
	s := l.spec
	cpu := "max"
	if l.accel == vmm.AccelKVM {
		cpu = "host"
	}
	a := []string{
		// ACPI stays on: Debian's cloud kernel finds virtio-mmio devices
		// only through ACPI (DESIGN.md §2).
		"-M", "microvm,accel=" + string(l.accel) + ",acpi=on,memory-backend=" + memoryBackendID,
		"-cpu", cpu,
		"-smp", strconv.Itoa(s.VCPUs),
		"-m", strconv.Itoa(s.MemoryMiB) + "M",
		"-object", l.memObject(),
		"-nodefaults", "-no-user-config", "-nographic",
		// A guest reboot or panic (panic=1) ends QEMU instead of looping.
		"-no-reboot",
		"-kernel", s.Kernel,
	}
	if s.Initrd != "" {
		a = append(a, "-initrd", s.Initrd)
	}
	a = append(a, "-append", l.cmdline())
	a = append(a,
		// The guest's console, appended to a file the driver keeps
		// under its cap (vmm.TrimConsoleFile).
		"-chardev", "file,id=console,append=on,path="+opt(s.ConsoleLog),
		"-serial", "chardev:console",
		"-qmp", qmpArg(l.paths.QMP),
	)
	for _, f := range driveFDs(s) {
		a = append(a, "-add-fd", "fd="+strconv.Itoa(f.fd)+",set="+strconv.Itoa(f.set)+",opaque="+opt(f.drive.ID))
	}
	for i, d := range s.Drives {
		id := "vd" + strconv.Itoa(i)
		format := d.Format
		if format == "" {
			format = vmm.FormatRaw
		}
		// No image locking: the two descriptions of the file in its fd
		// set would hold conflicting locks on reopen; the daemon gives a
		// writable disk to one VM only.
		drive := "id=" + id + ",file=/dev/fdset/" + strconv.Itoa(i+1) + ",file.locking=off,format=" + format + ",if=none"
		if d.ReadOnly {
			drive += ",readonly=on"
		} else {
			drive += ",discard=unmap"
		}
		a = append(a, "-drive", drive, "-device", "virtio-blk-device,drive="+id)
	}
	for i, n := range s.NICs {
		id := "net" + strconv.Itoa(i)
		dev := "virtio-net-device,netdev=" + id
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		a = append(a,
			"-netdev", "tap,id="+id+",ifname="+n.Tap+",script=no,downscript=no",
			"-device", dev)
	}
	a = append(a, l.agentArgs()...)
	if l.incoming {
		// -S too: the guest runs only once the driver says cont, after
		// the state has been loaded.
		a = append(a, "-incoming", "defer", "-S")
	}
	return append(a, l.confineArgs()...)
}

// driveFD is one descriptor of a drive's file that QEMU inherits.
type driveFD struct {
	drive    vmm.Drive
	set      int  // QEMU fd set: drive i is set i+1, opened as /dev/fdset/<set>
	fd       int  // descriptor number in QEMU (3 and up: cmd.ExtraFiles order)
	readOnly bool // opened O_RDONLY, else O_RDWR
}

// driveFDs are the descriptors the driver opens for the drives and QEMU
// inherits: each drive is an fd set with a read-only descriptor and, for
// a writable drive, a read-write one. QEMU reopens a drive read-only when
// a migration completes (it inactivates the disks) and read-write on
// cont; after -runas it may not open the path itself, so it takes a
// descriptor of the right mode from the set.
func driveFDs(s vmm.Spec) []driveFD {
	var fds []driveFD
	for i, d := range s.Drives {
		fds = append(fds, driveFD{drive: d, set: i + 1, fd: 3 + len(fds), readOnly: true})
		if !d.ReadOnly {
			fds = append(fds, driveFD{drive: d, set: i + 1, fd: 3 + len(fds)})
		}
	}
	return fds
}

// memObject is the -object of the guest RAM backend. The file is not
// preallocated: QEMU sizes it with ftruncate, so it stays sparse. A
// shared file's pages are dropped when QEMU exits normally
// (discard-data=on), so a stopped VM's file costs no disk; a private
// mapping never writes its file (snapshot memory restored by clones).
func (l launch) memObject() string {
	size := ",size=" + strconv.Itoa(l.spec.MemoryMiB) + "M"
	if l.mem.path == "" {
		return "memory-backend-ram,id=" + memoryBackendID + size
	}
	o := "memory-backend-file,id=" + memoryBackendID + size + ",mem-path=" + opt(l.mem.path)
	if l.mem.shared {
		return o + ",share=on,discard-data=on"
	}
	return o + ",share=off"
}

// confineArgs drop QEMU's privileges once it has opened everything it
// needs as root, and install its seccomp filter (QEMU 7.2 syntax; 9.1+
// also has -run-with user=). The filter denies obsolete syscalls, process
// spawning (so no exec: migration; use fd: migration) and resource
// control. elevateprivileges must stay "allow" with -runas: QEMU installs
// the filter first and calls setuid after, which "deny" would kill (tried
// here: "Bad system call"); once QEMU runs as a user with no saved root
// uid, set*uid cannot give root back anyway.
func (l launch) confineArgs() []string {
	var a []string
	if l.sandbox {
		elevate := "deny"
		if l.runAs != "" {
			elevate = "allow"
		}
		a = append(a, "-sandbox", "on,obsolete=deny,elevateprivileges="+elevate+",spawn=deny,resourcecontrol=deny")
	}
	if l.runAs != "" {
		a = append(a, "-runas", l.runAs)
	}
	return a
}

func (l launch) agentArgs() []string {
	if l.transport == vmm.TransportVsock {
		return []string{"-device", "vhost-vsock-device,guest-cid=" + strconv.FormatUint(uint64(l.spec.VsockCID), 10)}
	}
	return []string{
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=" + opt(l.paths.Agent) + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=" + agentPortName,
	}
}

// cmdline is the kernel command line: the driver's own parameters first,
// then the spec's, so that the spec can override them and so that init
// arguments after "--" in the spec stay last.
func (l launch) cmdline() string {
	var p []string
	if !hasParam(l.spec.Cmdline, "console") {
		p = append(p, "console=ttyS0")
	}
	if !hasParam(l.spec.Cmdline, "panic") {
		p = append(p, "panic=1") // with -no-reboot a panicked guest ends QEMU
	}
	if l.accel == vmm.AccelTCG && l.tscKHz > 0 {
		// Skip the early TSC calibration against the PIT, which hangs
		// about one TCG boot in four on microvm (DESIGN.md §2).
		p = append(p, "tsc_early_khz="+strconv.Itoa(l.tscKHz), "tsc=reliable")
	}
	if c := strings.TrimSpace(l.spec.Cmdline); c != "" {
		p = append(p, c)
	}
	return strings.Join(p, " ")
}

// hasParam reports whether the kernel command line sets name (before any
// "--" that starts init's arguments).
func hasParam(cmdline, name string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == "--" {
			return false
		}
		k, _, _ := strings.Cut(f, "=")
		if k == name {
			return true
		}
	}
	return false
}
