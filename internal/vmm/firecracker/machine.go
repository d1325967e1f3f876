package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guest"
	"banger/internal/vmm"
)

// Keys of vmm.Handle.Data.
const (
	dataAPISock    = "api_sock"    // host path of the API socket
	dataCmdlineArg = "cmdline_arg" // an argument unique to this VM's process
	dataVsock      = "vsock_uds"   // host path of the vsock socket
	dataVersion    = "version"
	dataJailRoot   = "jail_root" // chroot of a jailed firecracker
)

// killWait bounds the wait for exit after SIGKILL.
const killWait = 5 * time.Second

// machine is one firecracker process. It implements vmm.Machine,
// vmm.Pauser and vmm.Snapshotter, not vmm.DiskFreezer: Firecracker
// cannot switch a drive to an overlay while running, so the daemon
// copies (or reflinks) the raw disk while the VM is paused.
type machine struct {
	log        *slog.Logger
	spec       vmm.Spec
	lay        *layout
	client     *Client
	proc       *process
	version    string
	createdDir bool          // spec.Dir was created by Start; removed on abort if empty
	done       chan struct{} // closed after exit, once watchExit cleaned up

	mu     sync.Mutex // serializes state changes (pause, resume, snapshot)
	paused bool       // guarded by mu
}

var (
	_ vmm.Machine     = (*machine)(nil)
	_ vmm.Pauser      = (*machine)(nil)
	_ vmm.Snapshotter = (*machine)(nil)
)

// boot configures the VM and starts it; InstanceStart is always last.
func (m *machine) boot(ctx context.Context) error {
	c, spec := m.client, m.spec
	if err := c.PutMachineConfig(ctx, MachineConfig{VCPUCount: spec.VCPUs, MemSizeMiB: spec.MemoryMiB}); err != nil {
		return err
	}
	bs := BootSource{BootArgs: bootArgsFor(spec)}
	var err error
	if bs.KernelImagePath, err = m.lay.guestPath(spec.Kernel); err != nil {
		return err
	}
	if spec.Initrd != "" {
		if bs.InitrdPath, err = m.lay.guestPath(spec.Initrd); err != nil {
			return err
		}
	}
	if err := c.PutBootSource(ctx, bs); err != nil {
		return err
	}
	for _, dr := range spec.Drives {
		p, err := m.lay.drivePath(dr.ID, dr.Path)
		if err != nil {
			return err
		}
		if err := c.PutDrive(ctx, DriveConfig{DriveID: dr.ID, PathOnHost: p, IsRootDevice: dr.Root, IsReadOnly: dr.ReadOnly}); err != nil {
			return err
		}
	}
	for _, n := range spec.NICs {
		if err := c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: n.ID, HostDevName: n.Tap, GuestMAC: n.MAC}); err != nil {
			return err
		}
	}
	if err := c.PutVsock(ctx, VsockConfig{GuestCID: cid(spec), UDSPath: m.lay.vsockArg}); err != nil {
		return err
	}
	return c.Action(ctx, ActionInstanceStart)
}

// load restores the snapshot in dir and resumes the VM. The drives are
// linked first under the names the snapshot recorded (driveName), so
// firecracker reopens this spec's disks wherever they are.
func (m *machine) load(ctx context.Context, dir string) error {
	for _, dr := range m.spec.Drives {
		if _, err := m.lay.drivePath(dr.ID, dr.Path); err != nil {
			return err
		}
	}
	state, err := m.lay.guestPath(filepath.Join(dir, SnapshotStateName))
	if err != nil {
		return err
	}
	mem, err := m.lay.guestPath(filepath.Join(dir, SnapshotMemoryName))
	if err != nil {
		return err
	}
	req := SnapshotLoad{
		SnapshotPath:  state,
		MemBackend:    MemoryBackend{BackendType: "File", BackendPath: mem},
		ResumeVM:      true,
		VsockOverride: &VsockOverride{UDSPath: m.lay.vsockArg},
	}
	for _, n := range m.spec.NICs {
		req.NetworkOverrides = append(req.NetworkOverrides, NetworkOverride{IfaceID: n.ID, HostDevName: n.Tap})
	}
	return m.client.LoadSnapshot(ctx, req)
}

func cid(spec vmm.Spec) uint32 {
	if spec.VsockCID >= 3 {
		return spec.VsockCID
	}
	return defaultCID
}

// abort kills the process of a failed Start and removes what Start made.
func (m *machine) abort() {
	if m.proc != nil {
		if err := m.Kill(); err != nil {
			m.log.Warn("killing firecracker after failed start", "vm", m.spec.Name, "err", err)
		}
	}
	m.removeFiles()
}

// removeFiles removes the sockets, log and metrics files of this machine,
// and spec.Dir when Start created it and it is empty.
func (m *machine) removeFiles() {
	for _, p := range []string{m.lay.apiSock, m.lay.vsock, m.lay.log, m.lay.metrics} {
		_ = os.Remove(p)
	}
	m.removeDriveLinks()
	m.lay.cleanup()
	if m.createdDir {
		_ = os.Remove(m.spec.Dir) // fails, harmlessly, unless empty
	}
}

// removeDriveLinks removes the drive symlinks symlinkDrive made in the
// VM directory (a jail's links go with the jail). Only symlinks are
// removed: a file of that name is not ours.
func (m *machine) removeDriveLinks() {
	if m.lay.jailRoot != "" {
		return
	}
	for _, dr := range m.spec.Drives {
		p := filepath.Join(m.spec.Dir, driveName(dr.ID))
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			_ = os.Remove(p)
		}
	}
}

// watchExit starts the goroutine that, once firecracker has exited,
// removes its sockets (and the jail with its links) and closes m.done,
// and the one that keeps the console log under its cap meanwhile.
func (m *machine) watchExit() {
	m.done = make(chan struct{})
	consolePath := m.spec.ConsoleLog
	if consolePath == "" {
		consolePath = filepath.Join(m.spec.Dir, "console.log")
	}
	// Firecracker writes the console to its stdout, a file it keeps:
	// trim it from here while this daemon runs.
	go vmm.TrimConsoleFile(consolePath, m.spec.ConsoleLogMax, m.proc.done)
	go func() {
		<-m.proc.done
		for _, p := range []string{m.lay.apiSock, m.lay.vsock} {
			_ = os.Remove(p)
		}
		m.removeDriveLinks()
		m.lay.cleanup()
		close(m.done)
	}()
}

// Handle returns the PID and socket paths Adopt needs.
func (m *machine) Handle() vmm.Handle {
	return vmm.Handle{Driver: Name, PID: m.proc.pid, Data: map[string]string{
		dataAPISock:    m.lay.apiSock,
		dataCmdlineArg: m.lay.cmdlineArg,
		dataVsock:      m.lay.vsock,
		dataVersion:    m.version,
		dataJailRoot:   m.lay.jailRoot,
	}}
}

// Done is closed when the firecracker process has exited and its sockets
// are removed.
func (m *machine) Done() <-chan struct{} { return m.done }

// Kill sends SIGKILL to firecracker and waits for it to exit.
func (m *machine) Kill() error {
	if err := m.proc.kill(killWait); err != nil {
		return err
	}
	<-m.done
	return nil
}

// DialAgent connects to the guest agent's vsock port through the hybrid
// vsock socket, retrying until ctx is done or firecracker exits.
func (m *machine) DialAgent(ctx context.Context) (net.Conn, error) {
	if m.proc.exited() {
		return nil, fmt.Errorf("dialing agent of vm %s: %w", m.spec.Name, vmm.ErrNotRunning)
	}
	conn, err := dialVsock(ctx, m.lay.vsock, guest.AgentPort, m.proc.done)
	if errors.Is(err, errStopped) {
		return nil, fmt.Errorf("dialing agent of vm %s: %w", m.spec.Name, vmm.ErrNotRunning)
	}
	return conn, err
}

// Shutdown sends Ctrl-Alt-Del (the guest reboots, and reboot=k makes
// firecracker exit) and waits for the exit; when ctx is done first it
// kills firecracker. It returns nil once firecracker has exited.
func (m *machine) Shutdown(ctx context.Context) error {
	if m.proc.exited() {
		return nil
	}
	m.mu.Lock()
	paused := m.paused
	m.mu.Unlock()
	if paused {
		// A paused guest cannot react to Ctrl-Alt-Del.
		if err := m.Resume(ctx); err != nil {
			m.log.Warn("resuming before shutdown", "vm", m.spec.Name, "err", err)
		}
	}
	if err := m.client.Action(ctx, ActionSendCtrlAltDel); err != nil && !m.proc.exited() {
		m.log.Warn("sending Ctrl-Alt-Del, killing instead", "vm", m.spec.Name, "err", err)
		return m.Kill()
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		m.log.Warn("guest did not power off in time, killing firecracker", "vm", m.spec.Name)
		return m.Kill()
	}
}

// Pause pauses the vCPUs.
func (m *machine) Pause(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.client.PatchVMState(ctx, "Paused"); err != nil {
		return fmt.Errorf("pausing vm %s: %w", m.spec.Name, err)
	}
	m.paused = true
	return nil
}

// Resume resumes paused vCPUs.
func (m *machine) Resume(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.client.PatchVMState(ctx, "Resumed"); err != nil {
		return fmt.Errorf("resuming vm %s: %w", m.spec.Name, err)
	}
	m.paused = false
	return nil
}

// Snapshot writes a full snapshot (vmstate and memory) into dir, which
// must exist. A running VM is paused for the snapshot and resumed after;
// a paused VM stays paused. Firecracker resets the hybrid vsock when it
// snapshots: agent connections open before are closed, and DialAgent
// makes new ones. On error nothing of the snapshot is left in dir (or
// in the jail).
func (m *machine) Snapshot(ctx context.Context, dir string) error {
	dir, err := snapshotDir(dir)
	if err != nil {
		return fmt.Errorf("snapshotting vm %s: %w", m.spec.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc.exited() {
		return fmt.Errorf("snapshotting vm %s: %w", m.spec.Name, vmm.ErrNotRunning)
	}
	// Where firecracker writes, as it sees it and on the host. A jailed
	// firecracker writes inside its root; the files are moved to dir after.
	state, mem := filepath.Join(dir, SnapshotStateName), filepath.Join(dir, SnapshotMemoryName)
	written := []string{state, mem}
	if root := m.lay.jailRoot; root != "" {
		state, mem = "/"+SnapshotStateName, "/"+SnapshotMemoryName
		written = append(written, filepath.Join(root, SnapshotStateName), filepath.Join(root, SnapshotMemoryName))
	}
	wasPaused := m.paused
	if !wasPaused {
		if err := m.client.PatchVMState(ctx, "Paused"); err != nil {
			return fmt.Errorf("pausing vm %s for snapshot: %w", m.spec.Name, err)
		}
	}
	err = m.client.CreateSnapshot(ctx, SnapshotCreate{SnapshotPath: state, MemFilePath: mem, SnapshotType: "Full"})
	if !wasPaused {
		// Resume even when the snapshot failed: the VM must not stay
		// paused because a snapshot could not be written.
		if rerr := m.client.PatchVMState(ctx, "Resumed"); rerr != nil {
			m.paused = true // it stays paused: Resume or Shutdown can retry
			if err == nil {
				err = fmt.Errorf("resuming after snapshot: %w", rerr)
			} else {
				m.log.Warn("resuming after failed snapshot", "vm", m.spec.Name, "err", rerr)
			}
		}
	}
	if err == nil && m.lay.jailRoot != "" {
		err = moveOut(m.lay.jailRoot, dir, SnapshotStateName, SnapshotMemoryName)
	}
	if err != nil {
		for _, p := range written {
			_ = os.Remove(p)
		}
		return fmt.Errorf("snapshotting vm %s: %w", m.spec.Name, err)
	}
	return nil
}

// snapshotDir returns dir made absolute (firecracker runs in the VM
// directory) once it is known to be an existing directory.
func snapshotDir(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("no snapshot directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("snapshot directory: %w: create it first", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("snapshot directory %s is not a directory", abs)
	}
	return abs, nil
}

// moveOut moves files from a jail root into dir: a rename, or a copy
// when dir is on another filesystem.
func moveOut(root, dir string, names ...string) error {
	for _, n := range names {
		src, dst := filepath.Join(root, n), filepath.Join(dir, n)
		err := os.Rename(src, dst)
		if errors.Is(err, unix.EXDEV) {
			err = copyFile(src, dst)
		}
		if err != nil {
			return fmt.Errorf("moving snapshot out of the jail: %w", err)
		}
	}
	return nil
}

// copyFile copies src to dst, synced, and removes src. A partial dst is
// removed.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(dst)
		return err
	}
	return os.Remove(src)
}

// Adopt re-attaches to a firecracker started by an earlier daemon. The
// process must still run with the API socket of h on its command line,
// and must answer GET /.
func (d *Driver) Adopt(ctx context.Context, spec vmm.Spec, h vmm.Handle) (vmm.Machine, error) {
	if h.Driver != Name {
		return nil, fmt.Errorf("handle of driver %q, not %s: %w", h.Driver, Name, vmm.ErrNotRunning)
	}
	apiSock, arg := h.Data[dataAPISock], h.Data[dataCmdlineArg]
	if apiSock == "" || arg == "" {
		return nil, fmt.Errorf("handle has no api socket: %w", vmm.ErrNotRunning)
	}
	p, err := adoptProcess(h.PID, arg)
	if err != nil {
		return nil, fmt.Errorf("adopting vm %s: %w", spec.Name, err)
	}
	lay := plainLayout(spec.Dir)
	if root := h.Data[dataJailRoot]; root != "" {
		lay = jailLayout(spec, root, arg, d.opts.JailerUID, d.opts.JailerGID)
	}
	lay.apiSock, lay.cmdlineArg = apiSock, arg
	if v := h.Data[dataVsock]; v != "" {
		lay.vsock = v
	}
	m := &machine{log: d.log, spec: spec, lay: lay, client: NewClient(apiSock), proc: p, version: h.Data[dataVersion]}
	info, err := m.client.Instance(ctx)
	if err != nil {
		p.stopWatching()
		return nil, fmt.Errorf("adopting vm %s: api of pid %d: %w", spec.Name, h.PID, err)
	}
	m.paused = info.State == "Paused"
	m.watchExit()
	d.log.Info("adopted firecracker vm", "vm", spec.Name, "pid", h.PID, "state", info.State)
	return m, nil
}
