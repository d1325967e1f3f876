package session

import (
	"context"
	"errors"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/guest"
	"banger/internal/store"
)

// adoptTimeout bounds how long a daemon's start-up spends asking one
// running guest for the sessions it has no record of.
const adoptTimeout = 30 * time.Second

// vmLock serializes the session starts and adoptions of the VM with id,
// so an adoption never takes in a session a start is about to record.
func (m *Manager) vmLock(vmID string) func() {
	m.mu.Lock()
	l := m.vmLocks[vmID]
	if l == nil {
		l = &sync.Mutex{}
		m.vmLocks[vmID] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// adoptRunning adopts the unrecorded sessions of every running VM, each
// within adoptTimeout (a guest that does not answer is left for later: a
// start of a name it holds adopts then).
func (m *Manager) adoptRunning(running func(vmID string) bool) {
	vms, err := m.opts.Store.ListVMs(m.ctx)
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, vm := range vms {
		if !running(vm.ID) {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(m.ctx, adoptTimeout)
			defer cancel()
			cl, err := m.opts.Agent(ctx, vm.ID)
			if err != nil {
				m.opts.Logger.Info("not adopting sessions: no agent", "vm", vm.Name, "err", err)
				return
			}
			defer m.vmLock(vm.ID)()
			m.adoptLocked(ctx, vm, cl)
		})
	}
	wg.Wait()
}

// adoptLocked records and serves the sessions vm's guest runs that the
// host has no running record of: a daemon killed between the guest's
// start of a session and its record of it leaves one. The caller holds
// vm's lock.
func (m *Manager) adoptLocked(ctx context.Context, vm store.VM, cl *guest.Client) {
	infos, err := cl.SessionList(ctx)
	if err != nil {
		m.opts.Logger.Warn("listing the guest's sessions", "vm", vm.Name, "err", err)
		return
	}
	for _, info := range infos {
		if info.State != guest.SessionRunning || m.running(vm.ID, info.Name) != nil {
			continue
		}
		rec, err := m.opts.Store.SessionByName(ctx, vm.ID, info.Name)
		if err == nil && rec.State == api.SessionRunning {
			continue // recorded: Restore serves it
		}
		if err != nil && !errors.Is(err, store.ErrNotExist) {
			continue
		}
		if err := m.begin(ctx, vm, info); err == nil {
			m.opts.Logger.Warn("adopted a session the guest ran with no record (bangerd was killed starting it)",
				"vm", vm.Name, "session", info.Name, "pid", info.PID)
		}
	}
}
