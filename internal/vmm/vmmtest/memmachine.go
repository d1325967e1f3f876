package vmmtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/vmm"
)

// memVM is one machine of a pretend host.
type memVM struct {
	d        *MemDriver // the driver that started it
	spec     vmm.Spec
	pid      int
	guest    MemGuest
	bootedAt time.Time
	ctx      context.Context // done once the machine ended: the agent's ctx
	cancel   context.CancelFunc
	done     chan struct{} // closed once the machine ended

	mu       sync.Mutex // guards the fields below
	restored bool       // started by Restore
	paused   bool
	memory   map[string]string // the pretend guest's memory: what a snapshot keeps
	exit     string            // how it ended; "" while it runs
	conns    []net.Conn        // guest ends of agent connections
}

// MemMachine is a machine of a MemDriver: a vmm.Machine and vmm.Pauser,
// with what a test needs to play the guest. Start and Adopt return one
// (as vmm.Machine); so does MemDriver.Machine.
type MemMachine struct{ vm *memVM }

var (
	_ vmm.Machine = (*MemMachine)(nil)
	_ vmm.Pauser  = (*MemMachine)(nil)
)

// Handle names the machine's pretend pid and its dir.
func (m *MemMachine) Handle() vmm.Handle {
	return vmm.Handle{Driver: m.vm.d.opts.Name, PID: m.vm.pid, Data: map[string]string{"dir": m.vm.spec.Dir}}
}

// Spec returns the spec the machine was started with.
func (m *MemMachine) Spec() vmm.Spec { return m.vm.spec }

// Done is closed once the machine has ended.
func (m *MemMachine) Done() <-chan struct{} { return m.vm.done }

// Paused reports whether the machine is paused.
func (m *MemMachine) Paused() bool {
	m.vm.mu.Lock()
	defer m.vm.mu.Unlock()
	return m.vm.paused
}

// Exit says how the machine ended: "killed", "crashed" or "powered off";
// "" while it runs.
func (m *MemMachine) Exit() string {
	m.vm.mu.Lock()
	defer m.vm.mu.Unlock()
	return m.vm.exit
}

// Crash ends the machine as a VMM that dies does: no shutdown, Done
// closes, agent connections break.
func (m *MemMachine) Crash() { m.vm.end("", "crashed") }

// PowerOff ends the machine as a guest that powers off on its own does.
func (m *MemMachine) PowerOff() { m.vm.end("", "powered off") }

// Kill ends the machine at once. It returns nil, also when it had ended.
func (m *MemMachine) Kill() error {
	m.vm.end(OpKill, "killed")
	return nil
}

// Shutdown asks the guest to power off: a MemGuest that does not ignore
// it, and is not paused, does so at once. Otherwise the machine is killed
// when ctx is done. It returns nil once the machine has ended.
func (m *MemMachine) Shutdown(ctx context.Context) error {
	if m.exited() {
		return nil
	}
	m.vm.d.host.record(Event{Op: OpShutdown, ID: m.vm.spec.ID, PID: m.vm.pid})
	if !m.vm.guest.IgnoreShutdown && !m.Paused() {
		m.vm.end("", "powered off")
		return nil
	}
	select {
	case <-m.vm.done:
		return nil
	case <-ctx.Done():
		return m.Kill()
	}
}

// Pause marks the machine paused.
func (m *MemMachine) Pause(ctx context.Context) error { return m.setPaused(OpPause, true) }

// Resume marks the machine running.
func (m *MemMachine) Resume(ctx context.Context) error { return m.setPaused(OpResume, false) }

func (m *MemMachine) setPaused(op string, paused bool) error {
	m.vm.mu.Lock()
	defer m.vm.mu.Unlock()
	if m.vm.exit != "" {
		return fmt.Errorf("%s vm %s: %w", op, m.vm.spec.Name, vmm.ErrNotRunning)
	}
	m.vm.paused = paused
	m.vm.d.host.record(Event{Op: op, ID: m.vm.spec.ID, PID: m.vm.pid})
	return nil
}

// DialAgent connects to the guest agent, MemOptions.Agent, over a Unix
// socketpair. It retries until ctx is done while the MemGuest's agent is
// not up, and wraps vmm.ErrNotRunning once the machine has ended.
func (m *MemMachine) DialAgent(ctx context.Context) (net.Conn, error) {
	vm := m.vm
	for {
		if m.exited() {
			return nil, fmt.Errorf("dialing agent of vm %s: %w", vm.spec.Name, vmm.ErrNotRunning)
		}
		if !vm.guest.NoAgent && time.Since(vm.bootedAt) >= vm.guest.AgentDelay {
			conn, err := m.connect()
			if conn != nil || err != nil {
				return conn, err
			}
			continue // ended meanwhile
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dialing agent of vm %s: %w", vm.spec.Name, ctx.Err())
		case <-vm.done:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// connect makes one agent connection; nil, nil when the machine ended.
func (m *MemMachine) connect() (net.Conn, error) {
	vm := m.vm
	host, guest, err := socketPair()
	if err != nil {
		return nil, err
	}
	vm.mu.Lock()
	if vm.exit != "" {
		vm.mu.Unlock()
		host.Close()
		guest.Close()
		return nil, nil
	}
	vm.conns = append(vm.conns, guest)
	vm.mu.Unlock()
	vm.d.host.record(Event{Op: OpDialAgent, ID: vm.spec.ID, PID: vm.pid})
	go func() {
		defer guest.Close()
		vm.d.opts.Agent(vm.ctx, m, guest)
	}()
	return host, nil
}

func (m *MemMachine) exited() bool {
	select {
	case <-m.vm.done:
		return true
	default:
		return false
	}
}

// end ends the machine, once: agent connections close, the host forgets
// it, op (unless "") and the exit are recorded, and Done closes. Later
// calls wait for Done.
func (vm *memVM) end(op, how string) {
	vm.mu.Lock()
	if vm.exit != "" {
		vm.mu.Unlock()
		<-vm.done
		return
	}
	vm.exit = how
	conns := vm.conns
	vm.conns = nil
	vm.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	vm.cancel()
	h := vm.d.host
	h.mu.Lock()
	delete(h.vms, vm.pid)
	if op != "" {
		h.events = append(h.events, Event{Op: op, ID: vm.spec.ID, PID: vm.pid})
	}
	h.events = append(h.events, Event{Op: OpExit, ID: vm.spec.ID, PID: vm.pid, Detail: how})
	h.mu.Unlock()
	close(vm.done)
}

// socketPair returns the two ends of a connected Unix stream socketpair:
// buffered like a real transport, unlike net.Pipe.
func socketPair() (net.Conn, net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "vmmtest-agent")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				unix.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("socketpair: %w", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}
