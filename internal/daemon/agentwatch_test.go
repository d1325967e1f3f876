package daemon

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/guest"
	"banger/internal/vmm/vmmtest"
)

// freezable is an agent connection that stops reading and writing, as a
// guest whose VMM got SIGSTOP does, once *frozen is true.
type freezable struct {
	net.Conn
	frozen *atomic.Bool
	closed chan struct{}
}

func (c *freezable) wait() {
	for c.frozen.Load() {
		select {
		case <-c.closed:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (c *freezable) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.wait()
	return n, err
}

func (c *freezable) Write(p []byte) (int, error) {
	c.wait()
	return c.Conn.Write(p)
}

func (c *freezable) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return c.Conn.Close()
}

func fastAgentWatch(t *testing.T) {
	every, timeout, dial := agentPingEvery, agentPingTimeout, agentDialTimeout
	agentPingEvery, agentPingTimeout, agentDialTimeout = 50*time.Millisecond, 300*time.Millisecond, 500*time.Millisecond
	t.Cleanup(func() { agentPingEvery, agentPingTimeout, agentDialTimeout = every, timeout, dial })
}

// A guest that stops answering (its VMM frozen) has its agent connection
// dropped: a call waiting on it ends with an error naming the VM, a new
// call's dial gives up within agentDialTimeout, and a VM paused on
// purpose keeps its connection.
func TestFrozenAgentIsDropped(t *testing.T) {
	fastAgentWatch(t)
	frozen := map[string]*atomic.Bool{"fz": {}, "pz": {}}
	rig := newLifeRig(t, vmmtest.MemOptions{Agent: func(ctx context.Context, mc *vmmtest.MemMachine, conn net.Conn) {
		fc := &freezable{Conn: conn, frozen: frozen[mc.Spec().Name], closed: make(chan struct{})}
		memAgent(false)(ctx, mc, fc)
	}})
	ctx := t.Context()
	vms := map[string]store0{}
	for _, name := range []string{"fz", "pz"} {
		if _, err := rig.start(ctx, t, rig.vm(t, name), 10*time.Second); err != nil {
			t.Fatalf("starting %s: %v", name, err)
		}
		v := rig.state(t, name)
		vms[name] = store0{id: v.ID, client: rig.m.liveAgent(v.ID)}
		if vms[name].client == nil {
			t.Fatalf("%s has no agent client after its start", name)
		}
	}
	// pz is paused on purpose: recorded paused, as vm pause leaves it.
	pz := rig.state(t, "pz")
	pz.State = api.StatePaused
	rig.st.UpdateVM(ctx, pz)
	frozen["pz"].Store(true)
	frozen["fz"].Store(true)

	start := time.Now()
	_, err := vms["fz"].client.Hello(context.Background())
	if !errors.Is(err, guest.ErrConnectionLost) || !strings.Contains(err.Error(), `vm "fz"`) || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("a call on the frozen guest: %v, want a lost connection naming the vm", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the call on the frozen guest ended after %s", d)
	}

	start = time.Now()
	_, err = rig.m.agent(context.Background(), rig.state(t, "fz"))
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.Timeout || !strings.Contains(ae.Message, `vm "fz"`) {
		t.Errorf("a new dial of the frozen guest: %v, want a timeout naming the vm", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the dial of the frozen guest ended after %s", d)
	}

	if _, err := rig.m.agent(ctx, rig.state(t, "pz")); err == nil || !strings.Contains(err.Error(), "paused") {
		t.Errorf("an agent call on a paused vm: %v, want a refusal saying it is paused", err)
	}
	time.Sleep(5 * agentPingTimeout)
	if isDone(vms["pz"].client.Done()) {
		t.Error("the paused vm's agent connection was dropped")
	}
	frozen["pz"].Store(false)
}

type store0 struct {
	id     string
	client *guest.Client
}
