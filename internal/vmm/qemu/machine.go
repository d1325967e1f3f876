package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/atomicfile"
	"banger/internal/guest"
	"banger/internal/vmm"
)

// Handle.Data keys.
const (
	dataQMP       = "qmp"
	dataAgent     = "agent"
	dataTransport = "transport"
	dataAccel     = "accel"
	dataMemory    = "memory" // the shared guest RAM file; absent when private
)

// killWait bounds how long Kill waits for the process to go after SIGKILL.
const killWait = 10 * time.Second

// Machine is one running QEMU process, started by Start or re-attached by
// Adopt. It is safe for concurrent use.
type Machine struct {
	drv       *Driver
	log       *slog.Logger
	spec      vmm.Spec
	paths     paths
	pid       int
	accel     vmm.Accel
	transport vmm.AgentTransport
	// memFile is the guest RAM file when it is mapped shared (cold
	// boot): a snapshot copies it and leaves the RAM out of the state.
	// Empty when the RAM is private (restored): a snapshot streams it.
	memFile string
	done    chan struct{} // closed once the process has exited
	status  string        // how the process ended; set before done closes

	pidMu sync.Mutex // guards pidfd, which is -1 once the process is reaped
	pidfd int

	qmpMu sync.Mutex // guards qmp; held while (re)dialing
	qmp   *qmpClient

	// opMu serializes snapshots and disk freezes: QEMU runs one
	// migration at a time, and a freeze must not land inside one.
	opMu sync.Mutex
	// drives are the spec's drives as QEMU uses them now: FreezeDisk
	// moves a drive to its overlay. Guarded by opMu.
	drives []vmm.Drive
}

var (
	_ vmm.Machine     = (*Machine)(nil)
	_ vmm.Pauser      = (*Machine)(nil)
	_ vmm.Snapshotter = (*Machine)(nil)
	_ vmm.DiskFreezer = (*Machine)(nil)
)

// newMachine watches the process behind pidfd. When cmd is non-nil the
// process is our child and is reaped with Wait; otherwise (adopted) its
// exit is seen through the pidfd.
func newMachine(d *Driver, spec vmm.Spec, pid, pidfd int, cmd *exec.Cmd) *Machine {
	m := &Machine{
		drv:    d,
		log:    d.log.With("vm", spec.Name, "pid", pid),
		spec:   spec,
		paths:  pathsFor(spec.Dir),
		pid:    pid,
		pidfd:  pidfd,
		done:   make(chan struct{}),
		drives: slices.Clone(spec.Drives),
	}
	go m.watch(cmd)
	// QEMU appends the console to a file it keeps open: trim it from
	// here while this daemon runs.
	go vmm.TrimConsoleFile(spec.ConsoleLog, spec.ConsoleLogMax, m.done)
	return m
}

func (m *Machine) watch(cmd *exec.Cmd) {
	var err error
	if cmd != nil {
		err = cmd.Wait()
	} else {
		err = waitPidfd(m.pidfd)
	}
	m.pidMu.Lock()
	unix.Close(m.pidfd)
	m.pidfd = -1
	m.pidMu.Unlock()

	m.qmpMu.Lock()
	if m.qmp != nil {
		m.qmp.close()
	}
	m.qmpMu.Unlock()
	// QEMU leaves its server sockets behind when killed.
	os.Remove(m.paths.QMP)
	os.Remove(m.paths.Agent)
	os.Remove(m.paths.PID)
	m.status = exitStatus(err)
	if cmd == nil {
		m.status = "exited; status unknown for an adopted process"
	}
	m.log.Info("qemu exited", "status", m.status)
	close(m.done)
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Handle returns what a later daemon needs to Adopt this machine.
func (m *Machine) Handle() vmm.Handle {
	return vmm.Handle{
		Driver: driverName,
		PID:    m.pid,
		Data: map[string]string{
			dataQMP:       m.paths.QMP,
			dataAgent:     m.paths.Agent,
			dataTransport: string(m.transport),
			dataAccel:     string(m.accel),
			dataMemory:    m.memFile,
		},
	}
}

// Done is closed when the QEMU process has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

func (m *Machine) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL to QEMU and waits for it to go. It returns nil when
// the process is already gone.
func (m *Machine) Kill() error {
	m.pidMu.Lock()
	var err error
	if m.pidfd >= 0 {
		err = unix.PidfdSendSignal(m.pidfd, unix.SIGKILL, nil, 0)
	}
	m.pidMu.Unlock()
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("killing qemu pid %d: %w", m.pid, err)
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("qemu pid %d still running %s after SIGKILL", m.pid, killWait)
	}
}

// powerButtonEvery is how often Shutdown presses the power button again:
// a guest still booting may miss the first press.
const powerButtonEvery = 3 * time.Second

// Shutdown presses the ACPI power button (QMP system_powerdown), again
// every few seconds, and waits for QEMU to exit; the guest may ignore the
// button. When ctx is done first, it kills QEMU. It returns nil once QEMU
// has exited.
func (m *Machine) Shutdown(ctx context.Context) error {
	tick := time.NewTicker(powerButtonEvery)
	defer tick.Stop()
	for {
		if m.exited() {
			return nil
		}
		if _, err := m.execute(ctx, "system_powerdown", nil); err != nil {
			m.log.Debug("acpi power-off request", "err", err)
		}
		select {
		case <-m.done:
			return nil
		case <-tick.C:
		case <-ctx.Done():
			m.log.Info("guest did not power off in time; killing qemu")
			return m.Kill()
		}
	}
}

// Pause stops the guest's vCPUs (QMP stop).
func (m *Machine) Pause(ctx context.Context) error {
	_, err := m.execute(ctx, "stop", nil)
	return err
}

// Resume restarts the guest's vCPUs (QMP cont).
func (m *Machine) Resume(ctx context.Context) error {
	_, err := m.execute(ctx, "cont", nil)
	return err
}

// execute runs a QMP command, redialing QMP once if the connection broke.
func (m *Machine) execute(ctx context.Context, cmd string, args any) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		c, err := m.qmpClient(ctx)
		if err != nil {
			return nil, err
		}
		ret, err := c.execute(ctx, cmd, args)
		if err == nil || !errors.Is(err, errQMPClosed) || attempt > 0 {
			return ret, m.notRunning(err)
		}
	}
}

// qmpClient returns the open QMP connection, dialing a new one if needed.
func (m *Machine) qmpClient(ctx context.Context) (*qmpClient, error) {
	m.qmpMu.Lock()
	defer m.qmpMu.Unlock()
	if m.exited() {
		return nil, fmt.Errorf("qemu pid %d: %w", m.pid, vmm.ErrNotRunning)
	}
	if m.qmp != nil && !m.qmp.broken() {
		return m.qmp, nil
	}
	c, err := dialQMP(ctx, m.paths.QMP)
	if err != nil {
		return nil, m.notRunning(fmt.Errorf("connecting to qmp: %w", err))
	}
	m.qmp = c
	return c, nil
}

// notRunning adds vmm.ErrNotRunning to err when QEMU has exited.
func (m *Machine) notRunning(err error) error {
	if err == nil || !m.exited() || errors.Is(err, vmm.ErrNotRunning) {
		return err
	}
	return fmt.Errorf("%w (%w)", err, vmm.ErrNotRunning)
}

// waitQMP dials QMP until it answers, QEMU exits or ctx is done.
func (m *Machine) waitQMP(ctx context.Context) error {
	delay := 5 * time.Millisecond
	for {
		_, err := m.qmpClient(ctx)
		if err == nil {
			return nil
		}
		if m.exited() {
			<-m.done
			tail := vmm.LogTail(m.paths.Log, 20)
			if cidRefused(tail) {
				return fmt.Errorf("vsock cid %d: %w\n%s", m.spec.VsockCID, vmm.ErrCIDInUse, tail)
			}
			return fmt.Errorf("qemu exited during start (%s): %w\n%s", m.status, vmm.ErrNotRunning, tail)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for qmp: %w (last error: %v)", ctx.Err(), err)
		case <-m.done:
		case <-time.After(delay):
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// DialAgent opens a stream to the guest agent channel. For virtio-serial
// that is QEMU's chardev socket: it accepts one client at a time, and
// bytes sent before the guest opens its port wait in QEMU. It retries
// until ctx is done and wraps vmm.ErrNotRunning once QEMU has exited.
func (m *Machine) DialAgent(ctx context.Context) (net.Conn, error) {
	delay := 10 * time.Millisecond
	for {
		if m.exited() {
			return nil, fmt.Errorf("dialing agent of vm %s: %w", m.spec.Name, vmm.ErrNotRunning)
		}
		conn, err := m.dialAgentOnce(ctx)
		if err == nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dialing agent of vm %s: %w (last error: %v)", m.spec.Name, ctx.Err(), err)
		case <-m.done:
		case <-time.After(delay):
		}
		delay = min(delay*2, 250*time.Millisecond)
	}
}

func (m *Machine) dialAgentOnce(ctx context.Context) (net.Conn, error) {
	if m.transport == vmm.TransportVsock {
		return dialVsock(ctx, m.spec.VsockCID, guest.AgentPort)
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", m.paths.Agent)
}

// writePID records QEMU's PID in the VM directory for people and scripts;
// the daemon persists Handle instead.
func (m *Machine) writePID() error {
	return atomicfile.WriteFile(m.paths.PID, []byte(strconv.Itoa(m.pid)+"\n"), 0o600)
}
