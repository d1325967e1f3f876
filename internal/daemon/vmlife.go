package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"banger/internal/api"
	"banger/internal/crashpoint"
	"banger/internal/guest"
	"banger/internal/kernel"
	"banger/internal/store"
	"banger/internal/vmm"
)

// start boots a VM that is not running and waits for its agent.
func (m *vmManager) start(ctx context.Context, name string, readyTimeout time.Duration, p progressFunc) (api.VM, error) {
	unlock, err := m.lock(ctx, name, "vm start")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	v, err := m.get(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	kb, err := m.kernelOf(v)
	if err != nil {
		return api.VM{}, err
	}
	return m.startLocked(ctx, &v, kb, readyTimeout, p)
}

// startLocked boots v (whose lock the caller holds) with kernel kb and
// waits for its agent; v is updated as its record is. A guest that never
// answers is left running and marked failed, so it can be inspected; the
// error says where to look.
func (m *vmManager) startLocked(ctx context.Context, v *store.VM, kb kernel.Bundle, readyTimeout time.Duration, p progressFunc) (api.VM, error) {
	return m.startThen(ctx, v, kb, readyTimeout, p, nil)
}

// startThen is startLocked with ready called once the guest's agent
// answered and before anything of the user's (credentials) goes in:
// warm start snapshots the guest there.
func (m *vmManager) startThen(ctx context.Context, v *store.VM, kb kernel.Bundle, readyTimeout time.Duration, p progressFunc, ready func(*store.VM)) (api.VM, error) {
	if mc := m.machine(v.ID); mc != nil {
		return api.VM{}, api.Errorf(api.Conflict, "vm %q is already running", v.Name)
	}
	first := v.State == api.StateCreating // a create's first start: its own crash points
	driver, ok := m.drivers[v.VMM]
	if !ok {
		return api.VM{}, api.Errorf(api.Unavailable, "vm %q uses vmm %q, which is not available on this host", v.Name, v.VMM).
			WithHint("see banger doctor")
	}
	// A VM made before agent keys existed gets one here, on its seed drive.
	if err := ensureAgentKey(*v); err != nil {
		return api.VM{}, err
	}
	// The forwards listen first: a host port taken fails the start
	// before anything is made. They go again unless a machine runs.
	if err := m.openPorts(ctx, *v); err != nil {
		return api.VM{}, fmt.Errorf("starting vm %q: %w", v.Name, err)
	}
	crashpoint.Hit(startPoint(first, crashpoint.VMCreateAfterPorts, crashpoint.VMStartAfterPorts))
	defer m.closePortsUnlessRunning(v.ID)
	nic, netArg, err := m.net.attach(ctx, v.ID)
	if err != nil {
		return api.VM{}, fmt.Errorf("vm %q network: %w", v.Name, err)
	}
	crashpoint.Hit(startPoint(first, crashpoint.VMCreateAfterTap, crashpoint.VMStartAfterTap))
	spec := m.specFor(*v, kb, nic, netArg)
	// Each boot's log starts fresh, and private: QEMU appends to the file
	// as it finds it rather than creating it 0644.
	vmm.RemoveConsoleLog(spec.ConsoleLog)
	if f, err := openNoFollow(spec.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err == nil {
		f.Chmod(0o600)
		f.Close()
	}
	p("booting "+driver.Name(), 0, 0)
	mc, err := m.bootVMM(ctx, driver, *v, &spec)
	if err != nil {
		m.net.detach(context.WithoutCancel(ctx), v.ID)
		v.State, v.LastError = api.StateFailed, err.Error()
		m.store.UpdateVM(context.WithoutCancel(ctx), *v)
		return api.VM{}, fmt.Errorf("starting vm %q: %w", v.Name, err)
	}
	crashpoint.Hit(startPoint(first, crashpoint.VMCreateAfterVMM, crashpoint.VMStartAfterVMM))
	v.State, v.LastError, v.Spec, v.Handle = api.StateStarting, "", marshal(spec), marshal(mc.Handle())
	v.VsockCID = spec.VsockCID
	if err := m.store.UpdateVM(ctx, *v); err != nil {
		mc.Kill()
		return api.VM{}, err
	}
	m.track(ctx, *v, mc)
	crashpoint.Hit(startPoint(first, crashpoint.VMCreateAfterStarting, crashpoint.VMStartAfterStarting))

	p("waiting for guest agent", 0, 0)
	if readyTimeout <= 0 {
		readyTimeout = defaultReadyTimeout
	}
	if err := m.waitReady(ctx, *v, mc, readyTimeout); err != nil {
		v.State, v.LastError = api.StateFailed, err.Error()
		if ctx.Err() != nil {
			// The caller went away: don't leave a half-started VM running.
			// The machine's watcher detaches it once we let go of the lock.
			mc.Kill()
			<-mc.Done()
			v.State, err = api.StateStopped, ctx.Err()
		}
		m.store.UpdateVM(context.WithoutCancel(ctx), *v)
		return api.VM{}, err
	}
	if ready != nil {
		ready(v)
	}
	m.afterBoot(ctx, v)
	crashpoint.Hit(startPoint(first, crashpoint.VMCreateAfterReady, crashpoint.VMStartAfterReady))
	v.State = api.StateRunning
	if err := m.store.UpdateVM(ctx, *v); err != nil {
		return api.VM{}, err
	}
	return m.view(ctx, *v), nil
}

// afterBoot does what every start does once the guest agent answers:
// the credential sync. Its failures are warnings, kept for vm inspect;
// the VM starts anyway.
func (m *vmManager) afterBoot(ctx context.Context, v *store.VM) {
	synced, warnings := m.syncCredentials(ctx, *v)
	v.Synced = marshal(synced)
	if synced == nil {
		v.Synced = "[]"
	}
	m.mu.Lock()
	m.warnings[v.ID] = warnings
	m.mu.Unlock()
}

// track remembers a running machine and watches for its exit, which it
// records unless a lifecycle change (stop, delete, a restart) already has.
func (m *vmManager) track(ctx context.Context, v store.VM, mc vmm.Machine) {
	ctx = context.WithoutCancel(ctx) // the watch outlives the request
	m.mu.Lock()
	m.machines[v.ID] = mc
	m.mu.Unlock()
	go func() {
		<-mc.Done()
		defer m.locks.lock(v.Name)()
		if !m.forget(v.ID, mc) {
			return
		}
		// The VMM ended on its own (guest power-off, crash): record it.
		m.sessions.VMGone(v.ID, "the vm's guest powered off or its vmm exited")
		m.net.detach(ctx, v.ID)
		if v, err := m.store.VMByName(ctx, v.ID); err == nil && v.State != api.StateStopped {
			if v.State != api.StateFailed {
				v.State = api.StateStopped
			}
			v.Handle = "{}"
			m.store.UpdateVM(ctx, v)
		}
	}()
}

// forget drops the machine of the VM with id and its agent, when mc is
// that machine (nil: whatever is there), and reports whether it did.
func (m *vmManager) forget(id string, mc vmm.Machine) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mc != nil && m.machines[id] != mc {
		return false
	}
	delete(m.machines, id)
	m.ports.Close(id)
	if a := m.agents[id]; a != nil {
		a.Close()
		delete(m.agents, id)
	}
	delete(m.infos, id)
	delete(m.quiets, id)
	return true
}

// waitReady dials the agent until it answers hello, the VMM exits, or the
// timeout passes.
func (m *vmManager) waitReady(ctx context.Context, v store.VM, mc vmm.Machine, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	go func() {
		select {
		case <-mc.Done():
			cancel()
		case <-wctx.Done():
		}
	}()
	_, err := m.agent(wctx, v)
	if err == nil {
		return nil
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case isDone(mc.Done()):
		return api.Errorf(api.Internal, "vm %q stopped while booting: %v", v.Name, err).
			WithHint(fmt.Sprintf("see the console log: banger vm logs %s", v.Name))
	case errors.Is(err, guest.ErrVersionMismatch):
		return api.Errorf(api.Conflict, "vm %q: %v", v.Name, err)
	case errors.Is(err, guest.ErrUnauthenticated):
		return unauthenticated(v, err)
	}
	return api.Errorf(api.Timeout, "vm %q did not become ready within %s: the guest agent never answered", v.Name, timeout).
		WithHint(fmt.Sprintf("the guest may still be booting, or its agent (or sshd) may not start; see banger vm logs %s. "+
			"The VM is still running for inspection; remove it with banger vm delete %s", v.Name, v.Name))
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// liveAgent is the VM's agent client, when it has one that works.
func (m *vmManager) liveAgent(id string) *guest.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	// An abandoned client is done, though its session may take a moment
	// to say so.
	if a := m.agents[id]; a != nil && !isDone(a.Done()) && a.Abandoned() == nil {
		return a
	}
	return nil
}

// agentByID is agent for the VM with id.
func (m *vmManager) agentByID(ctx context.Context, id string) (*guest.Client, error) {
	v, err := m.store.VMByName(ctx, id)
	if err != nil {
		return nil, err
	}
	return m.agent(ctx, v)
}

// agent returns the agent client of v, dialing (and retrying until ctx
// is done) when there is none or the last one broke.
func (m *vmManager) agent(ctx context.Context, v store.VM) (*guest.Client, error) {
	if v.State == api.StatePaused {
		return nil, api.Errorf(api.Conflict, "vm %q is paused: its guest cannot answer", v.Name).
			WithHint("resume it first: banger vm resume " + v.Name)
	}
	if a := m.liveAgent(v.ID); a != nil {
		return a, nil
	}
	// A running VM's agent answered before: give a new connection
	// agentDialTimeout, not all the caller's time (a boot's wait is the
	// start's own ready timeout).
	if v.State == api.StateRunning {
		start := time.Now()
		dctx, cancel := context.WithTimeout(ctx, agentDialTimeout)
		defer cancel()
		a, err := m.dialOnce(dctx, v)
		if err != nil && errors.Is(dctx.Err(), context.DeadlineExceeded) {
			return nil, api.Errorf(api.Timeout, "vm %q: its guest agent did not answer within %s: the guest is frozen or overloaded",
				v.Name, time.Since(start).Round(time.Second)).
				WithHint(fmt.Sprintf("see banger vm logs %s; banger vm stop --force %s ends it", v.Name, v.Name))
		}
		return a, err
	}
	return m.dialOnce(ctx, v)
}

// dialOnce is agent's dial: one at a time per VM, as the serial transport
// takes one connection, and a second dial would replace the first one's
// client under its users.
func (m *vmManager) dialOnce(ctx context.Context, v store.VM) (*guest.Client, error) {
	unlock, err := m.dials.lockFor(ctx, v.ID, "a dial of the guest agent")
	if err != nil {
		return nil, err
	}
	defer unlock()
	return m.agentLocked(ctx, v)
}

// agentLocked is agent for a caller that holds m.dials' lock of v.
func (m *vmManager) agentLocked(ctx context.Context, v store.VM) (*guest.Client, error) {
	if a := m.liveAgent(v.ID); a != nil {
		return a, nil
	}
	mc := m.machine(v.ID)
	if mc == nil {
		return nil, api.Errorf(api.Conflict, "vm is not running").WithHint("start it with banger vm start")
	}
	key, err := loadAgentKey(v)
	if err != nil {
		return nil, err
	}
	var last error
	for {
		a, info, err := m.dialAgent(ctx, mc, key)
		if err == nil {
			m.keepAgent(ctx, v.ID, a, info)
			return a, nil
		}
		if errors.Is(err, guest.ErrVersionMismatch) || errors.Is(err, guest.ErrUnauthenticated) || errors.Is(err, vmm.ErrNotRunning) {
			return nil, err
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last error: %w)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// connectAgent connects to mc's agent and authenticates with key.
func (m *vmManager) connectAgent(ctx context.Context, mc vmm.Machine, key []byte) (*guest.Client, error) {
	conn, err := mc.DialAgent(ctx)
	if err != nil {
		return nil, err
	}
	a, err := guest.NewClient(conn, key, m.log)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return a, nil
}

// keepAgent makes a the agent client of the VM with id (closing the one
// it replaces), the caller holding m.dials' lock of it.
func (m *vmManager) keepAgent(ctx context.Context, id string, a *guest.Client, info guest.Info) {
	m.mu.Lock()
	if old := m.agents[id]; old != nil {
		old.Close()
	}
	m.agents[id], m.infos[id] = a, info
	m.mu.Unlock()
	go m.watchAgent(id, a)
	m.markAnswered(ctx, id)
}

func (m *vmManager) dialAgent(ctx context.Context, mc vmm.Machine, key []byte) (*guest.Client, guest.Info, error) {
	a, err := m.connectAgent(ctx, mc, key)
	if err != nil {
		return nil, guest.Info{}, err
	}
	info, err := a.Hello(ctx)
	if err != nil {
		a.Close()
		return nil, guest.Info{}, err
	}
	return a, info, nil
}

// stop powers a VM off: the agent first, then the VMM's power button, then
// a kill once timeout has passed. force skips straight to the kill.
func (m *vmManager) stop(ctx context.Context, name string, force bool, timeout time.Duration) (api.VM, error) {
	unlock, err := m.lock(ctx, name, "vm stop")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	v, err := m.get(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	if err := m.stopLocked(ctx, &v, force, timeout); err != nil {
		return api.VM{}, err
	}
	return m.view(ctx, v), nil
}

// stopLocked stops v, whose lock the caller holds, and records it
// stopped in v and the state.
func (m *vmManager) stopLocked(ctx context.Context, v *store.VM, force bool, timeout time.Duration) error {
	if mc := m.machine(v.ID); mc != nil {
		if timeout <= 0 {
			timeout = 20 * time.Second
		}
		if p, ok := mc.(vmm.Pauser); ok && v.State == api.StatePaused && !force {
			p.Resume(ctx) // a paused guest cannot hear the power button
		}
		if force {
			mc.Kill()
		} else {
			sctx, cancel := context.WithTimeout(ctx, timeout)
			m.mu.Lock()
			a := m.agents[v.ID]
			m.mu.Unlock()
			if a != nil {
				actx, c := context.WithTimeout(sctx, 5*time.Second)
				a.Shutdown(actx)
				c()
			}
			err := mc.Shutdown(sctx)
			cancel()
			if err != nil {
				mc.Kill()
			}
		}
		select {
		case <-mc.Done():
		case <-time.After(10 * time.Second):
			return fmt.Errorf("vmm of %q did not exit after kill", v.Name)
		}
		crashpoint.Hit(crashpoint.VMStopAfterVMM)
	}
	m.forget(v.ID, nil)
	m.sessions.VMGone(v.ID, "the vm was stopped")
	m.net.detach(context.WithoutCancel(ctx), v.ID)
	crashpoint.Hit(crashpoint.VMStopAfterDetach)
	if v.State != api.StateCreated {
		v.State = api.StateStopped
	}
	v.Handle = "{}"
	return m.store.UpdateVM(context.WithoutCancel(ctx), *v)
}

// delete stops the VM if needed and removes its record and files.
func (m *vmManager) delete(ctx context.Context, name string, force bool) error {
	unlock, err := m.lock(ctx, name, "vm delete")
	if err != nil {
		return err
	}
	defer unlock()
	v, err := m.get(ctx, name)
	if err != nil {
		return err
	}
	if err := m.stopLocked(ctx, &v, force, 10*time.Second); err != nil {
		return err
	}
	crashpoint.Hit(crashpoint.VMDeleteAfterStop)
	// Crash-safe order: mark the row, remove the files, then the row. A
	// daemon killed in between finishes the job at its next start
	// (adoptAll), so no row ever points at half-removed files.
	v.State = api.StateDeleting
	if err := m.store.UpdateVM(context.WithoutCancel(ctx), v); err != nil {
		return err
	}
	crashpoint.Hit(crashpoint.VMDeleteAfterMark)
	return m.removeVM(context.WithoutCancel(ctx), v)
}

// adoptAll re-attaches to the VMMs an earlier daemon started. VMs whose
// VMM is gone are marked stopped.
func (m *vmManager) adoptAll(ctx context.Context) error {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	for _, v := range vms {
		if v.State == api.StateDeleting {
			// An earlier daemon died while deleting this VM: finish.
			m.log.Info("finishing an interrupted delete", "vm", v.Name)
			reapOrphans(v.Dir)
			if err := m.removeVM(ctx, v); err != nil {
				m.log.Error("finishing delete", "vm", v.Name, "err", err)
			}
			continue
		}
		if v.State == api.StateCreating {
			// An earlier daemon died while making this VM, before its
			// first boot was recorded: nobody has it yet, so it goes, its
			// VMM (if it got that far) and lease included.
			m.log.Info("removing half-created vm", "vm", v.Name)
			if pids := reapOrphans(v.Dir); len(pids) > 0 {
				m.log.Warn("killed unrecorded vmm of a half-created vm", "vm", v.Name, "pids", pids)
			}
			os.RemoveAll(v.Dir)
			m.store.DeleteVM(ctx, v.ID)
			continue
		}
		if v.State != api.StateRunning && v.State != api.StateStarting && v.State != api.StateFailed && v.State != api.StatePaused {
			if pids := reapOrphans(v.Dir); len(pids) > 0 {
				m.log.Warn("killed unrecorded vmm of a vm that was starting when the daemon died", "vm", v.Name, "pids", pids)
			}
			continue
		}
		var spec vmm.Spec
		var h vmm.Handle
		json.Unmarshal([]byte(v.Spec), &spec)
		json.Unmarshal([]byte(v.Handle), &h)
		d, ok := m.drivers[v.VMM]
		var mc vmm.Machine
		if ok && h.PID != 0 {
			mc, err = d.Adopt(ctx, spec, h)
		}
		if mc == nil {
			reapOrphans(v.Dir)
			m.log.Info("vm's vmm is gone; marking it stopped", "vm", v.Name, "err", err)
			if v.State != api.StateFailed {
				v.State = api.StateStopped
			}
			v.Handle = "{}"
			m.store.UpdateVM(ctx, v)
			continue
		}
		m.log.Info("re-adopted vm", "vm", v.Name, "pid", h.PID)
		m.track(ctx, v, mc)
		m.reopenPorts(ctx, v)
		if p, ok := mc.(vmm.Pauser); ok && v.State != api.StatePaused {
			// A daemon killed while a snapshot (or a pause) had the VM
			// paused left it so; the record says it runs, so it runs.
			if err := p.Resume(ctx); err != nil {
				m.log.Warn("resuming an adopted vm", "vm", v.Name, "err", err)
			}
		}
		if v.State == api.StateStarting {
			// The old daemon died mid-boot: finish the wait in the background.
			go func(v store.VM) {
				if err := m.waitReady(ctx, v, mc, defaultReadyTimeout); err != nil {
					v.State, v.LastError = api.StateFailed, err.Error()
				} else {
					m.afterBoot(ctx, &v)
					v.State = api.StateRunning
				}
				m.store.UpdateVM(context.WithoutCancel(ctx), v)
			}(v)
		}
	}
	m.cleanVMDirs(vms)
	// What a daemon killed mid-snapshot, mid-create or mid-delete left:
	// half-made snapshots, then layers no row names and bases nothing
	// builds on.
	m.cleanSnapshots(ctx)
	m.gcLayers(ctx, true)
	return nil
}

// vmDirRE is the name of a VM's directory: its id.
var vmDirRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// cleanVMDirs removes the VM directories no row names (vms: every row).
// A row is written before its directory, so only a lost commit (a power
// loss under a database that had not synced) leaves one; whatever runs
// from it goes first.
func (m *vmManager) cleanVMDirs(vms []store.VM) {
	named := map[string]bool{}
	for _, v := range vms {
		named[filepath.Clean(v.Dir)] = true
	}
	ents, _ := os.ReadDir(m.cfg.VMsDir)
	for _, ent := range ents {
		dir := filepath.Join(m.cfg.VMsDir, ent.Name())
		if !ent.IsDir() || !vmDirRE.MatchString(ent.Name()) || named[dir] {
			continue
		}
		m.log.Warn("removing a vm directory no vm names", "dir", dir, "pids", reapOrphans(dir))
		os.RemoveAll(dir)
	}
}

// close drops agent connections. VMMs keep running for the next daemon.
func (m *vmManager) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, a := range m.agents {
		a.Close()
		delete(m.agents, id)
	}
}

// markAnswered records that a VM whose start timed out (failed) has an
// agent that answers after all: it is running.
func (m *vmManager) markAnswered(ctx context.Context, id string) {
	v, err := m.store.VMByName(ctx, id)
	if err == nil && v.State == api.StateFailed && m.machine(id) != nil {
		v.State, v.LastError = api.StateRunning, ""
		m.store.UpdateVM(context.WithoutCancel(ctx), v)
	}
}

// removeVM removes a VM's files, then its record (and lease).
func (m *vmManager) removeVM(ctx context.Context, v store.VM) error {
	m.sessions.Forget(v)
	if err := os.RemoveAll(v.Dir); err != nil {
		return fmt.Errorf("removing %s: %w", v.Dir, err)
	}
	crashpoint.Hit(crashpoint.VMDeleteAfterFiles)
	m.mu.Lock()
	delete(m.warnings, v.ID)
	m.mu.Unlock()
	if err := m.store.DeleteVM(ctx, v.ID); err != nil {
		return err
	}
	// Its layer goes once no row names it (a crash before this: the next
	// start's gc).
	m.gcLayers(ctx, false)
	return nil
}
