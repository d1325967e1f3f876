package daemon

import (
	"context"
	"fmt"
	"time"

	"banger/internal/api"
	"banger/internal/guest"
)

// A running VM's agent connection is pinged every agentPingEvery; when a
// ping goes unanswered for agentPingTimeout the connection is dropped,
// so every call on it (an exec, a copy, an attached session) ends with
// an error that says the guest stopped answering, instead of waiting for
// ever on a guest that is frozen or wedged. The next call dials again,
// within agentDialTimeout. The agent answers pings from its session's
// reader, so a busy guest still answers; one that is paused on purpose
// (vm pause, a snapshot) is not pinged, and a ping that spanned a pause
// does not count.
var (
	agentPingEvery   = 5 * time.Second
	agentPingTimeout = 30 * time.Second
	agentDialTimeout = 30 * time.Second
)

// quiet is what the watcher knows of a VM whose guest the daemon stops
// on purpose: how many such stops are under way, and a count of every
// start and end of one.
type quiet struct {
	n     int
	epoch uint64
}

// hush marks the guest of the VM with id as stopped on purpose until
// the returned func is called: pings that go unanswered meanwhile do not
// drop its agent connection.
func (m *vmManager) hush(id string) func() {
	m.mu.Lock()
	q := m.quiets[id]
	if q == nil {
		q = &quiet{}
		m.quiets[id] = q
	}
	q.n++
	q.epoch++
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		q.n--
		q.epoch++
		m.mu.Unlock()
	}
}

// quietEpoch is the VM's hush count and epoch: both 0 when the daemon
// has not stopped it on purpose since its VMM started (forget drops
// them).
func (m *vmManager) quietEpoch(id string) (int, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.quiets[id]; q != nil {
		return q.n, q.epoch
	}
	return 0, 0
}

// watchAgent pings a, the agent client of the VM with id, until a is
// done, and abandons it when the guest stops answering.
func (m *vmManager) watchAgent(id string, a *guest.Client) {
	tick := time.NewTicker(agentPingEvery)
	defer tick.Stop()
	for {
		select {
		case <-a.Done():
			return
		case <-tick.C:
		}
		if m.pausedOnPurpose(id) {
			continue
		}
		n0, e0 := m.quietEpoch(id)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), agentPingTimeout)
		_, err := a.Ping(ctx)
		cancel()
		if err == nil || isDone(a.Done()) {
			continue
		}
		if n1, e1 := m.quietEpoch(id); n0 > 0 || n1 > 0 || e1 != e0 || m.pausedOnPurpose(id) {
			continue // paused on purpose during the ping
		}
		name := id
		if v, err := m.store.VMByName(context.Background(), id); err == nil {
			name = v.Name
		}
		m.log.Warn("guest agent stopped answering; dropping its connection", "vm", name,
			"waited", time.Since(start).Round(time.Millisecond).String(), "err", err)
		a.Abandon(fmt.Errorf("the guest agent of vm %q did not answer for %s: the guest is frozen or overloaded "+
			"(see banger vm logs %s; banger vm stop --force %s ends it)", name, agentPingTimeout, name, name))
		return
	}
}

// pausedOnPurpose reports whether the VM with id is hushed or recorded
// paused.
func (m *vmManager) pausedOnPurpose(id string) bool {
	if n, _ := m.quietEpoch(id); n > 0 {
		return true
	}
	v, err := m.store.VMByName(context.Background(), id)
	return err == nil && v.State == api.StatePaused
}
